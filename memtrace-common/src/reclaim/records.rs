//! The record streamed for each slow reclaim stall, and the kinds of stall.

use crate::{CgroupPath, EventHeader, Family, TASK_COMM_LEN, event_kind};

/// Record kind (`EventHeader::kind`) of [`ReclaimStallEvent`]. Not to be confused with
/// the stall kinds below (`KIND_DIRECT`...), which say what the task was stalled in.
pub const KIND_STALL: u32 = event_kind(Family::Reclaim, 1);

/// What the task was stalled in. Stable numbers (they key the kernel maps).
pub const KIND_DIRECT: u32 = 0;
/// Memory cgroup reclaim: limit (v1 limit_in_bytes / v2 memory.max), memory.high,
/// memory.reclaim.
pub const KIND_MEMCG: u32 = 1;
/// cgroup v1 soft-limit reclaim (inside kswapd or direct reclaim).
pub const KIND_SOFTLIMIT: u32 = 2;
/// Node reclaim (vm.zone_reclaim_mode != 0).
pub const KIND_NODE: u32 = 3;
/// Direct compaction: one compact_zone run of an allocating task.
pub const KIND_COMPACTION: u32 = 4;
/// reclaim_throttle() sleeps (mm_vmscan_throttled): writeback, isolation, no progress.
pub const KIND_THROTTLE: u32 = 5;
/// memory.high enforcement on return to user space (reclaim plus penalty sleep).
pub const KIND_HIGH: u32 = 6;
pub const KINDS: u32 = 7;

pub const fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_DIRECT => "direct",
        KIND_MEMCG => "memcg",
        KIND_SOFTLIMIT => "softlimit",
        KIND_NODE => "node",
        KIND_COMPACTION => "compaction",
        KIND_THROTTLE => "throttle",
        KIND_HIGH => "high",
        _ => "unknown",
    }
}

/// Bits of [`ReclaimStallEvent::flags`].
pub const STALL_READ_ERROR: u32 = 1 << 0;
/// order / gfp_flags are not known for this kind.
pub const STALL_NO_ALLOC_INFO: u32 = 1 << 1;

/// One stall at or above `--min-latency`, with its context.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReclaimStallEvent {
    pub header: EventHeader,
    pub kind: u32,
    pub flags: u32,
    pub tid: u32,
    pub tgid: u32,
    pub order: i32,
    /// mm_vmscan_throttled reason bits (throttle kind), else 0.
    pub reason: u32,
    pub gfp_flags: u64,
    pub nr_reclaimed: u64,
    pub duration_ns: u64,
    pub memcg_id: u64,
    /// Thread and process (group leader) names.
    pub comm: [u8; TASK_COMM_LEN],
    pub leader_comm: [u8; TASK_COMM_LEN],
    pub cgroup: CgroupPath,
}
