//! Slab family: kmem_cache_alloc / kmem_cache_free counted in per-CPU maps keyed by the
//! cache (pointer from the BTF/raw tracepoint, name hash from the classic one) and by the
//! caller (call site, process, memory cgroup). Nothing is streamed per allocation.
//!
//! Extras: `--cache` filtering (a few compares for the other caches once the wanted caches
//! are found), `--live` (object pointer -> allocating caller, bounded LRU, so frees are
//! attributed to whoever allocated), and for dentries the directory of the thread's last
//! path syscall.

use core::ptr::{addr_of, read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user_str_bytes, bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use memtrace_common::{
    CgroupPath, Family, TASK_COMM_LEN,
    layout::ABSENT,
    slab::{
        AT_FDCWD, CACHE_DENTRY, CACHE_INIT, CACHE_NAME_FAILED, CACHE_NAME_LEN, CACHE_SELECTED,
        CACHE_SIZE_ONLY, CACHE_SLOTS, CALLER_SLOTS, CacheCounters, CacheInfo, CacheSlot,
        CallerCounts, CallerKey, CallerSlot, DIR_LEN, DIRS_REGS, DIRS_SYSCALLS, DirKey, DirScratch,
        FilterState, KEY_SIZE_ONLY, MAX_FILTER, MemcgCache, PATH_LEN, PathArg, S_CACHE_NAME_FAILED,
        S_CACHES_FULL, S_CALLERS_FULL, S_CGROUP_READ_FAILED, S_DIR_JOINED, S_DIR_NO_PATH,
        S_DIR_READ_FAILED, S_DIRS_FULL, S_LIVE_FAILED, S_LIVE_HITS, S_LIVE_INSERTS, S_LIVE_MISSES,
        S_LIVE_REPLACED, S_PATHS_RECORDED, S_SLOTS, SYS_ACCESS, SYS_FACCESSAT, SYS_FACCESSAT2,
        SYS_NEWFSTATAT, SYS_NEWLSTAT, SYS_NEWSTAT, SYS_OPEN, SYS_OPENAT, SYS_OPENAT2, SYS_STATX,
        SYS_TABLE_LEN, SlabConfig, cache_slot, caller_slot, name_hash,
    },
    stats,
};

use crate::{
    kernel::{self, get, layout, read, read_ptr},
    maps::count,
};

#[unsafe(no_mangle)]
static SLAB_CONFIG: SlabConfig = SlabConfig::DEFAULT;

#[inline(always)]
fn cfg() -> &'static SlabConfig {
    // SAFETY: a static the loader rewrites before load; never written at run time.
    unsafe { &*addr_of!(SLAB_CONFIG) }
}

/// What the kernel says about each cache key, read once.
#[map(name = "SLAB_CACHE_INFO")]
static CACHE_INFO: HashMap<u64, CacheInfo> = HashMap::with_max_entries(4096, 0);

/// Allocations and frees per cache key (per CPU), direct-mapped by [`cache_slot`].
#[map(name = "SLAB_CACHE_SLOTS")]
static CACHE_SLOTS_MAP: PerCpuArray<CacheSlot> = PerCpuArray::with_max_entries(CACHE_SLOTS, 0);

/// Per CPU: caller rows counted here first, written back to `CALLERS` when evicted.
#[map(name = "SLAB_CALLER_SLOTS")]
static CALLER_SLOTS_MAP: PerCpuArray<CallerSlot> = PerCpuArray::with_max_entries(CALLER_SLOTS, 0);

/// Allocations and frees per cache key (per CPU) whose slot in `CACHE_SLOTS` is taken.
#[map(name = "SLAB_CACHE_COUNTS")]
static CACHE_COUNTS: PerCpuHashMap<u64, CacheCounters> = PerCpuHashMap::with_max_entries(4096, 0);

/// Allocations and frees per cache x call site x process x memory cgroup (per CPU).
/// Sized by the agent.
#[map(name = "SLAB_CALLERS")]
static CALLERS: PerCpuHashMap<CallerKey, CallerCounts> = PerCpuHashMap::with_max_entries(16384, 0);

