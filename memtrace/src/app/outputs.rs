//! A tracing command's outputs: text or `--json` on stdout (nothing with `--quiet`),
//! `--json-file`, the `--metrics` endpoint and the `--record` directory. Every one is a
//! sink over the same records.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{
    metrics::{self, Endpoint},
    record::writer::{Options as RecordOptions, Recorder},
    units::{parse_size, parse_span},
};
use crate::{
    engine::{
        args::{TraceArgs, parse_top},
        family::Family,
        sink::{JsonSink, Sink, TextSink},
    },
    error::Error,
};

#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// No text on stdout (status lines stay on stderr): for a service that serves
    /// --metrics and writes --record.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, e.g. 127.0.0.1:9435);
    /// summaries every 5 s unless INTERVAL says otherwise.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Label values per metric with their own series (cgroups, comms, caches, mounts); the
    /// rest fold into "other".
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = parse_top)]
    pub metrics_top: usize,

    /// Record every record (what --json prints) into DIR: zstd-compressed JSON-lines
    /// segments, rotated hourly; `memtrace replay DIR` shows them again.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// Delete recorded segments older than SPAN (s, m, h, d).
    #[arg(long, value_name = "SPAN", default_value = "7d", value_parser = parse_span)]
    pub retain: Duration,

    /// Keep the recording under SIZE (K, M, G), deleting the oldest segments.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub max_size: u64,
}

impl OutputArgs {
    /// The summary interval when the command has none: the endpoint and the recording need
    /// periodic records.
    pub fn default_interval(&self) -> Option<Duration> {
        (self.metrics.is_some() || self.record.is_some()).then_some(Duration::from_secs(5))
    }
}

/// A session's outputs.
pub struct Outputs {
    pub sinks: Vec<Box<dyn Sink>>,
    /// The metrics endpoint, bound, to serve once the runtime runs.
    pub endpoint: Option<Endpoint>,
}

pub fn outputs(trace: &TraceArgs, out: &OutputArgs, families: &[Box<dyn Family>], traced: &[&str]) -> Result<Outputs, Error> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if trace.json {
        sinks.push(Box::new(JsonSink::stdout()));
    } else {
        let views = families.iter().filter(|f| traced.contains(&f.name()));
        let mut text = TextSink::new(views.map(|f| (f.name().to_string(), f.view())));
        text.quiet = out.quiet;
        sinks.push(Box::new(text));
    }
    if let Some(path) = &trace.json_file {
        let file = JsonSink::file(path).map_err(|e| Error::Usage(format!("--json-file {}: {e}", path.display())))?;
        sinks.push(Box::new(file));
    }
    if let Some(dir) = &out.record {
        let opts = RecordOptions { dir: dir.clone(), retain: out.retain, max_size: out.max_size };
        sinks.push(Box::new(Recorder::new(opts)?));
    }
    let mut endpoint = None;
    if let Some(addr) = &out.metrics {
        let (e, sink) = metrics::bind(addr, out.metrics_top)?;
        sinks.push(Box::new(sink));
        endpoint = Some(e);
    }
    Ok(Outputs { sinks, endpoint })
}
