//! OOM records: `oom:mark_victim` kills with the decision that led to them (the OOM
//! domain's `oom_control`, every candidate's score), the reaper's progress and the
//! retries before the OOM.

use crate::{CgroupPath, EventHeader, Family, TASK_COMM_LEN, event_kind};

// Record kinds (`EventHeader::kind`) of the oom family.

/// [`OomKillEvent`].
pub const KIND_KILL: u32 = event_kind(Family::Oom, 1);
/// [`OomCandidateEvent`].
pub const KIND_CANDIDATE: u32 = event_kind(Family::Oom, 2);
/// [`OomReaperEvent`].
pub const KIND_REAPER: u32 = event_kind(Family::Oom, 3);
/// [`OomSelectDoneEvent`].
pub const KIND_SELECT_DONE: u32 = event_kind(Family::Oom, 4);

/// Bits of [`OomKillEvent::flags`].
pub const OOM_HAVE_TASK: u32 = 1 << 0;
pub const OOM_HAVE_MM: u32 = 1 << 1;
/// The victim had no mm (already exiting): rss fields are zero.
pub const OOM_NO_MM: u32 = 1 << 2;

/// Bits of [`OomKillEvent::dflags`]: where the decision's data came from.
/// `oom_control` read through the pointer passed to out_of_memory (fentry/kprobe).
pub const OOM_D_OC_ENTRY: u32 = 1 << 0;
/// `oom_control` found on the OOM-invoking task's kernel stack at mark_victim.
pub const OOM_D_OC_STACK: u32 = 1 << 1;
/// No `oom_control`: constraint and domain inferred from memcg usage against limits.
pub const OOM_D_INFERRED: u32 = 1 << 2;
/// Killed as a memory.oom.group member of [`OomKillEvent::decision`], not selected.
pub const OOM_D_GROUP_MEMBER: u32 = 1 << 3;
/// `oom_control.chosen` was empty: the kernel marked an exiting task without selecting.
pub const OOM_D_NO_SELECTION: u32 = 1 << 4;
/// `memcg_usage`, `memcg_max` and `oom_memcg` are valid.
pub const OOM_D_HAVE_MEMCG: u32 = 1 << 5;
/// `retry` holds the allocation retries of the OOM-invoking task.
pub const OOM_D_HAVE_RETRY: u32 = 1 << 6;
/// The candidate walk sent records for its first `max_walk` tasks only; the domain's
/// processes past them are counted in [`OomKillEvent::cand_unwalked`].
pub const OOM_D_WALK_TRUNCATED: u32 = 1 << 7;
/// The victim had PF_EXITING at the mark_victim tracepoint (already exiting before the
/// selection, or right after its SIGKILL: the two cannot be told apart there).
pub const OOM_D_VICTIM_EXITING: u32 = 1 << 8;
/// `gfp_mask`, `order`, `constraint` and `totalpages` are valid.
pub const OOM_D_HAVE_OC: u32 = 1 << 9;
/// `chosen_points` is the kernel's own score of the victim.
pub const OOM_D_HAVE_CHOSEN_POINTS: u32 = 1 << 10;
/// The victim was exiting (PF_EXITING) by the time the record was sent: its exit may have
/// come before the exit hook knew it as a victim.
pub const OOM_D_EXITING_AT_SEND: u32 = 1 << 11;
/// The walk did not get back to where it started (a task-list read failed, or the task
/// count passed the walk's loop bound): `cand_unwalked` is a lower bound.
pub const OOM_D_WALK_UNFINISHED: u32 = 1 << 12;

/// How the candidates of a decision were obtained ([`OomKillEvent::method`]).
pub const OOM_METHOD_NONE: u32 = 0;
/// oom_badness() return values captured by fexit while the task was in out_of_memory.
pub const OOM_METHOD_FEXIT: u32 = 1;
/// The same through kprobe + kretprobe.
pub const OOM_METHOD_KRETPROBE: u32 = 2;
/// A walk of the OOM domain's processes at oom:mark_victim, recomputing the formula.
pub const OOM_METHOD_WALK: u32 = 3;

/// `enum oom_constraint` values (include/linux/oom.h); `CONSTRAINT_UNKNOWN` when unread.
pub const CONSTRAINT_NONE: u32 = 0;
pub const CONSTRAINT_CPUSET: u32 = 1;
pub const CONSTRAINT_MEMORY_POLICY: u32 = 2;
pub const CONSTRAINT_MEMCG: u32 = 3;
pub const CONSTRAINT_UNKNOWN: u32 = u32::MAX;

/// Allocation retries of the OOM-invoking task before the OOM (oom:reclaim_retry_zone and
/// oom:compact_retry, kept per task in BPF). Page-allocator OOMs only: memcg charges retry
/// without these tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OomRetry {
    pub first_ns: u64,
    pub last_ns: u64,
    /// oom:reclaim_retry_zone hits (one per zone checked per retry loop).
    pub reclaim_events: u32,
    pub compact_events: u32,
    pub rrz_node: i32,
    pub rrz_zone_idx: i32,
    pub rrz_order: i32,
    pub rrz_no_progress_loops: i32,
    pub rrz_max_no_progress_loops: i32,
    pub rrz_wmark_check: u32,
    pub rrz_reclaimable: u64,
    pub rrz_available: u64,
    pub rrz_min_wmark: u64,
    pub cr_order: i32,
    pub cr_priority: i32,
    pub cr_result: i32,
    pub cr_retries: i32,
    pub cr_max_retries: i32,
    pub cr_ret: u32,
}

