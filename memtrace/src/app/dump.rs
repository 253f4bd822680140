//! `memtrace dump PATH --format json|openmetrics [--from] [--to]`: a recording as data.
//! `json`: every header and record as JSON lines. `openmetrics`: the metrics the live
//! endpoint would have served, one sample per series every --step of record time, with
//! timestamps, each metric's points together (what `promtool tsdb create-blocks-from
//! openmetrics` backfills).

use std::{
    collections::HashMap,
    io::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{
    metrics::{
        encode::{self, Encoder},
        model::Model,
    },
    replay::{self, Event, Selection},
    units::parse_span,
};
use crate::{
    engine::{
        args::parse_top,
        sink::{JsonSink, Sink},
    },
    error::Error,
};

/// Values a dump holds in memory at most (8 bytes each, plus a timestamp per point).
const MAX_VALUES: usize = 32 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Every header and record, one JSON object per line.
    Json,
    /// The metrics over time, OpenMetrics text with timestamps.
    Openmetrics,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub sel: Selection,

    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Format,

    /// openmetrics: one sample per series every SPAN of record time (s, m, h).
    #[arg(long, value_name = "SPAN", default_value = "15s", value_parser = parse_span)]
    pub step: Duration,

    /// openmetrics: label values kept per metric (the rest fold into "other").
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = parse_top)]
    pub metrics_top: usize,
}

pub fn run(args: &DumpArgs) -> Result<(), Error> {
    match args.format {
        Format::Json => {
            let mut out = JsonSink::stdout();
            let mut broken = false;
            replay::stream(&args.sel, &[], &mut |e| {
                let v = match e {
                    Event::Header(h) => h,
                    Event::Record(_, v, _) => v,
                };
                broken = out.record(None, v).is_err();
                !broken
            })
        }
        Format::Openmetrics => openmetrics(args),
    }
}

/// One metric (a label set) of a family: its sample lines and their values at each point.
#[derive(Default)]
struct Metric {
    /// Sample lines without the value ("name{labels}").
    lines: Vec<String>,
    times_ms: Vec<i64>,
    /// `lines.len()` values per point; NaN where a line was missing.
    values: Vec<f64>,
}

/// Families in order, each with its HELP and TYPE lines and its metrics in order.
#[derive(Default)]
struct Spool {
    families: Vec<(String, Vec<String>)>,
    metrics: HashMap<String, Metric>,
    values: usize,
}

impl Spool {
    /// One exposition (OpenMetrics text without timestamps) at `t_ms`.
    fn add(&mut self, om: &str, t_ms: i64) -> Result<(), Error> {
        let mut family: Option<usize> = None;
        let mut points: HashMap<String, Vec<(String, f64)>> = HashMap::new();
        for line in om.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                let name = line[7..].split(' ').next().unwrap_or_default().to_string();
                let i = match self.families.iter().position(|(n, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        self.families.push((name, Vec::new()));
                        self.families.len() - 1
                    }
                };
                family = Some(i);
                if self.families[i].1.len() < 2 && !self.families[i].1.iter().any(|l| l == line) {
                    self.families[i].1.push(line.to_string());
                }
                continue;
            }
            let (Some(f), Some((prefix, value))) = (family, line.rsplit_once(' ')) else { continue };
            if line.starts_with('#') {
                continue;
            }
            // A metric is its family and labels, `le` aside (prometheus-client writes it first).
            let labels = prefix.split_once('{').map_or("", |(_, l)| l);
            let labels = match labels.strip_prefix("le=\"") {
                Some(rest) => rest.split_once('"').map_or("", |(_, r)| r.trim_start_matches(',')),
                None => labels,
            };
            let key = format!("{}\u{0}{labels}", self.families[f].0);
            points.entry(key).or_default().push((prefix.to_string(), value.parse().unwrap_or(f64::NAN)));
        }
        for (key, samples) in points {
            let m = self.metrics.entry(key).or_default();
            for (line, _) in &samples {
                if !m.lines.contains(line) {
                    // A line first seen now: earlier points had none.
                    m.lines.push(line.clone());
                    let (n, w) = (m.times_ms.len(), m.lines.len());
                    let mut values = Vec::with_capacity(n * w);
                    for p in 0..n {
                        values.extend_from_slice(&m.values[p * (w - 1)..(p + 1) * (w - 1)]);
                        values.push(f64::NAN);
                    }
                    m.values = values;
                }
            }
            let mut row = vec![f64::NAN; m.lines.len()];
            for (line, v) in samples {
                let i = m.lines.iter().position(|l| *l == line).unwrap_or_default();
                row[i] = v;
            }
            self.values += row.len() + 1;
            m.values.extend(row);
            m.times_ms.push(t_ms);
        }
        if self.values > MAX_VALUES {
            return Err(Error::Usage(format!(
                "dump: more than {MAX_VALUES} samples; narrow --from/--to or raise --step"
            )));
        }
        Ok(())
    }

    /// The exposition: each family's metrics, each metric's points in time order.
    fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut keys: Vec<&String> = self.metrics.keys().collect();
        keys.sort();
        for (name, head) in &self.families {
            for l in head {
                writeln!(out, "{l}")?;
            }
            let prefix = format!("{name}\u{0}");
            for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
                let m = &self.metrics[*key];
                for (p, t) in m.times_ms.iter().enumerate() {
                    for (i, line) in m.lines.iter().enumerate() {
                        let v = m.values[p * m.lines.len() + i];
                        if !v.is_nan() {
                            writeln!(out, "{line} {v} {}.{:03}", t.div_euclid(1000), t.rem_euclid(1000))?;
                        }
                    }
                }
            }
        }
        writeln!(out, "# EOF")
    }
}

