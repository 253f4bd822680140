//! The reclaim family's maps. Names are listed in `memtrace_common::reclaim` (maps.rs) for
//! the agent.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use memtrace_common::reclaim::{Hist, HistKey, KswapdNode, MAX_NODES, Start, StartKey};

/// Stalls in progress, per thread and kind. Sized for every thread of a large machine
/// being in reclaim at once; an insert that fails is counted as MAP_FULL.
#[map(name = "RECLAIM_START")]
pub(super) static RECLAIM_START: HashMap<StartKey, Start> = HashMap::with_max_entries(16384, 0);

/// The two histogram buffers (max_entries set by the agent at load).
#[map(name = "RECLAIM_HIST0")]
pub(super) static RECLAIM_HIST0: PerCpuHashMap<HistKey, Hist> = PerCpuHashMap::with_max_entries(1024, 0);
#[map(name = "RECLAIM_HIST1")]
pub(super) static RECLAIM_HIST1: PerCpuHashMap<HistKey, Hist> = PerCpuHashMap::with_max_entries(1024, 0);

/// Which histogram buffer programs write: index 0 holds 0 or 1. Written by the agent.
#[map(name = "RECLAIM_SWITCH")]
pub(super) static RECLAIM_SWITCH: Array<u32> = Array::with_max_entries(1, 0);

/// Per CPU: programs between reading `RECLAIM_SWITCH` and finishing their histogram update
/// (nested ones included). After a flip the agent waits for every CPU's count to be seen
/// at zero before it reads the retired buffer.
#[map(name = "RECLAIM_INFLIGHT")]
pub(super) static RECLAIM_INFLIGHT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// One all-zero histogram, the source of new entries (a map value may be the value of
/// an update; a 1.8 KiB stack temporary may not). Never written.
#[map(name = "RECLAIM_ZERO")]
pub(super) static RECLAIM_ZERO: Array<Hist> = Array::with_max_entries(1, 0);

/// Throttle sleeps by reason bit (mm_vmscan_throttled reason, lowest set bit; slot 7 for
/// none): [2 * bit] = count, [2 * bit + 1] = ns slept.
#[map(name = "RECLAIM_THROTTLE")]
pub(super) static RECLAIM_THROTTLE: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);

/// kswapd wake/sleep per node.
#[map(name = "RECLAIM_KSWAPD")]
pub(super) static RECLAIM_KSWAPD: Array<KswapdNode> = Array::with_max_entries(MAX_NODES, 0);
