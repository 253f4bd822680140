//! The engine's own records: `ready` once the hooks are attached, `stats` at the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{select::Attached, sink::Text};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum EngineRecord {
    #[serde(rename = "ready")]
    Ready(Ready),
    #[serde(rename = "stats")]
    Stats(Stats),
}

/// The hooks attached, the gaps, and the kernel memory this session's BPF maps hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    pub probes: Vec<Attached>,
    pub gaps: Vec<Gap>,
    /// The `memlock:` of every BPF map this process holds (/proc/self/fdinfo), every
    /// family's (those not traced at their smallest) and the ring buffers included.
    #[serde(default)]
    pub bpf_map_bytes: u64,
    #[serde(default)]
    pub bpf_maps: usize,
}

/// A hook no strategy could serve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub family: String,
    pub hook: String,
    pub reasons: Vec<String>,
}

/// Per-family counters.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FamilyStats {
    /// Events the kernel saw.
    pub events: u64,
    /// Records the agent decoded.
    pub received: u64,
    /// Records lost: ring buffer full.
    pub ringbuf_drops: u64,
    /// Records sent with fields that failed to read.
    pub read_errors: u64,
    /// Aggregation map updates that failed (map full).
    pub map_full: u64,
    /// Records the agent could not decode.
    pub undecodable: u64,
    /// Records the kernel tried to send (on any ring buffer): `sent - ringbuf_drops` of
    /// them reach the agent, as `received` or `undecodable`.
    #[serde(default)]
    pub sent: u64,
}

/// The session's counters, at the end.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub duration_s: f64,
    pub families: BTreeMap<String, FamilyStats>,
    /// Stopped (SIGINT, SIGTERM) during start-up, before tracing began: no family was
    /// traced, and what was attached is detached. Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub before_tracing: bool,
}

/// The text of an engine record (status lines on stderr).
pub fn engine_text(rec: &Value) -> Text {
    match serde_json::from_value::<EngineRecord>(rec.clone()) {
        Ok(EngineRecord::Ready(r)) => Text::err(ready_text(&r)),
        Ok(EngineRecord::Stats(s)) => Text::err(stats_text(&s)),
        Err(e) => Text::err(format!("memtrace: unreadable record ({e}): {rec}\n")),
    }
}

fn ready_text(r: &Ready) -> String {
    let list: Vec<String> = r.probes.iter().map(|a| format!("{} via {}", a.hook, a.strategy)).collect();
    let mut s = format!("memtrace: tracing {}. Ctrl-C to stop.\n", list.join(", "));
    for a in &r.probes {
        if let Some(l) = &a.limits {
            s += &format!("memtrace: coverage gap: {}: {l}\n", a.hook);
        }
    }
    for g in &r.gaps {
        s += &format!("memtrace: coverage gap: {} not traced: {}\n", g.hook, g.reasons.join("; "));
    }
    s += &format!(
        "memtrace: BPF maps hold {} of kernel memory ({} maps)\n",
        super::format::kib((r.bpf_map_bytes / 1024) as i64),
        r.bpf_maps
    );
    s
}

fn stats_text(st: &Stats) -> String {
    let mut s = format!("memtrace: stopped after {:.1}s\n", st.duration_s);
    if st.before_tracing {
        s += "memtrace: stopped during start-up, before tracing began: nothing was traced\n";
    }
    for (name, c) in &st.families {
        s += &format!(
            "memtrace: {name}: {} events, {} records sent, {} received, {} dropped (ring buffer \
             full), {} with read errors, {} map-full, {} undecodable\n",
            c.events, c.sent, c.received, c.ringbuf_drops, c.read_errors, c.map_full, c.undecodable
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_records_keep_their_json_shape_and_render() {
        let r = EngineRecord::Ready(Ready {
            probes: vec![Attached {
                family: "oom".into(),
                hook: "oom:mark_victim".into(),
                strategy: "tp_btf".into(),
                program: "oom_mark_victim_btf".into(),
                limits: None,
            }],
            gaps: vec![Gap { family: "oom".into(), hook: "oom:x".into(), reasons: vec!["kprobe: no".into()] }],
            bpf_map_bytes: 3 << 20,
            bpf_maps: 40,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"type":"ready","probes":[{"family":"oom","hook":"oom:mark_victim","strategy":"tp_btf","program":"oom_mark_victim_btf"}],"gaps":[{"family":"oom","hook":"oom:x","reasons":["kprobe: no"]}],"bpf_map_bytes":3145728,"bpf_maps":40}"#
        );
        assert_eq!(serde_json::from_value::<EngineRecord>(v.clone()).unwrap(), r);
        let t = engine_text(&v);
        assert!(t.err.contains("tracing oom:mark_victim via tp_btf. Ctrl-C to stop."), "{t:?}");
        assert!(t.err.contains("coverage gap: oom:x not traced: kprobe: no"), "{t:?}");
        assert!(t.err.contains("BPF maps hold 3.0 MiB of kernel memory (40 maps)"), "{t:?}");
        let st = EngineRecord::Stats(Stats {
            duration_s: 1.5,
            families: [("oom".to_string(), FamilyStats { events: 3, ..Default::default() })].into(),
            ..Default::default()
        });
        let v = serde_json::to_value(&st).unwrap();
        assert!(v.to_string().starts_with(r#"{"type":"stats","duration_s":1.5,"families":{"oom":{"events":3,"#));
        assert!(engine_text(&v).err.contains("oom: 3 events"));
        assert!(!v.to_string().contains("before_tracing"), "only when it is so");
        let early = Stats { duration_s: 0.1, before_tracing: true, ..Default::default() };
        let early = serde_json::to_value(EngineRecord::Stats(early)).unwrap();
        assert_eq!(early.to_string(), r#"{"type":"stats","duration_s":0.1,"families":{},"before_tracing":true}"#);
        assert!(engine_text(&early).err.contains("before tracing began"));
    }
}
