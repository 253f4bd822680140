//! The slab family's maps. Names are listed in `memtrace_common::slab` (maps.rs) for the
//! agent.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use memtrace_common::{
    CgroupPath, TASK_COMM_LEN,
    slab::{
        CACHE_SLOTS, CALLER_SLOTS, CacheCounters, CacheInfo, CacheSlot, CallerCounts, CallerKey,
        CallerSlot, DirKey, DirScratch, FilterState, MemcgCache, PathArg, S_SLOTS,
    },
};

use crate::shared::maps::percpu_add;

/// What the kernel says about each cache key, read once.
#[map(name = "SLAB_CACHE_INFO")]
pub(super) static CACHE_INFO: HashMap<u64, CacheInfo> = HashMap::with_max_entries(4096, 0);

/// Allocations and frees per cache key (per CPU), direct-mapped by [`cache_slot`].
#[map(name = "SLAB_CACHE_SLOTS")]
pub(super) static CACHE_SLOTS_MAP: PerCpuArray<CacheSlot> = PerCpuArray::with_max_entries(CACHE_SLOTS, 0);

/// Per CPU: caller rows counted here first, written back to `CALLERS` when evicted.
#[map(name = "SLAB_CALLER_SLOTS")]
pub(super) static CALLER_SLOTS_MAP: PerCpuArray<CallerSlot> = PerCpuArray::with_max_entries(CALLER_SLOTS, 0);

/// Allocations and frees per cache key (per CPU) whose slot in `CACHE_SLOTS` is taken.
#[map(name = "SLAB_CACHE_COUNTS")]
pub(super) static CACHE_COUNTS: PerCpuHashMap<u64, CacheCounters> = PerCpuHashMap::with_max_entries(4096, 0);

/// Allocations and frees per cache x call site x process x memory cgroup (per CPU).
/// Sized by the agent.
#[map(name = "SLAB_CALLERS")]
pub(super) static CALLERS: PerCpuHashMap<CallerKey, CallerCounts> = PerCpuHashMap::with_max_entries(16384, 0);

/// Task name per process seen in `CALLERS`.
#[map(name = "SLAB_COMMS")]
pub(super) static COMMS: HashMap<u32, [u8; TASK_COMM_LEN]> = HashMap::with_max_entries(16384, 0);

/// Memory cgroup path per `CallerKey::memcg`, read once.
#[map(name = "SLAB_CGROUPS")]
pub(super) static CGROUPS: HashMap<u64, CgroupPath> = HashMap::with_max_entries(2048, 0);

/// `--live`: object pointer -> allocating caller. LRU: the oldest are evicted when full
/// (the agent derives evictions from inserts, hits and what is left). Sized by the agent.
#[map(name = "SLAB_LIVE")]
pub(super) static LIVE: LruHashMap<u64, CallerKey> = LruHashMap::with_max_entries(1024, 0);

/// Thread id -> its last path syscall (dentry context). LRU bounds dead threads.
#[map(name = "SLAB_DIR_THREAD")]
pub(super) static DIR_THREAD: LruHashMap<u32, PathArg> = LruHashMap::with_max_entries(16384, 0);

/// Dentry allocations per directory (per CPU).
#[map(name = "SLAB_DIRS")]
pub(super) static DIRS: PerCpuHashMap<DirKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

#[map(name = "SLAB_FILTER")]
pub(super) static FILTER: Array<FilterState> = Array::with_max_entries(1, 0);

#[map(name = "SLAB_STATS")]
pub(super) static SLAB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(S_SLOTS, 0);

#[map(name = "SLAB_DIR_SCRATCH")]
pub(super) static DIR_SCRATCH: PerCpuArray<DirScratch> = PerCpuArray::with_max_entries(1, 0);

/// Scratch word for [`btf_arg_bits`].
#[map(name = "SLAB_KEY_SCRATCH")]
pub(super) static KEY_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The memory cgroup of the task that ran last on each CPU (saves two reads per event).
#[map(name = "SLAB_MEMCG_CACHE")]
pub(super) static MEMCG_CACHE: PerCpuArray<MemcgCache> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SLAB_CG_SCRATCH")]
pub(super) static CG_SCRATCH: PerCpuArray<CgroupPath> = PerCpuArray::with_max_entries(1, 0);

/// Counts one event in slot `slot` (`S_*`) of `SLAB_STATS`.
#[inline(always)]
pub(super) fn sc(slot: u32) {
    percpu_add(&SLAB_STATS, slot, 1);
}
