//! The slab family's maps: cache keys, per-cache and per-caller counters, the `--live`
//! and directory maps, and the maps' names.

use super::MAX_FILTER;

// Map names (the agent opens them by name). The BPF side's `#[map(name = "...")]` repeats
// these literals; a unit test (lib.rs) checks the two lists against each other.
pub const SLAB_CACHE_INFO: &str = "SLAB_CACHE_INFO";
pub const SLAB_CACHE_SLOTS: &str = "SLAB_CACHE_SLOTS";
pub const SLAB_CALLER_SLOTS: &str = "SLAB_CALLER_SLOTS";
pub const SLAB_CACHE_COUNTS: &str = "SLAB_CACHE_COUNTS";
pub const SLAB_CALLERS: &str = "SLAB_CALLERS";
pub const SLAB_COMMS: &str = "SLAB_COMMS";
pub const SLAB_CGROUPS: &str = "SLAB_CGROUPS";
pub const SLAB_LIVE: &str = "SLAB_LIVE";
pub const SLAB_DIR_THREAD: &str = "SLAB_DIR_THREAD";
pub const SLAB_DIRS: &str = "SLAB_DIRS";
pub const SLAB_FILTER: &str = "SLAB_FILTER";
pub const SLAB_STATS: &str = "SLAB_STATS";
pub const SLAB_DIR_SCRATCH: &str = "SLAB_DIR_SCRATCH";
pub const SLAB_KEY_SCRATCH: &str = "SLAB_KEY_SCRATCH";
pub const SLAB_MEMCG_CACHE: &str = "SLAB_MEMCG_CACHE";
pub const SLAB_CG_SCRATCH: &str = "SLAB_CG_SCRATCH";

/// Every map of the family.
pub const MAP_NAMES: &[&str] = &[
    SLAB_CACHE_INFO,
    SLAB_CACHE_SLOTS,
    SLAB_CALLER_SLOTS,
    SLAB_CACHE_COUNTS,
    SLAB_CALLERS,
    SLAB_COMMS,
    SLAB_CGROUPS,
    SLAB_LIVE,
    SLAB_DIR_THREAD,
    SLAB_DIRS,
    SLAB_FILTER,
    SLAB_STATS,
    SLAB_DIR_SCRATCH,
    SLAB_KEY_SCRATCH,
    SLAB_MEMCG_CACHE,
    SLAB_CG_SCRATCH,
];

/// Bytes of a cache name kept (`kmem_cache.name`; the longest on 6.x are ~26 bytes).
pub const CACHE_NAME_LEN: usize = 64;
/// Bytes of a directory recorded for dentry allocations.
pub const DIR_LEN: usize = 128;
/// Bytes of a syscall path argument read from user memory.
pub const PATH_LEN: usize = 256;

/// Cache keys of the classic tracepoint: FNV-1a hash of the name, with this bit set.
pub const KEY_NAME_HASH: u64 = 1 << 63;
/// Classic kmem_cache_alloc without a `name` field: the object size (bytes_alloc), with this
/// bit set. Such a key names no cache.
pub const KEY_SIZE_ONLY: u64 = 1 << 62;

