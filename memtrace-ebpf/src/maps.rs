//! Maps shared by every family.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use memtrace_common::{Family, stats};

/// Records for the agent. Sized by the agent at load time (`EVENTS` max_entries).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-family counters, see `memtrace_common::stats`.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::ENTRIES, 0);

#[inline(always)]
pub fn count(family: Family, slot: u32) {
    if let Some(p) = STATS.get_ptr_mut(stats::index(family, slot)) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}
