//! The per-CPU log-linear latency histograms the reclaim programs aggregate into, the
//! other maps' keys and values, and the maps' names.
//!
//! Bucket math lives here, in one `const fn`, so the BPF side and the agent bucket a
//! duration identically.

use crate::TASK_COMM_LEN;

// Map names (the agent opens them by name). The BPF side's `#[map(name = "...")]` repeats
// these literals; a unit test (lib.rs) checks the two lists against each other.
pub const RECLAIM_START: &str = "RECLAIM_START";
pub const RECLAIM_HIST0: &str = "RECLAIM_HIST0";
pub const RECLAIM_HIST1: &str = "RECLAIM_HIST1";
pub const RECLAIM_SWITCH: &str = "RECLAIM_SWITCH";
pub const RECLAIM_ZERO: &str = "RECLAIM_ZERO";
pub const RECLAIM_THROTTLE: &str = "RECLAIM_THROTTLE";
pub const RECLAIM_KSWAPD: &str = "RECLAIM_KSWAPD";
pub const RECLAIM_INFLIGHT: &str = "RECLAIM_INFLIGHT";

/// Every map of the family.
pub const MAP_NAMES: &[&str] = &[
    RECLAIM_START,
    RECLAIM_HIST0,
    RECLAIM_HIST1,
    RECLAIM_SWITCH,
    RECLAIM_ZERO,
    RECLAIM_THROTTLE,
    RECLAIM_KSWAPD,
    RECLAIM_INFLIGHT,
];

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

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for HistKey {}

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

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Hist {}

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

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KswapdNode {}

/// Nodes tracked in the kswapd array; higher node ids are not recorded.
pub const MAX_NODES: u32 = 64;

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
