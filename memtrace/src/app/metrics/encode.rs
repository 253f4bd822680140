//! The model as an exposition: OpenMetrics text through prometheus-client (a collector
//! that reads the model on every scrape), and the Prometheus text format 0.0.4 derived
//! from it line by line; which one a scraper gets follows its `Accept` header.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use super::{model::Model, series::Hist};

/// The model, shared by the sink that feeds it and the server that encodes it.
pub type Shared = Arc<Mutex<Model>>;

pub fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Exporter(Shared);

/// Encodes the model (a registry holding one collector).
pub struct Encoder {
    registry: Registry,
}

impl Encoder {
    pub fn new(model: Shared) -> Encoder {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exporter(model)));
        Encoder { registry }
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn openmetrics(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

enum Val<'a> {
    Info,
    Counter(u64),
    Gauge(f64),
    Int(i64),
    Hist(&'a Hist),
}

type Row<'a> = (Vec<(&'static str, &'a str)>, Val<'a>);

/// One metric family; nothing when it has no series.
fn family(e: &mut DescriptorEncoder, name: &str, help: &str, ty: MetricType, rows: Vec<Row>) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut me = e.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in &rows {
        match v {
            Val::Info => me.encode_info(labels)?,
            _ if labels.is_empty() => value(&mut me, v)?,
            _ => value(&mut me.encode_family(labels)?, v)?,
        }
    }
    Ok(())
}

