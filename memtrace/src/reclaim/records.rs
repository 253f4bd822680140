//! The reclaim family's records: what the agent emits and the view renders. Their JSON is
//! the family's interface (field names, types and order are relied upon by scripts).
//!
//! A window (an interval, or the whole run with `final` true) is its `reclaim_summary`
//! rows followed by one `reclaim_context`, which closes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::context::Context;

/// Every record of the family, tagged by `"type"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
#[expect(clippy::large_enum_variant, reason = "one record at a time, made and dropped at once")]
pub enum ReclaimRecord {
    #[serde(rename = "reclaim_options")]
    Options(ViewOptions),
    #[serde(rename = "reclaim_summary")]
    Summary(Summary),
    #[serde(rename = "reclaim_stall")]
    Stall(Stall),
    #[serde(rename = "reclaim_context")]
    Context(ContextRecord),
}

/// `reclaim_options`, first of the family's records: how the session asked its text to be
/// shown, so that a recording replays into the same text.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ViewOptions {
    /// -H: latency distributions as log2 bars.
    pub histogram: bool,
    /// -m: milliseconds instead of microseconds.
    pub milliseconds: bool,
    /// --top: rows per table.
    pub top: usize,
    /// --min-latency: stalls at least this long are streamed as `reclaim_stall`.
    pub min_latency_us: f64,
}

/// `reclaim_summary`: one row per (kind, process) or, without pid and comm, per (kind,
/// cgroup), for one window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub time: String,
    /// true for the whole-run summary, false for an interval.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub interval_s: f64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    pub count: u64,
    pub total_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub nr_reclaimed: u64,
    /// Per-cgroup rows only: the window's distribution in the kernel's log-linear buckets,
    /// `[low_ns, high_ns, count]` for each non-empty bucket (low inclusive, high exclusive;
    /// the last bucket is open-ended). Its counts add up to `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Vec<[u64; 3]>>,
}

/// `reclaim_stall`: one stall at or above --min-latency.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stall {
    pub time: String,
    pub kind: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The thread's own name when it differs from the process's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_comm: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    pub duration_us: f64,
    pub order: Option<i32>,
    pub gfp_flags: Option<String>,
    pub gfp_mask: Option<u64>,
    pub nr_reclaimed: u64,
    /// Throttle reasons (throttle kind only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Throttle sleeps of one reason over a window.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Throttle {
    pub count: u64,
    pub ms: f64,
}

