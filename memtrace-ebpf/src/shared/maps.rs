//! Maps shared by every family: the ring buffer and the per-family counters, and the
//! helpers that write a record to a ring buffer (the shared one or a family's own) and
//! count it.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use memtrace_common::{Family, stats};

/// Records for the agent, shared by the families that have no ring buffer of their own.
/// The size here is a placeholder: the agent sets every ring buffer's size at load
/// (memtrace/src/engine/rings.rs).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 12, 0);

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

/// Counts a record sent to a ring buffer (SENT), and its loss (RINGBUF_DROPS) when it did
/// not fit.
#[inline(always)]
fn sent(family: Family, written: bool) {
    count(family, stats::SENT);
    if !written {
        count(family, stats::RINGBUF_DROPS);
    }
}

/// Room for one `T` record in `ring`; when the ring buffer is full, None and the loss
/// counted as the family's RINGBUF_DROPS. The entry must be submitted.
#[inline(always)]
pub fn reserve_on<T: 'static>(ring: &RingBuf, family: Family) -> Option<RingBufEntry<T>> {
    let entry = ring.reserve::<T>(0);
    sent(family, entry.is_some());
    entry
}

/// Room for one `T` record in the shared `EVENTS`, see [`reserve_on`].
#[inline(always)]
pub fn reserve<T: 'static>(family: Family) -> Option<RingBufEntry<T>> {
    reserve_on(&EVENTS, family)
}

/// Copies `v` into `ring` (for records built elsewhere, e.g. in per-CPU scratch); false
/// and the loss counted when the ring buffer is full.
#[inline(always)]
pub fn output_on<T>(ring: &RingBuf, family: Family, v: &T) -> bool {
    let written = ring.output::<T>(v, 0).is_ok();
    sent(family, written);
    written
}