fn openmetrics(args: &DumpArgs) -> Result<(), Error> {
    let model = Arc::new(Mutex::new(Model::new(args.metrics_top, "unknown", "unknown")));
    let encoder = Encoder::new(model.clone());
    let step = args.step.as_nanos().max(1) as i128;
    let mut spool = Spool::default();
    let (mut last, mut failed) = (None::<i128>, None);
    let snapshot = |spool: &mut Spool, at: i128| {
        let r = spool.add(&encoder.openmetrics(), (at / 1_000_000) as i64);
        r.err()
    };
    replay::stream(&args.sel, &[], &mut |e| {
        match e {
            Event::Header(h) => {
                let mut m = encode::lock(&model);
                let s = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("unknown").to_string();
                (m.version, m.kernel) = (s("memtrace"), s("kernel"));
            }
            Event::Record(family, v, time) => {
                if let (Some(t), Some(l)) = (time, last) {
                    if t.max(l) / step > l / step {
                        failed = snapshot(&mut spool, l);
                    }
                }
                last = time.max(last);
                encode::lock(&model).record(family, v);
            }
        }
        failed.is_none()
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(l) = last {
        if let Some(e) = snapshot(&mut spool, l) {
            return Err(e);
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match spool.write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Other(e.into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_of_a_metric_stay_together_in_time_order() {
        let mut s = Spool::default();
        let om = |n: u64| {
            format!(
                "# HELP m_total x.\n# TYPE m_total counter\nm_total{{a=\"1\"}} {n}\nm_total{{a=\"2\"}} 7\n\
                 # HELP h y.\n# TYPE h histogram\nh_sum{{k=\"x\"}} 0.5\nh_count{{k=\"x\"}} {n}\n\
                 h_bucket{{le=\"1.0\",k=\"x\"}} 1\nh_bucket{{le=\"+Inf\",k=\"x\"}} {n}\n# EOF\n"
            )
        };
        s.add(&om(2), 1_000).unwrap();
        s.add(&om(3), 16_500).unwrap();
        let mut out = Vec::new();
        s.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "# HELP m_total x.\n# TYPE m_total counter\n\
             m_total{a=\"1\"} 2 1.000\nm_total{a=\"1\"} 3 16.500\nm_total{a=\"2\"} 7 1.000\nm_total{a=\"2\"} 7 16.500\n\
             # HELP h y.\n# TYPE h histogram\n\
             h_sum{k=\"x\"} 0.5 1.000\nh_count{k=\"x\"} 2 1.000\nh_bucket{le=\"1.0\",k=\"x\"} 1 1.000\nh_bucket{le=\"+Inf\",k=\"x\"} 2 1.000\n\
             h_sum{k=\"x\"} 0.5 16.500\nh_count{k=\"x\"} 3 16.500\nh_bucket{le=\"1.0\",k=\"x\"} 1 16.500\nh_bucket{le=\"+Inf\",k=\"x\"} 3 16.500\n\
             # EOF\n"
        );
    }
}
