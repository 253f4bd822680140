//! Reclaim stalls: the kinds of stall, the per-CPU log-linear latency histogram the BPF
//! programs aggregate into, and the record streamed for each slow stall.
//!
//! Bucket math lives here, in one `const fn`, so the BPF side and the agent bucket a
//! duration identically.

use crate::{CgroupPath, EventHeader, TASK_COMM_LEN};

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

/// Durations are bucketed in units of 2^UNIT_SHIFT ns (64 ns).
pub const UNIT_SHIFT: u32 = 6;
/// Linear sub-buckets per power of two: 2^SUB_BITS = 16, so a bucket is at most 1/16 of
/// its lower bound wide (relative error of a midpoint <= 1/32).
pub const SUB_BITS: u32 = 4;
pub const SUB: u64 = 1 << SUB_BITS;
/// Values below 2 * SUB units (2048 ns) get one bucket per unit.
pub const LINEAR: u64 = 2 * SUB;
/// Highest power of two (in units) with its own buckets: 2^30 units = 2^36 ns = 68.7 s.
/// Longer stalls land in the last bucket (the exact maximum is kept separately).
pub const TOP_MSB: u32 = 30;
/// Buckets: the linear run plus SUB per power of two from 2^(SUB_BITS+1) to 2^TOP_MSB.
pub const BUCKETS: usize = LINEAR as usize + (TOP_MSB - SUB_BITS) as usize * SUB as usize;

/// Index of the most significant set bit (v > 0), by binary search: no loops, no ctlz
/// (the BPF backend has no such instruction).
#[inline(always)]
pub const fn msb(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket of a duration in ns.
#[inline(always)]
pub const fn bucket(ns: u64) -> usize {
    let u = ns >> UNIT_SHIFT;
    if u < LINEAR {
        return u as usize;
    }
    let m = msb(u);
    if m > TOP_MSB {
        return BUCKETS - 1;
    }
    let sub = (u >> (m - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (m - SUB_BITS - 1) as usize * SUB as usize + sub as usize
}

/// Lowest duration (ns) of a bucket.
pub const fn bucket_low(idx: usize) -> u64 {
    if (idx as u64) < LINEAR {
        return (idx as u64) << UNIT_SHIFT;
    }
    let rel = idx as u64 - LINEAR;
    let m = (rel / SUB) as u32 + SUB_BITS + 1;
    let sub = rel % SUB;
    ((SUB + sub) << (m - SUB_BITS)) << UNIT_SHIFT
}

/// Width of a bucket in ns (the last bucket is open-ended; this is its nominal width).
pub const fn bucket_width(idx: usize) -> u64 {
    if (idx as u64) < LINEAR {
        return 1 << UNIT_SHIFT;
    }
    let m = ((idx as u64 - LINEAR) / SUB) as u32 + SUB_BITS + 1;
    (1u64 << (m - SUB_BITS)) << UNIT_SHIFT
}

/// Key of the in-kernel histograms: one per (kind, process, memory cgroup).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    pub kind: u32,
    pub tgid: u32,
    /// kernfs node id of the task's memory cgroup (st_ino of its directory).
    pub memcg_id: u64,
}

/// Per-CPU value of the in-kernel histograms.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hist {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
    /// comm of the process (its group leader), written when the entry is created.
    pub comm: [u8; TASK_COMM_LEN],
    pub buckets: [u32; BUCKETS],
}

/// Key of the per-thread begin timestamps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartKey {
    pub tid: u32,
    pub kind: u32,
}

/// A stall in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Start {
    pub ts_ns: u64,
    pub gfp_flags: u64,
    pub memcg_id: u64,
    pub order: i32,
    pub _pad: u32,
}

/// Per NUMA node kswapd activity (context, not stalls). Written only by that node's
/// kswapd thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KswapdNode {
    pub wakes: u64,
    pub sleeps: u64,
    /// Total time between wake and sleep.
    pub awake_ns: u64,
    /// Timestamp of the last wake, 0 while asleep.
    pub woke_ns: u64,
}

/// Nodes tracked in the kswapd array; higher node ids are not recorded.
pub const MAX_NODES: u32 = 64;

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

/// Global `RECLAIM_CONFIG` of the reclaim programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimConfig {
    /// Stream stalls at least this long (ns).
    pub min_latency_ns: u64,
    /// Only this process (tgid), 0 = all.
    pub filter_tgid: u32,
    /// 1 when `filter_memcg_id` applies.
    pub filter_memcg: u32,
    /// Only tasks in this memory cgroup or below (kernfs id of the cgroup directory).
    pub filter_memcg_id: u64,
    /// Classic tracepoint field offsets (tracefs format files) for the fallbacks.
    pub tp_begin_order: u32,
    pub tp_begin_gfp: u32,
    pub tp_end_nr: u32,
    pub tp_node_order: u32,
    pub tp_node_gfp: u32,
    pub tp_thr_nid: u32,
    pub tp_thr_delayed: u32,
    pub tp_thr_reason: u32,
    pub tp_kswapd_nid: u32,
    pub _pad: u32,
}

impl ReclaimConfig {
    /// Offsets of the 6.x tracepoint records; the agent overrides them from tracefs.
    pub const DEFAULT: ReclaimConfig = ReclaimConfig {
        min_latency_ns: 1_000_000,
        filter_tgid: 0,
        filter_memcg: 0,
        filter_memcg_id: 0,
        tp_begin_order: 8,
        tp_begin_gfp: 16,
        tp_end_nr: 8,
        tp_node_order: 12,
        tp_node_gfp: 16,
        tp_thr_nid: 8,
        tp_thr_delayed: 16,
        tp_thr_reason: 20,
        tp_kswapd_nid: 8,
        _pad: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msb_matches_leading_zeros() {
        for v in (1..5000u64).chain([u64::MAX, 1 << 63, (1 << 40) + 3, 0xdead_beef]) {
            assert_eq!(msb(v), 63 - v.leading_zeros(), "{v}");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        assert_eq!(BUCKETS, 448);
        let mut expect_low = 0;
        for i in 0..BUCKETS {
            let lo = bucket_low(i);
            let w = bucket_width(i);
            assert_eq!(lo, expect_low, "bucket {i} starts where {} ended", i.wrapping_sub(1));
            assert_eq!(bucket(lo), i, "low edge of {i}");
            if i + 1 < BUCKETS {
                assert_eq!(bucket(lo + w - 1), i, "high edge of {i}");
                assert_eq!(bucket(lo + w), i + 1);
            }
            if lo >= LINEAR << UNIT_SHIFT {
                // Log-linear: width at most 1/16 of the lower bound.
                assert!(w * SUB <= lo, "bucket {i}: width {w} low {lo}");
            }
            expect_low = lo + w;
        }
        // Top: 2^36 ns and beyond all go to the last bucket.
        assert_eq!(expect_low, 1 << (TOP_MSB + 1 + UNIT_SHIFT));
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket(1 << 40), BUCKETS - 1);
    }

    #[test]
    fn known_values() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(63), 0);
        assert_eq!(bucket(64), 1);
        assert_eq!(bucket(2047), 31);
        assert_eq!(bucket(2048), 32);
        // 1 ms = 1_000_000 ns = 15625 units: msb 13, sub (15625 >> 9) & 15 = 14.
        assert_eq!(bucket(1_000_000), 32 + (13 - 5) * 16 + 14);
        assert!(bucket_low(bucket(1_000_000)) <= 1_000_000);
        assert!(bucket_low(bucket(1_000_000)) + bucket_width(bucket(1_000_000)) > 1_000_000);
    }
}
