//! The slab counting: cache discovery and the `--cache` filter, per-CPU cache slots with a
//! hash-map fallback, per-CPU caller rows written back to `CALLERS`, `--live` (object ->
//! allocating caller) and the process names and cgroup paths of new callers.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
};
use memtrace_common::{
    Family, TASK_COMM_LEN,
    slab::{
        CACHE_DENTRY, CACHE_INIT, CACHE_NAME_FAILED, CACHE_NAME_LEN, CACHE_SELECTED,
        CACHE_SIZE_ONLY, CacheCounters, CacheInfo, CallerCounts, CallerKey, DIRS_REGS,
        DIRS_SYSCALLS, MAX_FILTER, MemcgCache, S_CACHE_NAME_FAILED, S_CACHES_FULL, S_CALLERS_FULL,
        S_CGROUP_READ_FAILED, S_LIVE_FAILED, S_LIVE_HITS, S_LIVE_INSERTS, S_LIVE_MISSES,
        S_LIVE_REPLACED, cache_slot, caller_slot,
    },
    stats,
};

use super::{
    config::cfg,
    dirs::{dir_count, path_from_regs, path_from_syscall_hooks},
    maps::{
        CACHE_COUNTS, CACHE_INFO, CACHE_SLOTS_MAP, CALLER_SLOTS_MAP, CALLERS, CG_SCRATCH, CGROUPS,
        COMMS, FILTER, LIVE, MEMCG_CACHE, sc,
    },
};
use crate::shared::{
    emit::{get, is_self},
    kernel::{self, layout, read, read_ptr},
    maps::count,
};


/// Where a cache's identity comes from.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    /// `struct kmem_cache *` (BTF / raw tracepoint).
    Cache(*const u8),
    /// Classic tracepoint: the name from the record (None: the format has none) and
    /// bytes_alloc.
    Classic(Option<&'a [u8; CACHE_NAME_LEN]>, u32),
}

// ------------------------------------------------------------------------ the hot path

#[inline(always)]
pub(super) fn on_alloc(key: u64, src: Src, call_site: u64, ptr: impl Fn() -> u64) {
    let c = cfg();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let only = get(&c.tgid);
    if (only != 0 && tgid != only) || is_self(tgid) {
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
pub(super) fn on_free(key: u64, src: Src, ptr: impl Fn() -> u64) {
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
                if only == 0 && !is_self(kernel::current_tgid()) {
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
    let tgid = kernel::current_tgid();
    if (only != 0 && tgid != only) || is_self(tgid) {
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
        let y = get(&b[i]);
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
    let task = kernel::current_task() as u64;
    let cache = MEMCG_CACHE.get_ptr_mut(0);
    if let Some(m) = cache {
        // SAFETY: per-CPU value.
        let m = unsafe { &*m };
        if m.pid_tgid == pid_tgid && m.task == task {
            return m.memcg;
        }
    }
    let Ok(cset) = kernel::task_css_set(task as *const u8) else {
        return 0;
    };
    let memcg = kernel::css_set_memcg(cset).map_or(0, |p| p as u64);
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
    let mut comm = [0u8; TASK_COMM_LEN];
    if kernel::leader_comm(kernel::current_task(), &mut comm).is_err() {
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
    let Ok(cgrp) = kernel::css_cgroup(ck.memcg as *const u8) else {
        sc(S_CGROUP_READ_FAILED);
        return;
    };
    let id = kernel::cgroup_id(cgrp);
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
