//! The oom family's records and their text. One record type, `oom_kill`: one OOM
//! decision, the kill(s) and everything that led to them. [`OomRecord`] is what the agent
//! emits and what the view ([`text::OomView`]) reads back; the plain-language notes a
//! record carries are written by [`notes::notes`].

mod notes;
mod text;

use serde::{Deserialize, Serialize};

pub use self::{notes::notes, text::OomView};

/// Every record of the oom family, tagged by its `"type"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OomRecord {
    #[serde(rename = "oom_kill")]
    Kill(OomKill),
}

/// An enum of fixed strings: serialized as them, displayed as them.
macro_rules! names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $s:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $s)] $variant,)+
        }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $s,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names! {
    /// The OOM's constraint (`enum oom_constraint`): whose memory ran out.
    Constraint {
        Global = "global",
        Cpuset = "cpuset",
        Mempolicy = "mempolicy",
        Memcg = "memcg",
        Unknown = "unknown",
    }
}

names! {
    /// Where the constraint and the domain come from.
    ConstraintSource {
        Entry = "oom_control, read through out_of_memory()'s argument",
        Stack = "oom_control, found on the OOM-invoking task's kernel stack at oom:mark_victim",
        Inferred = "inferred: a memcg above the victim at its limit means a memcg OOM \
                    (oom_control not found)",
        Unknown = "unknown",
    }
}

names! {
    /// The OOM domain's kind (the constraint, with "system" for a global OOM).
    DomainKind {
        Memcg = "memcg",
        System = "system",
        Cpuset = "cpuset",
        Mempolicy = "mempolicy",
        Unknown = "unknown",
    }
}

names! {
    /// Where the victim's `points` come from.
    PointsSource {
        Kernel = "kernel: oom_control.chosen_points",
        Exact = "kernel: oom_badness() return value",
        Walk = "recomputed by the task walk at oom:mark_victim",
        Recomputed = "recomputed from the victim's counters at mark_victim",
    }
}

names! {
    /// Why the kernel did not score a candidate.
    Skip {
        AdjMin = "oom_score_adj -1000",
        OomSkipFlag = "MMF_OOM_SKIP: already reaped or exiting",
        Vfork = "in vfork",
        NoMm = "no memory (exited)",
        OldVictim = "earlier OOM victim, memory already reaped",
        Pending = "earlier OOM victim still exiting",
        Other = "ineligible (oom_badness returned LONG_MIN)",
    }
}

names! {
    /// How the candidate table was obtained.
    MethodKind {
        Fexit = "oom_badness fexit",
        Kretprobe = "oom_badness kretprobe",
        Walk = "task walk at oom:mark_victim",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Victim {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub rss_anon_kb: Option<i64>,
    pub rss_file_kb: Option<i64>,
    pub rss_shmem_kb: Option<i64>,
    pub swap_kb: Option<i64>,
    pub pgtables_kb: Option<i64>,
    pub total_vm_kb: Option<i64>,
    /// Memory cgroup path read in BPF at kill time.
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    /// The kernel's badness score of the victim (oom_control.chosen_points when read,
    /// else the candidate table's value).
    pub points: Option<i64>,
    /// Where `points` comes from.
    pub points_source: Option<PointsSource>,
    pub points_breakdown: Option<Breakdown>,
}

/// oom_badness(): points = rss + swap + page tables + oom_score_adj x (totalpages / 1000),
/// all in pages.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Breakdown {
    /// anon + file + shmem resident pages.
    pub rss_pages: i64,
    pub swap_pages: i64,
    /// pgtables_bytes / PAGE_SIZE.
    pub pgtables_pages: i64,
    pub oom_score_adj: i64,
    /// totalpages / 1000: what one unit of oom_score_adj is worth in this domain.
    pub adj_unit_pages: i64,
    /// oom_score_adj x adj_unit_pages.
    pub adj_pages: i64,
    pub total: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
}

/// The OOM domain: whose memory ran out, and its size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Domain {
    pub kind: DomainKind,
    /// The memcg at its limit (memcg constraint).
    pub memcg: Option<String>,
    pub memcg_limit_kb: Option<i64>,
    pub memcg_usage_kb: Option<i64>,
    /// oom_control.totalpages: the size of the OOM domain in pages (memcg limit, or RAM +
    /// swap). It is NOT the victim's size.
    pub totalpages: Option<u64>,
    pub totalpages_kb: Option<i64>,
    pub totalpages_source: String,
}