/// Task name per process seen in `CALLERS`.
#[map(name = "SLAB_COMMS")]
static COMMS: HashMap<u32, [u8; TASK_COMM_LEN]> = HashMap::with_max_entries(16384, 0);

/// Memory cgroup path per `CallerKey::memcg`, read once.
#[map(name = "SLAB_CGROUPS")]
static CGROUPS: HashMap<u64, CgroupPath> = HashMap::with_max_entries(2048, 0);

/// `--live`: object pointer -> allocating caller. LRU: the oldest are evicted when full
/// (the agent derives evictions from inserts, hits and what is left). Sized by the agent.
#[map(name = "SLAB_LIVE")]
static LIVE: LruHashMap<u64, CallerKey> = LruHashMap::with_max_entries(1024, 0);

/// Thread id -> its last path syscall (dentry context). LRU bounds dead threads.
#[map(name = "SLAB_DIR_THREAD")]
static DIR_THREAD: LruHashMap<u32, PathArg> = LruHashMap::with_max_entries(16384, 0);

/// Dentry allocations per directory (per CPU).
#[map(name = "SLAB_DIRS")]
static DIRS: PerCpuHashMap<DirKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

#[map(name = "SLAB_FILTER")]
static FILTER: Array<FilterState> = Array::with_max_entries(1, 0);

#[map(name = "SLAB_STATS")]
static SLAB_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(S_SLOTS, 0);

#[map(name = "SLAB_DIR_SCRATCH")]
static DIR_SCRATCH: PerCpuArray<DirScratch> = PerCpuArray::with_max_entries(1, 0);

/// Scratch word for [`btf_arg_bits`].
#[map(name = "SLAB_KEY_SCRATCH")]
static KEY_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The memory cgroup of the task that ran last on each CPU (saves two reads per event).
#[map(name = "SLAB_MEMCG_CACHE")]
static MEMCG_CACHE: PerCpuArray<MemcgCache> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SLAB_CG_SCRATCH")]
static CG_SCRATCH: PerCpuArray<CgroupPath> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn sc(slot: u32) {
    if let Some(p) = SLAB_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
}

/// Where a cache's identity comes from.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// `struct kmem_cache *` (BTF / raw tracepoint).
    Cache(*const u8),
    /// Classic tracepoint: the name from the record (None: the format has none) and
    /// bytes_alloc.
    Classic(Option<&'a [u8; CACHE_NAME_LEN]>, u32),
}

// ---------------------------------------------------------------- programs: allocations

/// `kmem_cache_alloc(call_site, ptr, struct kmem_cache *s, gfp_flags, node)` (6.1+).
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn slab_alloc_btf(ctx: BtfTracePointContext) -> i32 {
    let call_site: u64 = ctx.arg(0);
    let s = btf_arg_bits(&ctx, 2);
    on_alloc(s, Src::Cache(s as *const u8), call_site, || btf_void_arg(&ctx, 1));
    0
}

/// A `void *` argument: kernels before 6.18 refuse to load it from the context ("type
/// UNKNOWN is not a struct"), so it is read with a probe read, and only when needed.
#[inline(always)]
fn btf_void_arg(ctx: &BtfTracePointContext, n: usize) -> u64 {
    let slot = (ctx.as_ptr() as *const u64).wrapping_add(n);
    // SAFETY: the context is an array of u64 arguments; the helper tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(slot) }.unwrap_or(0)
}

