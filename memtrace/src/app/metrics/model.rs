//! What the metrics say, folded from the session's records (the JSON values every sink
//! gets, so a recording gives the same metrics as the live run) and the engine's counters.
//!
//! Records carry interval deltas; counters add them up, so they only grow. A family's
//! whole-run rows (`final`, scope `total`) count only when the stream had no interval rows
//! of that family (a run without an interval).

use std::collections::BTreeMap;

use serde_json::Value;

use super::series::{Bounded, Fold, Hist};
use crate::{
    app::units::rfc3339_ns,
    engine::records::{EngineRecord, Stats},
};

/// Per-cache slab counts: allocations, frees, net bytes since the start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slab {
    pub allocs: u64,
    pub frees: u64,
    pub net_bytes: i64,
}

impl Fold for Slab {
    fn add(&mut self, o: &Self) {
        self.allocs += o.allocs;
        self.frees += o.frees;
        self.net_bytes += o.net_bytes;
    }

    fn weight(&self) -> f64 {
        (self.allocs + self.frees) as f64
    }
}

/// Events lost: (family, reason, count).
pub type Dropped = (String, &'static str, u64);

/// Everything the endpoint exports.
#[derive(Debug)]
pub struct Model {
    pub top: usize,
    pub version: String,
    pub kernel: String,
    /// (family, hook, strategy or "gap").
    pub probes: Vec<(String, String, String)>,
    /// The engine's counters per family (live every second, or the final `stats`).
    pub counters: Option<Stats>,
    pub bpf_map_bytes: Option<u64>,
    /// OOM kills by memcg (the victim's), then constraint.
    pub oom_kills: Bounded<u64>,
    pub oom_last_kill_s: Option<f64>,
    /// Stall latency by cgroup, then kind.
    pub stall_seconds: Bounded<Hist>,
    /// Stalls by comm, then kind.
    pub stalls: Bounded<u64>,
    pub slab: Bounded<Slab>,
    pub dentry_negative: Option<i64>,
    /// Live shmem by mount, then kind: the last complete report.
    pub shmem_live: Bounded<u64>,
    pub shmem_unexplained: Option<i64>,
    /// The shmem report being read (closed by `shmem_reconcile`).
    shmem_pending: Vec<(String, String, u64)>,
    /// Folds of the shmem reports before the last one (each report is folded anew).
    shmem_dropped_before: u64,
    reclaim_intervals: bool,
    slab_intervals: bool,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k)?.as_str().map(str::to_string)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Adds to a cgroup's series; a cgroup without a name (gone before the agent could name
/// it) or the agent's own "(other)" folds into `other`.
fn add_cgroup<V: Fold>(b: &mut Bounded<V>, cgroup: Option<&Value>, rest: Vec<String>, delta: &V) {
    match cgroup.and_then(Value::as_str) {
        Some(cg) if cg.starts_with('/') => b.add(cg, rest, delta),
        _ => b.add_other(rest, delta),
    }
}

impl Model {
    pub fn new(top: usize, version: &str, kernel: &str) -> Model {
        Model {
            top,
            version: version.into(),
            kernel: kernel.into(),
            probes: Vec::new(),
            counters: None,
            bpf_map_bytes: None,
            oom_kills: Bounded::new(top),
            oom_last_kill_s: None,
            stall_seconds: Bounded::new(top),
            stalls: Bounded::new(top),
            slab: Bounded::new(top),
            dentry_negative: None,
            shmem_live: Bounded::new(top),
            shmem_unexplained: None,
            shmem_pending: Vec::new(),
            shmem_dropped_before: 0,
            reclaim_intervals: false,
            slab_intervals: false,
        }
    }

    /// Label values folded into `other`, per metric.
    pub fn series_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("memtrace_oom_kills_total", self.oom_kills.dropped),
            ("memtrace_reclaim_stall_seconds", self.stall_seconds.dropped),
            ("memtrace_reclaim_stalls_total", self.stalls.dropped),
            ("memtrace_slab_allocs_total", self.slab.dropped),
            ("memtrace_shmem_live_bytes", self.shmem_dropped_before + self.shmem_live.dropped),
        ]
    }

    /// One record (a family's, or the engine's with `family` None).
    pub fn record(&mut self, family: Option<&str>, v: &Value) {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        match (family, ty) {
            (None, _) => self.engine(v),
            (_, "oom_kill") => self.oom_kill(v),
            (_, "reclaim_summary") => self.reclaim_summary(v),
            (_, "slab_cache") => self.slab_cache(v),
            (_, "slab_dentry") => {
                if let Some(n) = v.get("nr_negative").and_then(Value::as_i64) {
                    self.dentry_negative = Some(n);
                }
            }
            (_, "shmem_mount") => {
                if let (Some(m), Some(k)) = (s(v, "mount"), s(v, "kind")) {
                    self.shmem_pending.push((m, k, u(v, "live_bytes")));
                }
            }
            (_, "shmem_reconcile") => self.shmem_report(v),
            _ => {}
        }
    }

    /// The engine's counters so far.
    pub fn counters(&mut self, c: &Stats) {
        self.counters = Some(c.clone());
    }

    /// Folds the series of cgroups `alive` says are gone.
    pub fn fold_dead_cgroups(&mut self, alive: impl Fn(&str) -> bool) {
        self.oom_kills.fold_dead(&alive);
        self.stall_seconds.fold_dead(&alive);
    }

    fn engine(&mut self, v: &Value) {
        match serde_json::from_value::<EngineRecord>(v.clone()) {
            Ok(EngineRecord::Ready(r)) => {
                self.probes = r
                    .probes
                    .into_iter()
                    .map(|p| (p.family, p.hook, p.strategy))
                    .chain(r.gaps.into_iter().map(|g| (g.family, g.hook, "gap".to_string())))
                    .collect();
            }
            Ok(EngineRecord::Stats(st)) => self.counters = Some(st),
            Err(_) => {}
        }
    }

    fn oom_kill(&mut self, v: &Value) {
        let constraint = s(v, "constraint").unwrap_or_else(|| "unknown".into());
        let kills = 1 + v.get("group_kills").and_then(Value::as_array).map_or(0, Vec::len) as u64;
        add_cgroup(&mut self.oom_kills, v["victim"].get("cgroup"), vec![constraint], &kills);
        if let Some(ns) = v.get("time").and_then(Value::as_str).and_then(rfc3339_ns) {
            let t = ns as f64 / 1e9;
            self.oom_last_kill_s = Some(self.oom_last_kill_s.map_or(t, |l| l.max(t)));
        }
    }

    fn reclaim_summary(&mut self, v: &Value) {
        let is_final = v.get("final").and_then(Value::as_bool).unwrap_or(false);
        if !is_final {
            self.reclaim_intervals = true;
        } else if self.reclaim_intervals {
            return;
        }
        let Some(kind) = s(v, "kind") else { return };
        let count = u(v, "count");
        if let Some(comm) = s(v, "comm") {
            self.stalls.add(&comm, vec![kind], &count);
        } else if v.get("pid").is_none() {
            let mut h = Hist {
                count,
                sum_s: v.get("total_us").and_then(Value::as_f64).unwrap_or(0.0) / 1e6,
                ..Hist::default()
            };
            for b in v.get("histogram").and_then(Value::as_array).into_iter().flatten() {
                let n = |i: usize| b.get(i).and_then(Value::as_u64).unwrap_or(0);
                h.add_kernel_bucket(n(0), n(1), n(2));
            }
            add_cgroup(&mut self.stall_seconds, v.get("cgroup"), vec![kind], &h);
        }
    }

    fn slab_cache(&mut self, v: &Value) {
        match v.get("scope").and_then(Value::as_str) {
            Some("interval") => self.slab_intervals = true,
            Some("total") if !self.slab_intervals => {}
            _ => return,
        }
        let Some(cache) = s(v, "cache") else { return };
        let d = Slab {
            allocs: u(v, "allocs"),
            frees: u(v, "frees"),
            net_bytes: v.get("net_bytes").and_then(Value::as_i64).unwrap_or(0),
        };
        self.slab.add(&cache, Vec::new(), &d);
    }

    /// A shmem report closes: its mounts replace the last report's, the top N by bytes.
    fn shmem_report(&mut self, v: &Value) {
        let mut mounts = std::mem::take(&mut self.shmem_pending);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.2));
        self.shmem_dropped_before += self.shmem_live.dropped;
        self.shmem_live = Bounded::new(self.top);
        for (mount, kind, bytes) in mounts {
            self.shmem_live.add(&mount, vec![kind], &bytes);
        }
        self.shmem_unexplained = v.get("unexplained_bytes").and_then(Value::as_i64);
    }

    /// The engine's counters as (family, events) and (family, reason, dropped).
    pub fn events(&self) -> (Vec<(String, u64)>, Vec<Dropped>) {
        let Some(c) = &self.counters else { return Default::default() };
        let mut events = Vec::new();
        let mut dropped = Vec::new();
        let families: BTreeMap<_, _> = c.families.iter().collect();
        for (f, st) in families {
            events.push((f.clone(), st.events));
            for (reason, n) in
                [("ringbuf_full", st.ringbuf_drops), ("map_full", st.map_full), ("undecodable", st.undecodable)]
            {
                dropped.push((f.clone(), reason, n));
            }
        }
        (events, dropped)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn records_fold_into_monotonic_counters_and_gauges() {
        let mut m = Model::new(50, "0.1.0", "6.18");
        let kill = json!({"type": "oom_kill", "time": "2026-11-22T02:19:37.449Z", "constraint": "memcg",
            "victim": {"cgroup": "/shop"}, "group_kills": [{"pid": 2}]});
        m.record(Some("oom"), &kill);
        m.record(Some("oom"), &kill);
        assert_eq!(m.oom_kills.series().map(|(k, r, v)| (k, r[0].as_str(), *v)).collect::<Vec<_>>(), [("/shop", "memcg", 4)]);
        assert_eq!(m.oom_last_kill_s, Some(1_795_313_977.449));

        let row = |fin: bool, n: u64| json!({"type": "reclaim_summary", "final": fin, "kind": "memcg", "cgroup": "/shop",
            "count": n, "total_us": 1500.0, "histogram": [[960, 1024, n - 1], [14155776, 14680064, 1]]});
        let prow = json!({"type": "reclaim_summary", "final": false, "kind": "memcg", "pid": 7, "comm": "dd", "cgroup": "/shop", "count": 3});
        m.record(Some("reclaim"), &row(false, 3));
        m.record(Some("reclaim"), &prow);
        m.record(Some("reclaim"), &row(false, 2));
        m.record(Some("reclaim"), &row(true, 5)); // the whole run: already counted
        let (_, kind, h) = m.stall_seconds.series().next().unwrap();
        assert_eq!((kind[0].as_str(), h.count, h.buckets[0], h.buckets[14]), ("memcg", 5, 3, 2));
        assert!((h.sum_s - 0.003).abs() < 1e-12);
        assert_eq!(m.stalls.series().map(|(k, _, v)| (k, *v)).collect::<Vec<_>>(), [("dd", 3)]);

        let cache = |scope: &str, a: u64| json!({"type": "slab_cache", "scope": scope, "cache": "dentry", "allocs": a, "frees": 1, "net_bytes": -192});
        m.record(Some("slab"), &cache("interval", 10));
        m.record(Some("slab"), &cache("interval", 5));
        m.record(Some("slab"), &cache("total", 15));
        let (_, _, sl) = m.slab.series().next().unwrap();
        assert_eq!(sl, &Slab { allocs: 15, frees: 2, net_bytes: -384 });
        m.record(Some("slab"), &json!({"type": "slab_dentry", "nr_negative": 114207}));
        assert_eq!(m.dentry_negative, Some(114207));

        for (mount, bytes) in [("/run", 10u64), ("/dev/shm", 20)] {
            m.record(Some("shmem"), &json!({"type": "shmem_mount", "mount": mount, "kind": "tmpfs", "live_bytes": bytes}));
        }
        assert!(m.shmem_live.is_empty(), "a report counts once it is closed");
        m.record(Some("shmem"), &json!({"type": "shmem_reconcile", "unexplained_bytes": -4096}));
        assert_eq!(m.shmem_live.series().map(|(k, _, v)| (k, *v)).collect::<Vec<_>>(), [("/dev/shm", 20), ("/run", 10)]);
        assert_eq!(m.shmem_unexplained, Some(-4096));
    }

    #[test]
    fn final_rows_count_when_there_was_no_interval() {
        let mut m = Model::new(50, "v", "k");
        m.record(Some("reclaim"), &json!({"type": "reclaim_summary", "final": true, "kind": "direct", "cgroup": "/", "count": 4, "total_us": 8.0}));
        assert_eq!(m.stall_seconds.series().next().unwrap().2.count, 4);
        m.record(Some("slab"), &json!({"type": "slab_cache", "scope": "total", "cache": "filp", "allocs": 9, "frees": 0, "net_bytes": 0}));
        assert_eq!(m.slab.series().next().unwrap().2.allocs, 9);
    }

    #[test]
    fn engine_records_give_probes_and_counters() {
        let mut m = Model::new(50, "v", "k");
        m.record(None, &json!({"type": "ready", "probes": [{"family": "oom", "hook": "oom:mark_victim", "strategy": "tp_btf", "program": "p"}],
            "gaps": [{"family": "reclaim", "hook": "memcg:over_high", "reasons": ["kprobe: no"]}]}));
        assert_eq!(m.probes[1], ("reclaim".into(), "memcg:over_high".into(), "gap".into()));
        m.record(None, &json!({"type": "stats", "duration_s": 1.0, "families": {"oom": {"events": 3, "received": 3,
            "ringbuf_drops": 1, "read_errors": 0, "map_full": 0, "undecodable": 0}}}));
        let (events, dropped) = m.events();
        assert_eq!(events, [("oom".to_string(), 3)]);
        assert_eq!(dropped[0], ("oom".to_string(), "ringbuf_full", 1));
    }
}