/// One task the OOM killer evaluated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// The memcg's kernfs id (the cgroup directory's inode number).
    pub cgroup_id: u64,
    /// The badness score; None when skipped.
    pub points: Option<i64>,
    pub oom_score_adj: i32,
    pub rss_kb: i64,
    pub rss_anon_kb: i64,
    pub rss_file_kb: i64,
    pub rss_shmem_kb: i64,
    pub swap_kb: i64,
    pub pgtables_kb: i64,
    /// Why the kernel did not consider it, when it did not.
    pub skipped: Option<Skip>,
    /// The task killed by this decision.
    pub victim: bool,
    /// The score's parts (for the notes; not in the record).
    #[serde(skip)]
    pub breakdown: Option<Breakdown>,
}

/// How the candidate table was obtained on this kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Method {
    pub method: MethodKind,
    /// True when every score is the kernel's own oom_badness() result.
    pub exact: bool,
    pub detail: String,
    /// Candidate records received.
    pub candidates: usize,
    /// Candidates of the domain missing from the table, whatever the reason
    /// (`lost_reasons` says which): `candidates + lost` is the processes evaluated.
    pub lost: u32,
    /// `lost` by reason.
    #[serde(default)]
    pub lost_reasons: Lost,
}

/// Why candidates are missing from a decision's table: each a count of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// Candidate records the kernel could not send: its ring buffer was full.
    pub ring_full: u32,
    /// Processes of the domain past the walk's task limit, counted without a record
    /// (task walk only).
    pub walk_limit: u32,
    /// Candidate records the agent received and dropped: too many decisions waiting
    /// for their kill record, or too many candidates for one decision.
    pub agent_evicted: u32,
    /// Candidate records the kernel sent that had not reached the agent when the
    /// decision was emitted.
    pub not_received: u32,
}

impl Lost {
    pub fn total(&self) -> u32 {
        self.ring_full
            .saturating_add(self.walk_limit)
            .saturating_add(self.agent_evicted)
            .saturating_add(self.not_received)
    }

    /// "12 ring buffer full, 3 past the walk's limit" (the non-zero reasons).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.ring_full, "ring buffer full"),
            (self.walk_limit, "past the walk's task limit"),
            (self.agent_evicted, "dropped by the agent"),
            (self.not_received, "not received in time"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
        parts.join(", ")
    }
}

/// Another process killed with the victim because its memcg has memory.oom.group set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupKill {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub oom_score_adj: Option<i32>,
    pub rss_kb: Option<i64>,
}

/// What happened after the kill, in ms after it (victim exit, OOM reaper).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Reaper {
    pub victim_exit_ms: Option<f64>,
    pub wake_reaper_ms: Option<f64>,
    pub start_reaping_ms: Option<f64>,
    pub finish_reaping_ms: Option<f64>,
    pub skip_reaping: u32,
    pub summary: String,
}

/// The OOM-invoking task's page-allocator retries just before the OOM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retries {
    /// oom:reclaim_retry_zone hits (one per zone checked per retry loop).
    pub reclaim_checks: u32,
    /// should_reclaim_retry()'s no_progress_loops at the last check (gives up past 16).
    pub no_progress_loops: i32,
    pub max_no_progress_loops: i32,
    pub order: i32,
    pub last_zone: Option<String>,
    pub reclaimable_kb: i64,
    pub available_kb: i64,
    pub min_wmark_kb: i64,
    pub compaction_retries: Option<i32>,
    pub compaction_max_retries: Option<i32>,
    pub compaction_result: Option<String>,
    pub compaction_priority: Option<String>,
    pub span_ms: f64,
}

/// One OOM decision: the kill(s) and everything that led to them (`"type": "oom_kill"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OomKill {
    pub time: String,
    /// Ties this record to its candidate and reaper events.
    pub decision_id: u64,
    pub constraint: Constraint,
    pub constraint_source: ConstraintSource,
    pub domain: Domain,
    /// Allocation order that failed (-1: sysrq-f).
    pub order: Option<i32>,
    pub gfp_mask: Option<String>,
    pub gfp_flags: Option<Vec<String>>,
    pub victim: Victim,
    pub trigger: Trigger,
    /// memory.oom.group members killed by the same decision.
    pub group_kills: Vec<GroupKill>,
    pub candidates_method: Option<Method>,
    /// Sorted by points, highest first; skipped tasks last.
    pub candidates: Vec<Candidate>,
    pub reaper: Option<Reaper>,
    pub retries: Option<Retries>,
    /// Plain findings.
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oom::fixtures::reported;

    /// The `oom_kill` JSON users' scripts read: every field, in this order, null when
    /// unknown, never absent.
    #[test]
    fn the_record_keeps_its_json_shape_and_reads_back() {
        let rec = OomRecord::Kill(reported());
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(v.to_string(), JSON.replace('\n', ""));
        let back: OomRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
        let OomRecord::Kill(k) = back;
        assert_eq!((k.constraint, k.domain.kind), (Constraint::Memcg, DomainKind::Memcg));
        assert_eq!(k.candidates[3].skipped, Some(Skip::AdjMin));
        assert_eq!(k.candidates[0].breakdown, None, "not in the record");
    }

    #[test]
    fn unknown_strings_do_not_read_back() {
        let mut v = serde_json::to_value(OomRecord::Kill(reported())).unwrap();
        v["constraint"] = "memory".into();
        assert!(serde_json::from_value::<OomRecord>(v).is_err());
        assert_eq!(Skip::Pending.to_string(), "earlier OOM victim still exiting");
    }

    const JSON: &str = r#"{"type":"oom_kill","time":"2026-11-22T02:19:37.449Z","decision_id":7000,
