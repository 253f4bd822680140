//! Maps shared by every family: the ring buffer and the per-family counters.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use memtrace_common::{Family, stats};

/// Records for the agent. Sized by the agent at load time (`EVENTS` max_entries).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-family counters, see `memtrace_common::stats`.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::ENTRIES, 0);

/// Adds `n` to slot `idx` of this CPU's copy of a per-CPU counter array.
#[inline(always)]
pub fn percpu_add(map: &PerCpuArray<u64>, idx: u32, n: u64) {
    if let Some(p) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += n };
    }
}

/// Counts one `slot` event (`memtrace_common::stats`) of `family`.
#[inline(always)]
pub fn count(family: Family, slot: u32) {
    percpu_add(&STATS, stats::index(family, slot), 1);
}

/// Room for one `T` record in `EVENTS`; when the ring buffer is full, None and the loss
/// counted as the family's RINGBUF_DROPS.
#[inline(always)]
pub fn reserve<T: 'static>(family: Family) -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(family, stats::RINGBUF_DROPS);
    }
    entry
}