/// `reclaim_context`: the system context of a window; the window's last record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContextRecord {
    pub time: String,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub interval_s: f64,
    /// Throttle sleeps by reason.
    pub throttle: BTreeMap<String, Throttle>,
    #[serde(flatten)]
    pub context: Context,
    /// Histogram buffer flips whose in-flight programs did not finish within the deadline
    /// since the start (their buffer was read at a later flip: nothing is lost, but a
    /// non-zero count means programs ran far longer than they should).
    #[serde(default)]
    pub flip_timeouts: u64,
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::reclaim::context::{Kswapd, Psi, Sysctls, VmstatDelta};

    pub fn summary(kind: &str, pid: Option<u32>, cgroup: &str, count: u64, total_us: f64) -> Summary {
        Summary {
            time: "2026-11-22T01:57:06.511Z".into(),
            is_final: false,
            interval_s: 2.008,
            kind: kind.into(),
            pid,
            comm: pid.map(|_| "dd".into()),
            cgroup: Some(cgroup.into()),
            cgroup_id: Some(15611),
            count,
            total_us,
            p50_us: 84.479,
            p90_us: 136.191,
            p99_us: 8716.287,
            p999_us: 14507.612,
            max_us: 14507.612,
            nr_reclaimed: 61440,
            histogram: pid.is_none().then(|| vec![[81920, 86016, count - 1], [14155776, 14680064, 1]]),
        }
    }

    pub fn context(is_final: bool) -> ContextRecord {
        ContextRecord {
            time: "2026-11-22T01:57:06.512Z".into(),
            is_final,
            interval_s: 2.008,
            throttle: [("writeback".to_string(), Throttle { count: 205, ms: 348.0 })].into(),
            context: Context {
                vmstat: VmstatDelta { allocstall: 3, ..Default::default() },
                psi: Psi { some_pct: Some(6.7), full_pct: Some(3.6), ..Default::default() },
                kswapd: Kswapd { wakes: 2, awake_ms: 1.5 },
                zones: Vec::new(),
                sysctl: Sysctls { swappiness: Some(60), ..Default::default() },
                numa_nodes: 1,
                swap_total_kb: 0,
                notes: vec!["no swap".into()],
            },
            flip_timeouts: 0,
        }
    }

    /// Today's JSON shapes, field for field, and back.
    #[test]
    fn records_keep_their_json_and_read_back() {
        let row = ReclaimRecord::Summary(summary("memcg", Some(28091), "/shop", 240, 63894.207));
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"type":"reclaim_summary","time":"2026-11-22T01:57:06.511Z","final":false,"interval_s":2.008,"kind":"memcg","pid":28091,"comm":"dd","cgroup":"/shop","cgroup_id":15611,"count":240,"total_us":63894.207,"p50_us":84.479,"p90_us":136.191,"p99_us":8716.287,"p999_us":14507.612,"max_us":14507.612,"nr_reclaimed":61440}"#
        );
        assert_eq!(serde_json::from_value::<ReclaimRecord>(v).unwrap(), row);
        let cg = ReclaimRecord::Summary(summary("memcg", None, "/shop", 240, 63894.207));
        let v = serde_json::to_value(&cg).unwrap();
        assert!(v.get("pid").is_none() && v.get("comm").is_none(), "{v}");
        assert!(v.to_string().ends_with(r#""nr_reclaimed":61440,"histogram":[[81920,86016,239],[14155776,14680064,1]]}"#), "{v}");
        assert_eq!(serde_json::from_value::<ReclaimRecord>(v).unwrap(), cg);

        let stall = ReclaimRecord::Stall(Stall {
            time: "2026-11-22T01:57:11.340Z".into(),
            kind: "memcg".into(),
            pid: 28183,
            tid: 28183,
            comm: "dd".into(),
            thread_comm: None,
            cgroup: Some("/shop".into()),
            cgroup_id: Some(15644),
            duration_us: 13025.868,
            order: Some(0),
            gfp_flags: Some("GFP_HIGHUSER_MOVABLE".into()),
            gfp_mask: Some(1051850),
            nr_reclaimed: 256,
            reason: None,
        });
        let v = serde_json::to_value(&stall).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"type":"reclaim_stall","time":"2026-11-22T01:57:11.340Z","kind":"memcg","pid":28183,"tid":28183,"comm":"dd","cgroup":"/shop","cgroup_id":15644,"duration_us":13025.868,"order":0,"gfp_flags":"GFP_HIGHUSER_MOVABLE","gfp_mask":1051850,"nr_reclaimed":256}"#
        );
        assert_eq!(serde_json::from_value::<ReclaimRecord>(v).unwrap(), stall);

        let ctx = ReclaimRecord::Context(context(true));
        let v = serde_json::to_value(&ctx).unwrap();
        let s = v.to_string();
        assert!(
            s.starts_with(r#"{"type":"reclaim_context","time":"2026-11-22T01:57:06.512Z","final":true,"interval_s":2.008,"throttle":{"writeback":{"count":205,"ms":348.0}},"vmstat":{"allocstall":3,"#),
            "{s}"
        );
        assert!(s.contains(r#""kswapd":{"wakes":2,"awake_ms":1.5},"zones":[],"sysctl":{"swappiness":60,"#), "{s}");
        assert!(s.ends_with(r#""numa_nodes":1,"swap_total_kb":0,"notes":["no swap"],"flip_timeouts":0}"#), "{s}");
        assert_eq!(serde_json::from_value::<ReclaimRecord>(v).unwrap(), ctx);

        let o = ReclaimRecord::Options(ViewOptions { histogram: true, milliseconds: false, top: 10, min_latency_us: 1000.0 });
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"type":"reclaim_options","histogram":true,"milliseconds":false,"top":10,"min_latency_us":1000.0}"#
        );
        assert_eq!(serde_json::from_value::<ReclaimRecord>(v).unwrap(), o);
    }
}