"constraint":"memcg","constraint_source":"oom_control,
 found on the OOM-invoking task's kernel stack at oom:mark_victim","domain":{"kind":"memcg",
"memcg":"/svc/job","memcg_limit_kb":131072,"memcg_usage_kb":131072,"totalpages":32768,
"totalpages_kb":131072,
"totalpages_source":"totalpages is oom_control.totalpages = the OOM memcg's limit (memory.max or
 limit_in_bytes, plus any swap allowance)"},"order":0,"gfp_mask":"0x140cca",
"gfp_flags":["GFP_HIGHUSER_MOVABLE","__GFP_COMP"],"victim":{"pid":100,"tgid":100,"comm":"victim",
"uid":1000,"oom_score_adj":900,"rss_anon_kb":16384,"rss_file_kb":1840,"rss_shmem_kb":0,"swap_kb":0,
"pgtables_kb":80,"total_vm_kb":20000,"cgroup":"/svc/job","cgroup_id":42,"points":33376,
"points_source":"kernel: oom_control.chosen_points","points_breakdown":{"rss_pages":4556,
"swap_pages":0,"pgtables_pages":20,"oom_score_adj":900,"adj_unit_pages":32,"adj_pages":28800,
"total":33376}},"trigger":{"pid":201,"tgid":200,"comm":"grower","cgroup":"/svc/job"},
"group_kills":[],"candidates_method":{"method":"task walk at oom:mark_victim","exact":false,
"detail":"the OOM domain's processes walked in BPF right after the kernel chose the victim,
 recomputing oom_badness() (rss + swap + page tables + adj x totalpages/1000) with the kernel's
 totalpages. Race: counters are read microseconds after the kernel's own scan,
 so a score can differ by what a process touched or freed in between,
 and processes that forked or exited in between differ","candidates":4,"lost":0,
"lost_reasons":{"ring_full":0,"walk_limit":0,"agent_evicted":0,"not_received":0}},
"candidates":[{"pid":100,"tgid":100,"comm":"victim","cgroup":"/svc/job","cgroup_id":0,
"points":33376,"oom_score_adj":900,"rss_kb":18224,"rss_anon_kb":16384,"rss_file_kb":1840,
"rss_shmem_kb":0,"swap_kb":0,"pgtables_kb":80,"skipped":null,"victim":true},{"pid":200,"tgid":200,
"comm":"grower","cgroup":"/named/0","cgroup_id":0,"points":14480,"oom_score_adj":0,"rss_kb":57840,
"rss_anon_kb":56000,"rss_file_kb":1840,"rss_shmem_kb":0,"swap_kb":0,"pgtables_kb":80,"skipped":null,
"victim":false},{"pid":300,"tgid":300,"comm":"small","cgroup":"/named/0","cgroup_id":0,
"points":2528,"oom_score_adj":0,"rss_kb":10032,"rss_anon_kb":8192,"rss_file_kb":1840,
"rss_shmem_kb":0,"swap_kb":0,"pgtables_kb":80,"skipped":null,"victim":false},{"pid":400,"tgid":400,
"comm":"protected","cgroup":"/named/0","cgroup_id":0,"points":null,"oom_score_adj":-1000,
"rss_kb":201840,"rss_anon_kb":200000,"rss_file_kb":1840,"rss_shmem_kb":0,"swap_kb":0,
"pgtables_kb":80,"skipped":"oom_score_adj -1000","victim":false}],"reaper":{"victim_exit_ms":3.0,
"wake_reaper_ms":null,"start_reaping_ms":null,"finish_reaping_ms":null,"skip_reaping":0,
"summary":"victim exited 3 ms after the kill; the OOM reaper was not needed"},"retries":null,
"notes":["victim is not the largest process: pid 200 (grower) uses 56.6 MiB,
 the victim 17.9 MiB; its oom_score_adj +900 added 28800 pages (112.5 MiB-equivalent)",
"oom_score_adj -1000 protected pid 400 (protected, 197.1 MiB resident)",
"constraint memcg: /svc/job hit its limit of 128.0 MiB; the host had 20.00 GiB available",
"the trigger pid 200 (grower) was not chosen: its score was lower than the victim's"]}"#;
}