/// A typed (BTF) pointer argument as plain bits: the verifier forbids hashing or shifting
/// the typed pointer itself, which the cache key needs. A round trip through map memory
/// (which the verifier does not type) is cheaper than a probe read.
#[inline(always)]
fn btf_arg_bits(ctx: &BtfTracePointContext, n: usize) -> u64 {
    let arg: *const u8 = ctx.arg(n);
    let Some(p) = KEY_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch word.
    unsafe {
        write_volatile(p as *mut *const u8, arg);
        read_volatile(p)
    }
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_alloc_raw(ctx: RawTracePointContext) -> i32 {
    let call_site: u64 = ctx.arg(0);
    let ptr: u64 = ctx.arg(1);
    let s: *const u8 = ctx.arg(2);
    on_alloc(s as u64, Src::Cache(s), call_site, || ptr);
    0
}

/// Classic `kmem:kmem_cache_alloc`: keyed by the name when the format has one (6.18),
/// else by the object size (6.1/6.12 formats carry no cache identity).
#[tracepoint(category = "kmem", name = "kmem_cache_alloc")]
pub fn slab_alloc_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets come from the tracepoint's format file.
    let call_site = unsafe { ctx.read_at::<u64>(get(&c.tp_alloc_call_site) as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let ptr = || unsafe { ctx.read_at::<u64>(get(&c.tp_alloc_ptr) as usize) }.unwrap_or(0);
    let size = unsafe { ctx.read_at::<u64>(get(&c.tp_alloc_bytes_alloc) as usize) }.unwrap_or(0);
    let loc = get(&c.tp_alloc_name);
    if loc != ABSENT {
        let mut name = [0u8; CACHE_NAME_LEN];
        classic_name(&ctx, loc, &mut name);
        on_alloc(name_hash(&name), Src::Classic(Some(&name), size as u32), call_site, ptr);
    } else {
        on_alloc(
            KEY_SIZE_ONLY | (size & 0xffff_ffff),
            Src::Classic(None, size as u32),
            call_site,
            ptr,
        );
    }
    0
}

// ---------------------------------------------------------------------- programs: frees

/// `kmem_cache_free(call_site, ptr, const struct kmem_cache *s)` (6.1+); frees are
/// attributed per cache, and with `--live` to the allocating caller: the call site is unused.
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn slab_free_btf(ctx: BtfTracePointContext) -> i32 {
    let s = btf_arg_bits(&ctx, 2);
    on_free(s, Src::Cache(s as *const u8), || btf_void_arg(&ctx, 1));
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_free_raw(ctx: RawTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    let s: *const u8 = ctx.arg(2);
    on_free(s as u64, Src::Cache(s), || ptr);
    0
}

/// Classic `kmem:kmem_cache_free`, which has the cache name since 5.12.
#[tracepoint(category = "kmem", name = "kmem_cache_free")]
pub fn slab_free_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets come from the tracepoint's format file.
    let ptr = || unsafe { ctx.read_at::<u64>(get(&c.tp_free_ptr) as usize) }.unwrap_or(0);
    let mut name = [0u8; CACHE_NAME_LEN];
    classic_name(&ctx, get(&c.tp_free_name), &mut name);
    on_free(name_hash(&name), Src::Classic(Some(&name), 0), ptr);
    0
}

/// Reads a `__data_loc char[]` field (low 16 bits: offset in the record).
#[inline(always)]
fn classic_name(ctx: &TracePointContext, loc_off: u32, out: &mut [u8; CACHE_NAME_LEN]) {
    // SAFETY: offset from the format file.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(loc_off as usize) }) else {
        return;
    };
    let src = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    // SAFETY: bpf_probe_read_kernel_str_bytes tolerates any address.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, out) };
}

// ---------------------------------------------------------- programs: path syscalls

#[inline(always)]
fn on_path(ctx: &TracePointContext, sys: usize) {
    let c = cfg();
    let pid_tgid = bpf_get_current_pid_tgid();
    let only = get(&c.tgid);
    if only != 0 && (pid_tgid >> 32) as u32 != only {
        return;
    }
    let (fo, dfo) = (get(&c.sys_filename[sys]), get(&c.sys_dfd[sys]));
    // SAFETY: offsets from the format file.
    let ptr = unsafe { ctx.read_at::<u64>(fo as usize) }.unwrap_or(0);
    if ptr == 0 {
        return;
    }
    let dfd = if dfo == ABSENT {
        AT_FDCWD
    } else {
        unsafe { ctx.read_at::<i64>(dfo as usize) }.unwrap_or(AT_FDCWD as i64) as i32
    };
    // SAFETY: plain helper.
    let ns = unsafe { bpf_ktime_get_ns() };
    let arg = PathArg { ptr, ns, dfd, sys: sys as u32 };
    if DIR_THREAD.insert(&(pid_tgid as u32), &arg, BPF_ANY as u64).is_ok() {
        sc(S_PATHS_RECORDED);
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_newfstatat")]
pub fn slab_path_newfstatat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_NEWFSTATAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_statx")]
pub fn slab_path_statx(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_STATX);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn slab_path_openat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_OPENAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn slab_path_openat2(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_OPENAT2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_faccessat")]
pub fn slab_path_faccessat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_FACCESSAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_faccessat2")]
pub fn slab_path_faccessat2(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_FACCESSAT2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_access")]
pub fn slab_path_access(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_ACCESS);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_newstat")]
pub fn slab_path_newstat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_NEWSTAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_newlstat")]
pub fn slab_path_newlstat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_NEWLSTAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn slab_path_open(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_OPEN);
    0
}

// ------------------------------------------------------------------------ the hot path

#[inline(always)]
fn on_alloc(key: u64, src: Src, call_site: u64, ptr: impl Fn() -> u64) {
    let c = cfg();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let only = get(&c.tgid);
    if only != 0 && tgid != only {
        return;
    }
    if !may_be_selected(key) {
        return;
    }
    let Some(cc) = counters(key, src) else { return };
    // SAFETY: this CPU's counter.
    unsafe { *cc.allocs += 1 };
    let flags = cc.flags;
    count(Family::Slab, stats::EVENTS);
    let ck = CallerKey { cache: key, call_site, memcg: current_memcg(pid_tgid), tgid, _pad: 0 };
    caller_add(&ck, true, true);
    if get(&c.live) != 0 {
        let ptr = ptr();
        match LIVE.insert(&ptr, &ck, BPF_NOEXIST as u64) {
            Ok(()) => sc(S_LIVE_INSERTS),
            Err(_) => {
                if LIVE.insert(&ptr, &ck, BPF_ANY as u64).is_ok() {
                    sc(S_LIVE_REPLACED);
                } else {
                    sc(S_LIVE_FAILED);
                }
            }
        }
    }
    if flags & CACHE_DENTRY != 0 {
        match get(&c.dirs) {
            DIRS_REGS => {
                if let Some((ptr, dfd)) = path_from_regs() {
                    dir_count(pid_tgid, ptr, dfd);
                }
            }
            DIRS_SYSCALLS => {
                if let Some((ptr, dfd)) = path_from_syscall_hooks(pid_tgid) {
                    dir_count(pid_tgid, ptr, dfd);
                }
            }
            _ => {}
        }
    }
}

#[inline(always)]
fn on_free(key: u64, src: Src, ptr: impl Fn() -> u64) {
    let c = cfg();
    if !may_be_selected(key) {
        return;
    }
    let Some(cc) = counters(key, src) else { return };
    let only = get(&c.tgid);
    if get(&c.live) != 0 {
        let ptr = ptr();
        // The object's allocating caller, whoever frees it (often an RCU callback).
        // SAFETY: the value is copied out at once.
        match unsafe { LIVE.get(&ptr) }.copied() {
            Some(k) => {
                let _ = LIVE.remove(&ptr);
                sc(S_LIVE_HITS);
                // SAFETY: this CPU's counter.
                unsafe { *cc.frees += 1 };
                count(Family::Slab, stats::EVENTS);
                caller_add(&k, false, false);
            }
            None => {
                sc(S_LIVE_MISSES);
                if only == 0 {
                    // SAFETY: this CPU's counter.
                    unsafe { *cc.frees += 1 };
                    count(Family::Slab, stats::EVENTS);
                }
            }
        }
        return;
    }
    // Frees run in whatever context releases the object (RCU callbacks, reclaim): they
    // count per cache; per caller only with --live.
    if only != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 != only {
        return;
    }
    // SAFETY: this CPU's counter.
    unsafe { *cc.frees += 1 };
    count(Family::Slab, stats::EVENTS);
}

/// With `--cache`: false once every wanted cache has a known key of this key's kind and
/// this key is none of them (a few compares, no map lookup but one array).
#[inline(always)]
fn may_be_selected(key: u64) -> bool {
    let n = get(&cfg().nfilter) as usize;
    if n == 0 {
        return true;
    }
    let Some(f) = FILTER.get_ptr(0) else {
        return true;
    };
    // Pointers have both top bits set; name hashes only the top one.
    let base = if key >> 62 == 3 { 0 } else { MAX_FILTER };
    let mut missing = false;
    for j in 0..MAX_FILTER {
        // SAFETY: array map value; slots are written once.
        let k = unsafe { read_volatile(&(*f).keys[base + j]) };
        if k == key {
            return true;
        }
        if j < n && k == 0 {
            missing = true;
        }
    }
    missing
}

/// This CPU's counters of a cache.
struct Ctr {
    allocs: *mut u64,
    frees: *mut u64,
    flags: u32,
}

/// This CPU's counters of a selected cache (None when not selected), discovering the cache
/// on first sight. An array slot first (no hashing); a hash map when the slot is taken.
#[inline(always)]
fn counters(key: u64, src: Src) -> Option<Ctr> {
    if let Some(s) = CACHE_SLOTS_MAP.get_ptr_mut(cache_slot(key)) {
        // SAFETY: this CPU's slot.
        let s = unsafe { &mut *s };
        if s.key == key {
            return (s.flags & CACHE_SELECTED != 0).then_some(Ctr {
                allocs: &mut s.allocs,
                frees: &mut s.frees,
                flags: s.flags,
            });
        }
        if s.key == 0 {
            let flags = cache_flags(key, src)?;
            s.allocs = 0;
            s.frees = 0;
            s.flags = flags;
            s.key = key;
            return (flags & CACHE_SELECTED != 0).then_some(Ctr {
                allocs: &mut s.allocs,
                frees: &mut s.frees,
                flags,
            });
        }
    }
    let p = match CACHE_COUNTS.get_ptr_mut(&key) {
        Some(p) => p,
        None => {
            let flags = cache_flags(key, src)?;
            let v = CacheCounters { allocs: 0, frees: 0, flags: flags | CACHE_INIT, _pad: 0 };
            if CACHE_COUNTS.insert(&key, &v, BPF_NOEXIST as u64).is_err()
                && CACHE_COUNTS.get_ptr(&key).is_none()
            {
                sc(S_CACHES_FULL);
                return None;
            }
            CACHE_COUNTS.get_ptr_mut(&key)?
        }
    };
    // SAFETY: per-CPU value of this key.
    let mut flags = unsafe { (*p).flags };
    if flags & CACHE_INIT == 0 {
        // Inserted by another CPU: this CPU's copy of the flags is not set yet.
        flags = cache_flags(key, src)? | CACHE_INIT;
        unsafe { (*p).flags = flags };
    }
    if flags & CACHE_SELECTED == 0 {
        return None;
    }
    // SAFETY: per-CPU value of this key.
    Some(unsafe { Ctr { allocs: &mut (*p).allocs, frees: &mut (*p).frees, flags } })
}

/// A cache's flags, read once per key (discovering it on first sight).
#[inline(always)]
fn cache_flags(key: u64, src: Src) -> Option<u32> {
    // SAFETY: copied out at once.
    if let Some(info) = unsafe { CACHE_INFO.get(&key) } {
        return Some(info.flags);
    }
    discover(key, src)?;
    // SAFETY: copied out at once.
    unsafe { CACHE_INFO.get(&key) }.map(|i| i.flags)
}

/// First sight of a cache key: read its name and sizes once, decide whether it is traced.
#[inline(always)]
fn discover(key: u64, src: Src) -> Option<()> {
    let l = layout();
    let mut info =
        CacheInfo { flags: 0, object_size: 0, size: 0, _pad: 0, name: [0; CACHE_NAME_LEN] };
    match src {
        Src::Cache(s) => {
            let ok = match read_ptr(s, get(&l.kmem_cache_name)) {
                // SAFETY: tolerates any address.
                Ok(np) => unsafe { bpf_probe_read_kernel_str_bytes(np, &mut info.name) }.is_ok(),
                Err(_) => false,
            };
            if !ok {
                info.flags |= CACHE_NAME_FAILED;
            }
            info.size = read::<u32>(s, get(&l.kmem_cache_size)).unwrap_or(0);
            info.object_size = read::<u32>(s, get(&l.kmem_cache_object_size)).unwrap_or(0);
        }
        Src::Classic(Some(name), size) => {
            info.name = *name;
            info.size = size;
            if name[0] == 0 {
                info.flags |= CACHE_NAME_FAILED;
            }
        }
        Src::Classic(None, size) => {
            info.size = size;
            info.flags |= CACHE_SIZE_ONLY;
        }
    }
    if info.flags & CACHE_NAME_FAILED != 0 {
        sc(S_CACHE_NAME_FAILED);
    }
    if name_is(&info.name, b"dentry\0") {
        info.flags |= CACHE_DENTRY;
    }
    let n = get(&cfg().nfilter) as usize;
    let mut slot = MAX_FILTER;
    if n == 0 {
        info.flags |= CACHE_SELECTED;
    } else if info.flags & (CACHE_SIZE_ONLY | CACHE_NAME_FAILED) == 0 {
        for j in 0..MAX_FILTER {
            if j < n && names_equal(&info.name, &cfg().names[j]) {
                info.flags |= CACHE_SELECTED;
                slot = j;
                break;
            }
        }
    }
    match CACHE_INFO.insert(&key, &info, BPF_NOEXIST as u64) {
        Ok(()) => {
            if slot < MAX_FILTER {
                publish(key, slot);
            }
        }
        Err(_) => {
            // SAFETY: only checking presence.
            if unsafe { CACHE_INFO.get(&key) }.is_none() {
                sc(S_CACHES_FULL);
                return None;
            }
        }
    }
    Some(())
}

/// Records the key of the `slot`th wanted cache. Only the CPU whose CACHE_INFO insert won
/// gets here for a key, so each slot is written once per kind.
#[inline(always)]
fn publish(key: u64, slot: usize) {
    let Some(f) = FILTER.get_ptr_mut(0) else {
        return;
    };
    let base = if key >> 62 == 3 { 0 } else { MAX_FILTER };
    // SAFETY: array map value; slot < MAX_FILTER.
    unsafe { write_volatile(&mut (*f).keys[(base + slot) & (2 * MAX_FILTER - 1)], key) };
}

#[inline(always)]
fn name_is(name: &[u8; CACHE_NAME_LEN], want: &[u8]) -> bool {
    for (i, w) in want.iter().enumerate() {
        if i >= CACHE_NAME_LEN || name[i] != *w {
            return false;
        }
    }
    true
}

#[inline(always)]
fn names_equal(a: &[u8; CACHE_NAME_LEN], b: &[u8; CACHE_NAME_LEN]) -> bool {
    for i in 0..CACHE_NAME_LEN {
        // SAFETY: reading our own static.
        let y = unsafe { read_volatile(&b[i]) };
        if a[i] != y {
            return false;
        }
        if y == 0 {
            return true;
        }
    }
    true
}

/// The current task's memory cgroup as a `cgroup_subsys_state *` (or its default
/// hierarchy cgroup without CONFIG_MEMCG); 0 when unreadable. Two reads, skipped while the
/// same task keeps running on this CPU.
#[inline(always)]
fn current_memcg(pid_tgid: u64) -> u64 {
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() };
    let cache = MEMCG_CACHE.get_ptr_mut(0);
    if let Some(m) = cache {
        // SAFETY: per-CPU value.
        let m = unsafe { &*m };
        if m.pid_tgid == pid_tgid && m.task == task {
            return m.memcg;
        }
    }
    let l = layout();
    let Ok(cset) = read_ptr(task as *const u8, get(&l.task_cgroups)) else {
        return 0;
    };
    let id = get(&l.memory_cgrp_id);
    let css = if id != ABSENT {
        read_ptr(cset, get(&l.css_set_subsys).wrapping_add(id.wrapping_mul(8)))
    } else {
        read_ptr(cset, get(&l.css_set_dfl_cgrp))
    };
    let memcg = css.map_or(0, |p| p as u64);
    if let Some(m) = cache {
        // SAFETY: per-CPU value.
        unsafe { *m = MemcgCache { pid_tgid, task, memcg } };
    }
    memcg
}

/// Adds one allocation or free to a caller row: in this CPU's slot for the row when it
/// holds it (no hashing), else the slot's previous row is written back to `CALLERS` and the
/// slot taken over. `current`: the row is the current task's (record its process name and
/// cgroup when the row is new).
#[inline(always)]
fn caller_add(ck: &CallerKey, alloc: bool, current: bool) {
    let Some(s) = CALLER_SLOTS_MAP.get_ptr_mut(caller_slot(ck)) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let s = unsafe { &mut *s };
    if s.key.cache == ck.cache
        && s.key.call_site == ck.call_site
        && s.key.memcg == ck.memcg
        && s.key.tgid == ck.tgid
    {
        if alloc {
            s.allocs += 1;
        } else {
            s.frees += 1;
        }
        let n = s.allocs + s.frees;
        // Processes rename themselves (exec, prctl): refresh the name at the 2^k-th event,
        // a bounded number of times.
        if current && n & (n - 1) == 0 {
            record_comm(ck.tgid);
        }
        return;
    }
    if s.allocs | s.frees != 0 {
        write_back(&s.key, s.allocs, s.frees);
    }
    // The new row exists in CALLERS from its first event on (the agent reads both).
    if CALLERS.get_ptr(ck).is_none() {
        let zero = CallerCounts { allocs: 0, frees: 0 };
        if CALLERS.insert(ck, &zero, BPF_NOEXIST as u64).is_ok() {
            if current {
                new_caller(ck);
            }
        } else if CALLERS.get_ptr(ck).is_none() {
            count(Family::Slab, stats::MAP_FULL);
            sc(S_CALLERS_FULL);
            s.allocs = 0;
            s.frees = 0;
            s.key = CallerKey::default();
            return;
        }
    }
    s.key = *ck;
    s.allocs = alloc as u64;
    s.frees = !alloc as u64;
}

#[inline(always)]
fn write_back(k: &CallerKey, allocs: u64, frees: u64) {
    if let Some(p) = CALLERS.get_ptr_mut(k) {
        // SAFETY: per-CPU value.
        unsafe {
            (*p).allocs += allocs;
            (*p).frees += frees;
        }
        return;
    }
    // Pruned by the agent meanwhile: counts from here on.
    let v = CallerCounts { allocs, frees };
    if CALLERS.insert(k, &v, BPF_NOEXIST as u64).is_err() {
        count(Family::Slab, stats::MAP_FULL);
        sc(S_CALLERS_FULL);
    }
}

/// The process name: the thread group leader's comm.
#[inline(always)]
fn record_comm(tgid: u32) {
    let l = layout();
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut comm = [0u8; TASK_COMM_LEN];
    let ok = match read_ptr(task, get(&l.task_group_leader)) {
        Ok(leader) => kernel::task_comm(leader, &mut comm).is_ok(),
        Err(_) => false,
    };
    if !ok {
        match bpf_get_current_comm() {
            Ok(c) => comm = c,
            Err(_) => return,
        }
    }
    let _ = COMMS.insert(&tgid, &comm, BPF_ANY as u64);
}

/// A new caller row: remember the process name and the cgroup path (once per cgroup; again
/// when a new cgroup reuses the memory of a removed one, told apart by the kernfs id).
#[inline(always)]
fn new_caller(ck: &CallerKey) {
    record_comm(ck.tgid);
    if ck.memcg == 0 {
        return;
    }
    let l = layout();
    let css = ck.memcg as *const u8;
    let cgrp = if get(&l.memory_cgrp_id) != ABSENT {
        match read_ptr(css, get(&l.css_cgroup)) {
            Ok(c) => c,
            Err(_) => {
                sc(S_CGROUP_READ_FAILED);
                return;
            }
        }
    } else {
        css
    };
    let id = read_ptr(cgrp, get(&l.cgroup_kn)).and_then(|kn| read::<u64>(kn, get(&l.kn_id)));
    // SAFETY: copied out at once.
    if let (Ok(id), Some(known)) = (id, unsafe { CGROUPS.get(&ck.memcg) }.map(|p| p.id)) {
        if id == known {
            return;
        }
    }
    let Some(out) = CG_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU scratch.
    let out = unsafe { &mut *out };
    kernel::cgroup_path(cgrp, out);
    let _ = CGROUPS.insert(&ck.memcg, out, BPF_ANY as u64);
}

/// [`DIRS_REGS`]: the running syscall's path argument and dirfd, from its saved user
/// registers. None when the task is not in a syscall that takes a path.
#[inline(always)]
fn path_from_regs() -> Option<(u64, i32)> {
    let l = layout();
    // SAFETY: plain helpers; the registers are read with probe reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let nr = read::<i32>(regs, get(&l.pt_regs_syscall_nr)).ok()?;
    if nr < 0 || nr as usize >= SYS_TABLE_LEN {
        sc(S_DIR_NO_PATH);
        return None;
    }
    // SAFETY: reading our own static.
    let enc = unsafe { read_volatile(&cfg().sys_table[nr as usize & (SYS_TABLE_LEN - 1)]) };
    if enc == 0 {
        sc(S_DIR_NO_PATH);
        return None;
    }
    let path_arg = ((enc & 0xf) as usize).wrapping_sub(1) & 7;
    let args = &l.pt_regs_args;
    let Some(off) = args.get(path_arg) else {
        return None;
    };
    let Ok(ptr) = read::<u64>(regs, get(off)) else {
        sc(S_DIR_READ_FAILED);
        return None;
    };
    let dfd_arg = (enc >> 4) as usize;
    let dfd = match args.get(dfd_arg.wrapping_sub(1) & 7) {
        Some(off) if dfd_arg != 0 => read::<u64>(regs, get(off)).map_or(AT_FDCWD, |v| v as i32),
        _ => AT_FDCWD,
    };
    Some((ptr, dfd))
}

/// [`DIRS_SYSCALLS`]: the path the thread's last path syscall passed, if recent.
#[inline(always)]
fn path_from_syscall_hooks(pid_tgid: u64) -> Option<(u64, i32)> {
    // SAFETY: copied out at once.
    let Some(arg) = (unsafe { DIR_THREAD.get(&(pid_tgid as u32)) }).copied() else {
        sc(S_DIR_NO_PATH);
        return None;
    };
    // SAFETY: plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: reading our own static.
    let max_age = unsafe { read_volatile(&cfg().dir_max_age_ns) };
    if now.wrapping_sub(arg.ns) > max_age {
        sc(S_DIR_NO_PATH);
        return None;
    }
    Some((arg.ptr, arg.dfd))
}

/// A dentry allocation: count it under the directory of the path `ptr` (user memory).
#[inline(always)]
fn dir_count(pid_tgid: u64, ptr: u64, dfd: i32) {
    let Some(s) = DIR_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let s = unsafe { &mut *s };
    // SAFETY: user pointer of the running syscall; the helper tolerates faults.
    let len = match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut s.path) } {
        Ok(b) => b.len(),
        Err(_) => {
            sc(S_DIR_READ_FAILED);
            return;
        }
    };
    // SAFETY: per-CPU scratch fields, written through volatile stores (see DirScratch).
    unsafe { write_volatile(&mut s.last, 0) };
    for i in 0..PATH_LEN {
        if i >= len {
            break;
        }
        if s.path[i] == b'/' {
            unsafe { write_volatile(&mut s.last, i as u64 + 1) };
        }
    }
    // 1 + last slash: "/a/b" -> 3 ("/a"), "/b" -> 1 ("/"), "b" -> 0 ("").
    let last = unsafe { read_volatile(&s.last) };
    let dlen = if last > 1 { last - 1 } else { last };
    s.key.tgid = (pid_tgid >> 32) as u32;
    s.key.dfd = dfd;
    for i in 0..DIR_LEN {
        s.key.dir[i] = if (i as u64) < dlen { s.path[i] } else { 0 };
    }
    match DIRS.get_ptr_mut(&s.key) {
        // SAFETY: per-CPU value.
        Some(p) => unsafe { *p += 1 },
        None => {
            if DIRS.insert(&s.key, &1u64, BPF_NOEXIST as u64).is_err() {
                match DIRS.get_ptr_mut(&s.key) {
                    Some(p) => unsafe { *p += 1 },
                    None => {
                        sc(S_DIRS_FULL);
                        return;
                    }
                }
            }
        }
    }
    sc(S_DIR_JOINED);
}
