//! The slab family's records and their text view. The agent emits every record of a period
//! (each cache that changed, its top callers, the dentry context) and closes the period
//! with a `slab_period` record; the view buffers a period's records until that record and
//! then prints the top `top_caches` caches as a table. The view reads records only, so a
//! recording replays into the same text.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{
    format,
    sink::{Text, View},
};

/// Every record of the slab family, by its `"type"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SlabRecord {
    #[serde(rename = "slab_cache")]
    Cache(CacheRecord),
    #[serde(rename = "slab_growth")]
    Growth(GrowthRecord),
    #[serde(rename = "slab_dentry")]
    Dentry(DentryRecord),
    #[serde(rename = "slab_period")]
    Period(PeriodRecord),
    #[serde(rename = "slab_summary")]
    Summary(SummaryRecord),
}

/// What a period covers: since the last interval, or since the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Interval,
    Total,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Interval => "interval",
            Scope::Total => "total",
        }
    }
}

/// One cache that changed in the period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub scope: Scope,
    pub time: String,
    pub seconds: f64,
    pub cache: String,
    pub object_size: u32,
    pub allocs: u64,
    pub frees: u64,
    pub net: i64,
    pub net_bytes: i64,
    /// Other names merged into this cache (/sys/kernel/slab symlinks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// /proc/slabinfo active objects now, and their change over the same period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slabinfo_active: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slabinfo_delta: Option<i64>,
}

/// One of a cache's top callers (after its `slab_cache` record, best first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthRecord {
    pub scope: Scope,
    pub time: String,
    pub cache: String,
    pub call_site: String,
    /// True with --live: `frees` are this caller's objects freed since the start (by
    /// anyone). False: frees are not attributed to callers (0), only to caches.
    pub live: bool,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub allocs: u64,
    pub frees: u64,
    pub net: i64,
    pub net_bytes: i64,
}

/// A directory dentry allocations were made in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirRecord {
    pub dir: String,
    pub tgid: u32,
    pub comm: String,
    pub allocs: u64,
}

/// Dentry context (after the dentry cache's records, when that cache changed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DentryRecord {
    pub scope: Scope,
    pub time: String,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_dentry: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_negative: Option<i64>,
    /// Change of nr_negative and of nr_dentry - nr_negative over the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_growth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_growth: Option<i64>,
    /// Dentry allocations joined with a path syscall, and those without one.
    pub joined: u64,
    pub unjoined: u64,
    pub dirs: Vec<DirRecord>,
}

/// The last record of a period: its `slab_cache` records (as many as `caches`) came
/// before it, with the same scope and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodRecord {
    pub scope: Scope,
    pub time: String,
    pub seconds: f64,
    /// `slab_cache` records of the period.
    pub caches: usize,
    /// How many of them the text view shows (--top-caches).
    pub top_caches: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSummary {
    pub enabled: bool,
    pub max: u32,
    pub inserts: u64,
    pub hits: u64,
    pub misses: u64,
    pub replaced: u64,
    pub failed: u64,
    pub entries: u64,
    /// inserts - hits - entries: objects forgotten because the map was full.
    pub evicted: u64,
}

/// Map usage and losses, once at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub caches_seen: usize,
    pub caller_rows: usize,
    pub caller_rows_max: u32,
    pub caller_rows_full: u64,
    pub caller_rows_pruned: u64,
    pub caches_full: u64,
    pub cache_name_failed: u64,
    pub cgroup_read_failed: u64,
    pub live: LiveSummary,
    pub paths_recorded: u64,
    pub dirs_joined: u64,
    pub dirs_no_path: u64,
    pub dirs_read_failed: u64,
    pub dirs_full: u64,
    pub notes: Vec<String>,
}

/// The text view: one table per period on stdout, the summary on stderr.
#[derive(Default)]
pub struct SlabView {
    /// The records of the period not closed yet.
    pending: Vec<SlabRecord>,
}