/// FNV-1a over the bytes of a name up to its NUL (both sides hash the same way).
pub const fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < name.len() && i < CACHE_NAME_LEN {
        if name[i] == 0 {
            break;
        }
        h ^= name[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    (h >> 2) | KEY_NAME_HASH
}

/// `dfd` value meaning "relative to the current directory".
pub const AT_FDCWD: i32 = -100;

/// Bits of [`CacheInfo::flags`] and [`CacheCounters::flags`].
pub const CACHE_SELECTED: u32 = 1 << 0;
pub const CACHE_DENTRY: u32 = 1 << 1;
/// The name could not be read.
pub const CACHE_NAME_FAILED: u32 = 1 << 2;
/// The key names no cache ([`KEY_SIZE_ONLY`]).
pub const CACHE_SIZE_ONLY: u32 = 1 << 3;
/// Set in a CPU's [`CacheCounters`] once its flags were copied from [`CacheInfo`].
pub const CACHE_INIT: u32 = 1 << 31;

/// `CACHE_INFO` value: what the kernel says about a cache, read once per key.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CacheInfo {
    pub flags: u32,
    /// `kmem_cache.object_size` (0 when unknown).
    pub object_size: u32,
    /// `kmem_cache.size`, the slot an object takes (slabinfo's objsize; bytes_alloc).
    pub size: u32,
    pub _pad: u32,
    pub name: [u8; CACHE_NAME_LEN],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CacheInfo {}

/// `CACHE_COUNTS` per-CPU value, per cache key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheCounters {
    pub allocs: u64,
    pub frees: u64,
    /// Copy of the cache's flags for this CPU ([`CACHE_INIT`] once copied).
    pub flags: u32,
    pub _pad: u32,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CacheCounters {}

/// Entries of the per-CPU direct-mapped cache counters `CACHE_SLOTS` (a power of two).
pub const CACHE_SLOTS: u32 = 512;
/// Entries of the per-CPU write-back cache of caller rows `CALLER_SLOTS` (a power of two).
pub const CALLER_SLOTS: u32 = 64;

/// Slot of a cache key in `CACHE_SLOTS`.
pub const fn cache_slot(key: u64) -> u32 {
    ((key >> 6) ^ (key >> 15) ^ (key >> 27) ^ (key >> 45)) as u32 & (CACHE_SLOTS - 1)
}

/// `CACHE_SLOTS` per-CPU value: one cache's counters on this CPU, found by an array index
/// instead of a hash lookup; a key whose slot is taken falls back to `CACHE_COUNTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheSlot {
    /// 0: free.
    pub key: u64,
    pub allocs: u64,
    pub frees: u64,
    /// The cache's flags ([`CACHE_SELECTED`], [`CACHE_DENTRY`]).
    pub flags: u32,
    pub _pad: u32,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CacheSlot {}

/// Slot of a caller key in `CALLER_SLOTS`.
pub const fn caller_slot(k: &CallerKey) -> u32 {
    let h = k.call_site ^ k.cache.rotate_left(17) ^ k.memcg.rotate_left(31) ^ k.tgid as u64;
    ((h >> 3) ^ (h >> 13) ^ (h >> 29)) as u32 & (CALLER_SLOTS - 1)
}

/// `CALLER_SLOTS` per-CPU value: counts of a caller row not yet added to `CALLERS` (written
/// back when another row needs the slot). The agent adds both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallerSlot {
    pub key: CallerKey,
    pub allocs: u64,
    pub frees: u64,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CallerSlot {}

/// `CALLERS` key: who allocates objects of a cache (frees count here with `--live`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerKey {
    pub cache: u64,
    /// Return address in the allocator's caller (e.g. __d_alloc+0x29).
    pub call_site: u64,
    /// The task's memory cgroup: `cgroup_subsys_state *` (0 when unreadable).
    pub memcg: u64,
    pub tgid: u32,
    pub _pad: u32,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CallerKey {}

/// `CALLERS` per-CPU value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerCounts {
    pub allocs: u64,
    pub frees: u64,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CallerCounts {}

/// `DIR_THREAD` value: the path argument of a thread's last path syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PathArg {
    /// User pointer to the path.
    pub ptr: u64,
    /// `bpf_ktime_get_ns()` at syscall entry.
    pub ns: u64,
    pub dfd: i32,
    pub sys: u32,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PathArg {}

/// `DIRS` key: a directory dentry allocations were made for.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirKey {
    pub tgid: u32,
    /// The syscall's dirfd ([`AT_FDCWD`] for the current directory): relative `dir`s are
    /// resolved against it by the agent.
    pub dfd: i32,
    /// Directory part of the path (no trailing slash; "/" for the root; empty for a bare
    /// name), NUL padded; truncated paths end without NUL.
    pub dir: [u8; DIR_LEN],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DirKey {}

/// `MEMCG_CACHE` per-CPU value: the memory cgroup of the task that ran last on the CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemcgCache {
    pub pid_tgid: u64,
    pub task: u64,
    pub memcg: u64,
}

/// Per-CPU scratch for the directory join (too big for the BPF stack).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DirScratch {
    pub path: [u8; PATH_LEN],
    pub key: DirKey,
    /// Kept in map memory, not registers, so that the verifier does not follow every
    /// possible value through the byte loops (1 + index of the last '/', 0 for none).
    pub last: u64,
}

/// `FILTER` (one entry): keys of the `--cache` caches found so far, so that events of
/// other caches return after a few compares. Slot `j` holds the pointer key of the `j`th
/// name, slot `MAX_FILTER + j` its name-hash key (classic tracepoint).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterState {
    pub keys: [u64; 2 * MAX_FILTER],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FilterState {}

/// Slots of the per-CPU array `SLAB_STATS` (beyond the family's `STATS`).
pub const S_LIVE_INSERTS: u32 = 0;
/// Frees whose pointer was in the live map (attributed to the allocating caller).
pub const S_LIVE_HITS: u32 = 1;
/// Frees of objects not in the live map (allocated before tracing, or evicted).
pub const S_LIVE_MISSES: u32 = 2;
/// Allocations of a pointer still in the live map (its free was not seen).
pub const S_LIVE_REPLACED: u32 = 3;
pub const S_LIVE_FAILED: u32 = 4;
/// Dentry allocations joined with a path syscall of the same thread.
pub const S_DIR_JOINED: u32 = 5;
/// Dentry allocations without a recent path syscall in the thread.
pub const S_DIR_NO_PATH: u32 = 6;
pub const S_DIR_READ_FAILED: u32 = 7;
pub const S_DIRS_FULL: u32 = 8;
pub const S_PATHS_RECORDED: u32 = 9;
pub const S_CACHE_NAME_FAILED: u32 = 10;
pub const S_CACHES_FULL: u32 = 11;
pub const S_CALLERS_FULL: u32 = 12;
pub const S_CGROUP_READ_FAILED: u32 = 13;
pub const S_SLOTS: u32 = 16;