fn value(m: &mut MetricEncoder, v: &Val) -> fmt::Result {
    match v {
        Val::Counter(n) => m.encode_counter::<NoLabelSet, _, u64>(n, None),
        Val::Gauge(x) => m.encode_gauge(x),
        Val::Int(x) => m.encode_gauge(x),
        Val::Hist(h) => {
            let buckets: Vec<(f64, u64)> = h.buckets.iter().enumerate().map(|(i, n)| (Hist::bound(i), *n)).collect();
            m.encode_histogram::<NoLabelSet>(h.sum_s, h.count, &buckets, None)
        }
        Val::Info => Ok(()),
    }
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let m = lock(&self.0);
        let e = &mut e;
        family(e, "memtrace_build", "memtrace's version and the kernel it traces.", MetricType::Info,
            vec![(vec![("version", m.version.as_str()), ("kernel", m.kernel.as_str())], Val::Info)])?;
        let probes = m.probes.iter().map(|(f, h, s)| (vec![("family", f.as_str()), ("hook", h.as_str()), ("strategy", s.as_str())], Val::Info));
        family(e, "memtrace_probe", "The strategy serving each hook (doctor's choice), \"gap\" where none can.", MetricType::Info, probes.collect())?;
        let (events, dropped) = m.events();
        let rows = events.iter().map(|(f, n)| (vec![("family", f.as_str())], Val::Counter(*n))).collect();
        family(e, "memtrace_events", "Events the kernel side saw, per family.", MetricType::Counter, rows)?;
        let rows = dropped.iter().map(|(f, r, n)| (vec![("family", f.as_str()), ("reason", *r)], Val::Counter(*n))).collect();
        family(e, "memtrace_events_dropped", "Events lost, per family and reason (ring buffer full, map full, undecodable).", MetricType::Counter, rows)?;
        let rows = m.bpf_map_bytes.iter().map(|b| (vec![], Val::Int(*b as i64))).collect();
        family(e, "memtrace_bpf_map_bytes", "Kernel memory of memtrace's BPF maps (memlock).", MetricType::Gauge, rows)?;
        let dropped = m.series_dropped();
        let rows = dropped.iter().map(|(name, n)| (vec![("metric", *name)], Val::Counter(*n))).collect();
        family(e, "memtrace_series_dropped", "Label values folded into \"other\" (beyond the top N, or dead cgroups).", MetricType::Counter, rows)?;

        let rows = m.oom_kills.series().map(|(cg, r, n)| (vec![("constraint", r[0].as_str()), ("memcg", cg)], Val::Counter(*n))).collect();
        family(e, "memtrace_oom_kills", "Processes the OOM killer killed, by constraint and the victim's memory cgroup.", MetricType::Counter, rows)?;
        let rows = m.oom_last_kill_s.iter().map(|t| (vec![], Val::Gauge(*t))).collect();
        family(e, "memtrace_oom_last_kill_timestamp_seconds", "When the last OOM kill happened (Unix time).", MetricType::Gauge, rows)?;
        let rows = m.stall_seconds.series().map(|(cg, r, h)| (vec![("kind", r[0].as_str()), ("cgroup", cg)], Val::Hist(h))).collect();
        family(e, "memtrace_reclaim_stall_seconds", "How long tasks stalled in reclaim, by kind and memory cgroup.", MetricType::Histogram, rows)?;
        let rows = m.stalls.series().map(|(c, r, n)| (vec![("kind", r[0].as_str()), ("comm", c)], Val::Counter(*n))).collect();
        family(e, "memtrace_reclaim_stalls", "Reclaim stalls, by kind and process name.", MetricType::Counter, rows)?;
        let slab: Vec<_> = m.slab.series().collect();
        let rows = slab.iter().map(|(c, _, v)| (vec![("cache", *c)], Val::Counter(v.allocs))).collect();
        family(e, "memtrace_slab_allocs", "Slab allocations, by cache.", MetricType::Counter, rows)?;
        let rows = slab.iter().map(|(c, _, v)| (vec![("cache", *c)], Val::Counter(v.frees))).collect();
        family(e, "memtrace_slab_frees", "Slab frees, by cache.", MetricType::Counter, rows)?;
        let rows = slab.iter().map(|(c, _, v)| (vec![("cache", *c)], Val::Int(v.net_bytes))).collect();
        family(e, "memtrace_slab_net_bytes", "Slab growth since memtrace started (allocations - frees, in bytes), by cache.", MetricType::Gauge, rows)?;
        let rows = m.dentry_negative.iter().map(|n| (vec![], Val::Int(*n))).collect();
        family(e, "memtrace_dentry_negative", "Negative dentries (dentry-state nr_negative).", MetricType::Gauge, rows)?;
        let rows = m.shmem_live.series().map(|(mnt, r, b)| (vec![("mount", mnt), ("kind", r[0].as_str())], Val::Int(*b as i64))).collect();
        family(e, "memtrace_shmem_live_bytes", "Live shmem allocated while traced, by mount.", MetricType::Gauge, rows)?;
        let rows = m.shmem_unexplained.iter().map(|b| (vec![], Val::Int(*b))).collect();
        family(e, "memtrace_shmem_unexplained_bytes", "/proc/meminfo Shmem that memtrace cannot attribute.", MetricType::Gauge, rows)
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition: counters and info
/// metrics named by their samples (info becomes gauge), no `# UNIT`, no `# EOF`.
pub fn prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, ty) = match ty {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                t => (name.to_string(), t),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out += &format!("# HELP {name} {text}\n");
            }
            out += &format!("# TYPE {name} {ty}\n");
            continue;
        }
        if line.starts_with("# ") {
            continue; // # UNIT, # EOF
        }
        out += line;
        out.push('\n');
    }
    out
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics: it names it with a q above zero and at
/// least that of text/plain.
pub fn wants_openmetrics(accept: &str) -> bool {
    let q_of = |wanted: &str| -> f64 {
        accept
            .split(',')
            .filter_map(|entry| {
                let mut parts = entry.split(';').map(str::trim);
                if !parts.next()?.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts.find_map(|p| p.strip_prefix("q=")).map_or(Some(1.0), |q| q.parse().ok())?;
                Some(q)
            })
            .fold(0.0, f64::max)
    };
    let om = q_of("application/openmetrics-text");
    om > 0.0 && om >= q_of("text/plain")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Shared {
        let mut m = Model::new(50, "0.1.0", "6.18.44");
        m.record(None, &json!({"type": "ready", "probes": [{"family": "oom", "hook": "oom:mark_victim", "strategy": "tp_btf", "program": "p"}], "gaps": []}));
        m.record(Some("oom"), &json!({"type": "oom_kill", "time": "2026-11-22T02:19:37.449Z", "constraint": "memcg", "victim": {"cgroup": "/sh\"op"}, "group_kills": []}));
        m.record(Some("reclaim"), &json!({"type": "reclaim_summary", "final": false, "kind": "memcg", "cgroup": "/shop", "count": 2, "total_us": 3000.0, "histogram": [[960, 1024, 1], [1u64 << 36, u64::MAX, 1]]}));
        m.record(Some("slab"), &json!({"type": "slab_dentry", "nr_negative": 5}));
        Arc::new(Mutex::new(m))
    }

    #[test]
    fn openmetrics_has_real_histograms_and_no_timestamps() {
        let om = Encoder::new(sample()).openmetrics();
        assert!(om.ends_with("# EOF\n"), "{om}");
        for want in [
            "# TYPE memtrace_build info\nmemtrace_build_info{version=\"0.1.0\",kernel=\"6.18.44\"} 1\n",
            "memtrace_probe_info{family=\"oom\",hook=\"oom:mark_victim\",strategy=\"tp_btf\"} 1\n",
            "memtrace_oom_kills_total{constraint=\"memcg\",memcg=\"/sh\\\"op\"} 1\n",
            "memtrace_oom_last_kill_timestamp_seconds 1795313977.449\n",
            "memtrace_reclaim_stall_seconds_sum{kind=\"memcg\",cgroup=\"/shop\"} 0.003\n",
            "memtrace_reclaim_stall_seconds_count{kind=\"memcg\",cgroup=\"/shop\"} 2\n",
            "memtrace_reclaim_stall_seconds_bucket{le=\"0.000001024\",kind=\"memcg\",cgroup=\"/shop\"} 1\n",
            "memtrace_reclaim_stall_seconds_bucket{le=\"+Inf\",kind=\"memcg\",cgroup=\"/shop\"} 2\n",
            "memtrace_dentry_negative 5\n",
            "memtrace_series_dropped_total{metric=\"memtrace_oom_kills_total\"} 0\n",
        ] {
            assert!(om.contains(want), "no {want:?} in\n{om}");
        }
        assert_eq!(om.matches("memtrace_reclaim_stall_seconds_bucket").count(), 27, "26 log2 buckets and +Inf");
        assert!(!om.contains("# TYPE memtrace_slab_allocs"), "no family without series");
    }

    #[test]
    fn prometheus_text_names_types_by_their_samples() {
        let text = prometheus_text(&Encoder::new(sample()).openmetrics());
        assert!(text.contains("# HELP memtrace_oom_kills_total Processes"), "{text}");
        assert!(text.contains("# TYPE memtrace_oom_kills_total counter\n"), "{text}");
        assert!(text.contains("# TYPE memtrace_build_info gauge\nmemtrace_build_info{"), "{text}");
        assert!(text.contains("# TYPE memtrace_reclaim_stall_seconds histogram\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn negotiates_like_prometheus_asks() {
        // What Prometheus 2.42 sends.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0.3, text/plain"));
    }
}