/// One `oom:mark_victim` hit, read at kill time, with the decision behind it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OomKillEvent {
    pub header: EventHeader,
    pub flags: u32,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_uid: u32,
    pub victim_oom_score_adj: i32,
    pub trigger_pid: u32,
    pub trigger_tgid: u32,
    pub _pad: u32,
    /// Pages (RSS counters of the victim's mm, as the kernel's get_mm_counter reads them).
    pub rss_anon: i64,
    pub rss_file: i64,
    pub rss_shmem: i64,
    pub swap_ents: i64,
    pub pgtables_bytes: i64,
    pub total_vm_pages: u64,
    pub victim_comm: [u8; TASK_COMM_LEN],
    pub trigger_comm: [u8; TASK_COMM_LEN],
    pub victim_cgroup: CgroupPath,
    pub trigger_cgroup: CgroupPath,

    // The decision.
    /// Id shared by the candidates, the group members and the reaper records of this OOM.
    pub decision: u64,
    /// `OOM_D_*` bits.
    pub dflags: u32,
    /// `enum oom_constraint`, or [`CONSTRAINT_UNKNOWN`].
    pub constraint: u32,
    pub order: i32,
    pub gfp_mask: u32,
    /// `oom_control.totalpages`: the size of the OOM domain in pages (memcg limit, or RAM
    /// plus swap), NOT the victim's size.
    pub totalpages: u64,
    /// `oom_control.chosen_points`: the kernel's score of the victim.
    pub chosen_points: i64,
    /// The OOM memcg's `memory` page counter (pages).
    pub memcg_usage: u64,
    pub memcg_max: u64,
    /// `task->flags` of the victim when marked (before the walk).
    pub victim_task_flags: u32,
    /// `OOM_METHOD_*`.
    pub method: u32,
    /// Candidate records sent (written to `OOM_CANDIDATES`), lost there (ring buffer
    /// full), and tasks visited (walk) or oom_badness() calls seen (exact). This record is
    /// sent after the last candidate: the agent knows how many to expect.
    pub cand_emitted: u32,
    pub cand_dropped: u32,
    pub cand_visited: u32,
    /// Walk only: processes of the OOM domain past the walk's `max_walk` tasks, counted
    /// without a record.
    pub cand_unwalked: u32,
    pub retry: OomRetry,
    /// The memcg whose limit was hit (memcg constraint).
    pub oom_memcg: CgroupPath,
}

/// Bits of [`OomCandidateEvent::flags`].
/// `points` is the kernel's own oom_badness() return value.
pub const CAND_EXACT: u32 = 1 << 0;
/// `points` is valid (eligible task).
pub const CAND_POINTS: u32 = 1 << 1;
/// Skipped: oom_score_adj is -1000 (OOM_SCORE_ADJ_MIN).
pub const CAND_SKIP_ADJ_MIN: u32 = 1 << 2;
/// Skipped: its mm has MMF_OOM_SKIP (already reaped, or exiting past the point of use).
pub const CAND_SKIP_OOM_SKIP: u32 = 1 << 3;
/// Skipped: in the middle of vfork (shares its parent's mm).
pub const CAND_SKIP_VFORK: u32 = 1 << 4;
/// Skipped: no thread with an mm (exited).
pub const CAND_SKIP_NO_MM: u32 = 1 << 5;
/// Skipped: an earlier OOM victim whose memory is already reaped.
pub const CAND_SKIP_OLD_VICTIM: u32 = 1 << 6;
/// An earlier OOM victim still exiting: the kernel aborts a selection that meets it.
pub const CAND_PENDING_VICTIM: u32 = 1 << 7;
/// Preferred by oom_task_origin (swapoff, ksm unmerge): scored LONG_MAX.
pub const CAND_ORIGIN: u32 = 1 << 8;
/// oom_badness() returned LONG_MIN for a reason not visible afterwards (raced).
pub const CAND_SKIP_OTHER: u32 = 1 << 9;
/// A kernel read failed while filling the record.
pub const CAND_READ_ERROR: u32 = 1 << 10;

/// One task the OOM killer evaluated (or would have, for the walk method).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OomCandidateEvent {
    pub header: EventHeader,
    pub decision: u64,
    pub points: i64,
    /// totalpages the score was computed with.
    pub totalpages: u64,
    pub rss_anon: i64,
    pub rss_file: i64,
    pub rss_shmem: i64,
    pub swap_ents: i64,
    pub pgtables_bytes: i64,
    pub pid: u32,
    pub tgid: u32,
    /// `CAND_*` bits.
    pub flags: u32,
    pub oom_score_adj: i32,
    /// kernfs id of the task's memcg (the cgroup directory's inode number), 0 if unread.
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// Phases of [`OomReaperEvent`].
pub const REAPER_WAKE: u32 = 1;
pub const REAPER_START: u32 = 2;
pub const REAPER_FINISH: u32 = 3;
pub const REAPER_SKIP: u32 = 4;
/// The victim task exited (sched:sched_process_exit).
pub const REAPER_EXIT: u32 = 5;

/// What happened to a victim after the kill.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomReaperEvent {
    pub header: EventHeader,
    /// The victim's decision when BPF knew it, else 0.
    pub decision: u64,
    pub pid: u32,
    pub phase: u32,
}

/// End of an out_of_memory() call seen by the exact hooks (kill or not).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomSelectDoneEvent {
    pub header: EventHeader,
    pub decision: u64,
    /// oom_badness() calls seen, candidate records emitted and lost.
    pub calls: u32,
    pub emitted: u32,
    pub dropped: u32,
    /// out_of_memory()'s return value.
    pub ret: u32,
}