impl View for SlabView {
    fn record(&mut self, rec: &Value) -> Text {
        match serde_json::from_value::<SlabRecord>(rec.clone()) {
            Ok(SlabRecord::Period(p)) => {
                Text::out(period_text(&p, &std::mem::take(&mut self.pending)))
            }
            Ok(SlabRecord::Summary(s)) => Text::err(summary_text(&s)),
            Ok(r) => {
                self.pending.push(r);
                Text::default()
            }
            Err(e) => Text::err(format!("memtrace: unreadable slab record ({e}): {rec}\n")),
        }
    }

    fn finish(&mut self) -> Text {
        if self.pending.is_empty() {
            return Text::default();
        }
        let n = std::mem::take(&mut self.pending).len();
        Text::err(format!(
            "memtrace: slab: {n} records of a period that never closed (no slab_period) not shown\n"
        ))
    }
}

/// One period's table: the first `top_caches` caches, each with its callers (and for
/// dentry the dentry context), in the order the agent ranked them.
fn period_text(p: &PeriodRecord, records: &[SlabRecord]) -> String {
    let mut text = format!(
        "{}  slab {} ({:.1} s)\n{:<26} {:>7} {:>10} {:>10} {:>10} {:>11} {:>11}  {}\n",
        p.time,
        p.scope.name(),
        p.seconds,
        "CACHE",
        "OBJSIZE",
        "ALLOCS",
        "FREES",
        "NET",
        "NET BYTES",
        "SLABINFO Δ",
        "WHO (top caller)"
    );
    // A cache's records run from its slab_cache record to the next one: its callers, then
    // for dentry the dentry context.
    let mut caches: Vec<(&CacheRecord, Vec<&GrowthRecord>, Vec<&DentryRecord>)> = Vec::new();
    for r in records {
        match (r, caches.last_mut()) {
            (SlabRecord::Cache(c), _) => caches.push((c, Vec::new(), Vec::new())),
            (SlabRecord::Growth(g), Some(last)) => last.1.push(g),
            (SlabRecord::Dentry(d), Some(last)) => last.2.push(d),
            _ => {}
        }
    }
    for (c, growth, dentry) in caches.iter().take(p.top_caches) {
        text += &cache_text(c, growth);
        for d in dentry {
            text += &dentry_text(d);
        }
    }
    if caches.is_empty() {
        text += "    (no slab activity)\n";
    }
    text.push('\n');
    text
}

fn cache_text(c: &CacheRecord, growth: &[&GrowthRecord]) -> String {
    let who = match growth.first() {
        Some(g) if c.allocs > 0 => format!("{}[{}] {}%", g.comm, g.tgid, g.allocs * 100 / c.allocs),
        _ => "-".into(),
    };
    let mut text = format!(
        "{:<26} {:>7} {:>10} {:>10} {:>+10} {:>11} {:>11}  {who}\n",
        trunc(&c.cache, 26),
        c.object_size,
        c.allocs,
        c.frees,
        c.net,
        signed_bytes(c.net_bytes),
        c.slabinfo_delta.map_or_else(|| "-".into(), |d| format!("{d:+}")),
    );
    if !c.aliases.is_empty() {
        text += &format!("    merged: {}\n", c.aliases.join(", "));
    }
    for g in growth {
        text += &format!(
            "    {:>+10}  {}[{}]  {}  cgroup {}\n",
            g.net,
            g.comm,
            g.tgid,
            g.call_site,
            g.cgroup.as_deref().unwrap_or("?")
        );
    }
    text
}

fn dentry_text(d: &DentryRecord) -> String {
    let mut text = String::new();
    if let (Some(nr), Some(negs), Some(neg), Some(pos)) =
        (d.nr_dentry, d.nr_negative, d.negative_growth, d.positive_growth)
    {
        text += &format!(
            "    dentry-state: negative {neg:+}, positive {pos:+} (nr_dentry {nr}, nr_negative {negs})\n"
        );
    }
    for x in &d.dirs {
        text += &format!("    dir {:>10}  {}  {}[{}]\n", x.allocs, x.dir, x.comm, x.tgid);
    }
    // Both are 0 when directories are not joined (--no-dirs, or not possible here).
    if d.joined + d.unjoined > 0 {
        text += &format!(
            "    dirs known for {} of {} dentry allocations\n",
            d.joined,
            d.joined + d.unjoined
        );
    }
    text
}

fn summary_text(s: &SummaryRecord) -> String {
    let mut t = format!(
        "slab: {} caches seen, {} caller rows (max {}, {} lost to a full map, {} pruned)\n",
        s.caches_seen, s.caller_rows, s.caller_rows_max, s.caller_rows_full, s.caller_rows_pruned
    );
    if s.live.enabled {
        t += &format!(
            "live: {} objects remembered, {} frees matched, {} frees of unknown objects, {} evicted (max {})\n",
            s.live.inserts, s.live.hits, s.live.misses, s.live.evicted, s.live.max
        );
    }
    for n in &s.notes {
        t += &format!("note: {n}\n");
    }
    t
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn signed_bytes(b: i64) -> String {
    let k = b / 1024;
    if b.abs() < 1024 {
        format!("{b:+} B")
    } else {
        format!("{}{}", if b < 0 { "" } else { "+" }, format::kib(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME: &str = "2026-11-22T02:21:14.338Z";
    const CG: &str = "/process_api/01d2b568f38b90c096aa4006162b21db";

    fn cache(name: &str, allocs: u64, frees: u64, size: u32) -> CacheRecord {
        let net = allocs as i64 - frees as i64;
        CacheRecord {
            scope: Scope::Interval,
            time: TIME.into(),
            seconds: 3.7,
            cache: name.into(),
            object_size: size,
            allocs,
            frees,
            net,
            net_bytes: net * i64::from(size),
            aliases: Vec::new(),
            slabinfo_active: None,
            slabinfo_delta: None,
        }
    }

    fn growth(cache: &str, comm: &str, tgid: u32, allocs: u64, size: i64) -> GrowthRecord {
        GrowthRecord {
            scope: Scope::Interval,
            time: TIME.into(),
            cache: cache.into(),
            call_site: "__d_alloc+0x2d".into(),
            live: false,
            tgid,
            comm: comm.into(),
            cgroup: Some(CG.into()),
            allocs,
            frees: 0,
            net: allocs as i64,
            net_bytes: allocs as i64 * size,
        }
    }

    fn dir(dir: &str, comm: &str, tgid: u32, allocs: u64) -> DirRecord {
        DirRecord { dir: dir.into(), tgid, comm: comm.into(), allocs }
    }

    /// The README's example period (printed by the agent before records and view were
    /// split), plus two more caches that --top-caches 2 leaves out of the text.
    fn readme_period() -> Vec<SlabRecord> {
        let dentry = CacheRecord {
            slabinfo_active: Some(140_000),
            slabinfo_delta: Some(105_014),
            ..cache("dentry", 105_122, 215, 192)
        };
        let filp = CacheRecord { aliases: vec!["filp_alias".into()], ..cache("filp", 10, 8, 256) };
        vec![
            SlabRecord::Cache(dentry),
            SlabRecord::Growth(growth("dentry", "tls-probe", 24730, 100_003, 192)),
            SlabRecord::Growth(growth("dentry", "quiet-stat", 24731, 5003, 192)),
            SlabRecord::Dentry(DentryRecord {
                scope: Scope::Interval,
                time: TIME.into(),
                seconds: 3.7,
                nr_dentry: Some(140_370),
                nr_negative: Some(114_207),
                negative_growth: Some(105_023),
                positive_growth: Some(-28),
                joined: 105_105,
                unjoined: 22,
                dirs: vec![
                    dir("/tmp/mt-demo/probe", "tls-probe", 24730, 100_000),
                    dir("/tmp/mt-demo/quiet", "quiet-stat", 24731, 5000),
                ],
            }),
            SlabRecord::Cache(filp),
            SlabRecord::Cache(cache("names_cache", 5, 5, 4096)),
            SlabRecord::Growth(growth("names_cache", "tls-probe", 24730, 5, 4096)),
            SlabRecord::Period(PeriodRecord {
                scope: Scope::Interval,
                time: TIME.into(),
                seconds: 3.7,
                caches: 3,
                top_caches: 2,
            }),
        ]
    }

    fn render(view: &mut SlabView, records: &[SlabRecord]) -> Text {
        let mut all = Text::default();
        for r in records {
            all.push(view.record(&serde_json::to_value(r).unwrap()));
        }
        all
    }

    #[test]
    fn records_keep_their_json_shape_and_read_back() {
        let c = CacheRecord {
            scope: Scope::Interval,
            time: "2026-11-22T02:21:28.792Z".into(),
            seconds: 3.129165062,
            slabinfo_active: Some(85512),
            slabinfo_delta: Some(50039),
            ..cache("dentry", 50070, 82, 192)
        };
        let g = GrowthRecord {
            time: "2026-11-22T02:21:28.792Z".into(),
            live: true,
            tgid: 24918,
            frees: 2,
            net: 50001,
            net_bytes: 9_600_192,
            ..growth("dentry", "tls-probe", 24918, 50003, 192)
        };
        // The README's lines, field for field.
        let want = [
            r#"{"type":"slab_cache","scope":"interval","time":"2026-11-22T02:21:28.792Z","seconds":3.129165062,"cache":"dentry","object_size":192,"allocs":50070,"frees":82,"net":49988,"net_bytes":9597696,"slabinfo_active":85512,"slabinfo_delta":50039}"#,
            r#"{"type":"slab_growth","scope":"interval","time":"2026-11-22T02:21:28.792Z","cache":"dentry","call_site":"__d_alloc+0x2d","live":true,"tgid":24918,"comm":"tls-probe","cgroup":"/process_api/01d2b568f38b90c096aa4006162b21db","allocs":50003,"frees":2,"net":50001,"net_bytes":9600192}"#,
        ];
        for (r, want) in [(SlabRecord::Cache(c), want[0]), (SlabRecord::Growth(g), want[1])] {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v.to_string(), want);
            assert_eq!(serde_json::from_value::<SlabRecord>(v).unwrap(), r);
        }
        // Absent optional fields stay absent, and read back as absent.
        let bare = SlabRecord::Cache(cache("filp", 1, 0, 256));
        let v = serde_json::to_value(&bare).unwrap();
        assert!(!v.to_string().contains("aliases") && !v.to_string().contains("slabinfo"), "{v}");
        assert_eq!(serde_json::from_value::<SlabRecord>(v).unwrap(), bare);
        let mut records = readme_period();
        let summary = SummaryRecord {
            caches_seen: 3,
            caller_rows: 2,
            caller_rows_max: 1024,
            caller_rows_full: 0,
            caller_rows_pruned: 0,
            caches_full: 0,
            cache_name_failed: 0,
            cgroup_read_failed: 0,
            live: LiveSummary::default(),
            paths_recorded: 0,
            dirs_joined: 1,
            dirs_no_path: 0,
            dirs_read_failed: 0,
            dirs_full: 0,
            notes: vec!["n".into()],
        };
        records.push(SlabRecord::Summary(summary));
        for r in records {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(serde_json::from_value::<SlabRecord>(v).unwrap(), r);
        }
        let dentry = serde_json::to_value(&readme_period()[3]).unwrap().to_string();
        assert!(dentry.starts_with(r#"{"type":"slab_dentry","scope":"interval","time":"2026-11-22T02:21:14.338Z","seconds":3.7,"nr_dentry":140370,"nr_negative":114207,"negative_growth":105023,"positive_growth":-28,"joined":105105,"unjoined":22,"dirs":[{"dir":"/tmp/mt-demo/probe","tgid":24730,"comm":"tls-probe","allocs":100000}"#), "{dentry}");
        let period = serde_json::to_value(readme_period().last().unwrap()).unwrap().to_string();
        assert_eq!(
            period,
            r#"{"type":"slab_period","scope":"interval","time":"2026-11-22T02:21:14.338Z","seconds":3.7,"caches":3,"top_caches":2}"#
        );
    }

    #[test]
    fn a_period_prints_once_closed_with_its_top_caches() {
        let mut view = SlabView::default();
        let records = readme_period();
        let (open, close) = records.split_at(records.len() - 1);
        assert_eq!(render(&mut view, open), Text::default(), "nothing before the period closes");
        let t = render(&mut view, close);
        assert_eq!(t.err, "");
        let want = format!(
            "{TIME}  slab interval (3.7 s)
CACHE                      OBJSIZE     ALLOCS      FREES        NET   NET BYTES  SLABINFO Δ  WHO (top caller)
dentry                         192     105122        215    +104907   +19.2 MiB     +105014  tls-probe[24730] 95%
       +100003  tls-probe[24730]  __d_alloc+0x2d  cgroup {CG}
         +5003  quiet-stat[24731]  __d_alloc+0x2d  cgroup {CG}
    dentry-state: negative +105023, positive -28 (nr_dentry 140370, nr_negative 114207)
    dir     100000  /tmp/mt-demo/probe  tls-probe[24730]
    dir       5000  /tmp/mt-demo/quiet  quiet-stat[24731]
    dirs known for 105105 of 105127 dentry allocations
filp                           256         10          8         +2      +512 B           -  -
    merged: filp_alias

"
        );
        assert_eq!(t.out, want);
        assert_eq!(view.finish(), Text::default());
    }

    #[test]
    fn empty_periods_and_the_summary() {
        let mut view = SlabView::default();
        let total = SlabRecord::Period(PeriodRecord {
            scope: Scope::Total,
            time: TIME.into(),
            seconds: 12.04,
            caches: 0,
            top_caches: 10,
        });
        let t = render(&mut view, &[total]);
        assert!(t.out.starts_with(&format!("{TIME}  slab total (12.0 s)\nCACHE ")), "{}", t.out);
        assert!(t.out.ends_with("WHO (top caller)\n    (no slab activity)\n\n"), "{}", t.out);
        let summary = SummaryRecord {
            caches_seen: 120,
            caller_rows: 900,
            caller_rows_max: 1024,
            caller_rows_full: 3,
            caller_rows_pruned: 40,
            caches_full: 0,
            cache_name_failed: 0,
            cgroup_read_failed: 0,
            live: LiveSummary {
                enabled: true,
                max: 1024,
                inserts: 9,
                hits: 4,
                misses: 2,
                entries: 3,
                evicted: 2,
                ..Default::default()
            },
            paths_recorded: 0,
            dirs_joined: 0,
            dirs_no_path: 0,
            dirs_read_failed: 0,
            dirs_full: 0,
            notes: vec!["kmalloc() is not counted".into()],
        };
        let t = render(&mut view, &[SlabRecord::Summary(summary)]);
        assert_eq!(t.out, "");
        assert_eq!(
            t.err,
            "slab: 120 caches seen, 900 caller rows (max 1024, 3 lost to a full map, 40 pruned)\n\
             live: 9 objects remembered, 4 frees matched, 2 frees of unknown objects, 2 evicted (max 1024)\n\
             note: kmalloc() is not counted\n"
        );
        // A recording cut inside a period says so at the end.
        render(&mut view, &readme_period()[..2]);
        assert!(view.finish().err.contains("2 records of a period that never closed"));
        let bad = view.record(&serde_json::json!({"type": "slab_cache", "cache": 1}));
        assert!(bad.err.contains("unreadable slab record"), "{bad:?}");
    }

    #[test]
    fn formats_signed_sizes() {
        assert_eq!(signed_bytes(512), "+512 B");
        assert_eq!(signed_bytes(-512), "-512 B");
        assert_eq!(signed_bytes(19_200_000), "+18.3 MiB");
        assert_eq!(signed_bytes(-2 * 1024 * 1024), "-2.0 MiB");
        assert_eq!(trunc("kmalloc-cg-8k", 26), "kmalloc-cg-8k");
        assert_eq!(trunc("abcdef", 4), "abc…");
    }
}
