//! The shmem bodies: pages counted per inode, per (inode, writer) and per task, from the
//! exact allocation hooks, the LRU-insertion fallback (with the NR_SHMEM runs of runs.rs)
//! and the free hooks.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    programs::TracePointContext,
};
use memtrace_common::{
    Family, TASK_COMM_LEN,
    layout::ABSENT,
    shmem::{
        CpuRun, DevStats, HOW_CPU_RUN, HOW_DRAIN_TASK, HOW_EXACT, InodeKey, KIND_TASK,
        RT_ALLOC_EXACT_SEEN, RT_NR_SHMEM_SEEN, SHMEM_NAME_LEN, ShmemTaskEvent,
        TASK_FROM_ALLOC_HOOK, TASK_FROM_NR_SHMEM, TaskStats, WriterKey, WriterStats, counter,
    },
    stats,
};

use super::{
    config::cfg,
    maps::{
        SHMEM_DEVS, SHMEM_FOLIOS, SHMEM_INODES, SHMEM_SCRATCH, SHMEM_TASKS, SHMEM_WRITERS, add,
        bump, runtime, set_runtime,
    },
    runs::{extend_run, peek_run, pop_run, push_run},
};
use crate::shared::{
    emit::{get, header, is_self, now},
    kernel::{self, flag_set, layout, read_ptr},
    maps::{count, reserve},
};

/// Who allocated a folio.
#[derive(Clone, Copy)]
pub(super) struct Owner {
    pub(super) tgid: u32,
    pub(super) pid: u32,
    pub(super) cgroup_id: u64,
    pub(super) comm: [u8; TASK_COMM_LEN],
}

/// The current task's memory cgroup.
#[inline(always)]
fn current_memcg_cgroup() -> Option<*const u8> {
    kernel::task_memcg(kernel::current_task()).ok()
}

#[inline(always)]
fn current_owner() -> Owner {
    current_owner_in(bpf_get_current_pid_tgid(), current_memcg_cgroup())
}

/// The current task with the given memory cgroup.
#[inline(always)]
fn current_owner_in(pid_tgid: u64, cgrp: Option<*const u8>) -> Owner {
    let comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
    let cgroup_id = cgrp.and_then(|c| kernel::cgroup_id(c).ok()).unwrap_or(0);
    Owner { tgid: (pid_tgid >> 32) as u32, pid: pid_tgid as u32, cgroup_id, comm }
}

#[inline(always)]
fn run_owner(r: &CpuRun) -> Owner {
    Owner { tgid: r.tgid, pid: r.pid, cgroup_id: r.cgroup_id, comm: r.comm }
}

/// Sends the cgroup path of a task seen for the first time (the cgroup may be gone later).
#[inline(always)]
fn emit_task(o: &Owner, cgrp: Option<*const u8>) {
    let Some(mut entry) = reserve::<ShmemTaskEvent>(Family::Shmem) else { return };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved record of our type; every field is written before submit.
    unsafe {
        header(&mut (*ev).header, KIND_TASK);
        (*ev).tgid = o.tgid;
        (*ev).pid = o.pid;
        (*ev).cgroup_id = o.cgroup_id;
        (*ev).comm = o.comm;
        match cgrp {
            Some(c) => kernel::cgroup_path(c, &mut (*ev).cgroup),
            None => kernel::cgroup_unavailable(&mut (*ev).cgroup),
        }
    }
    entry.submit(0);
}

/// Adds pages to a known task's totals; false when the task has no entry yet.
#[inline(always)]
fn task_add(tgid: u32, added: u64, removed: u64) -> bool {
    let Some(p) = SHMEM_TASKS.get_ptr_mut(&tgid) else { return false };
    // SAFETY: map value pointer.
    unsafe {
        if added > 0 {
            add(&raw mut (*p).added_pages, added);
        }
        if removed > 0 {
            add(&raw mut (*p).removed_pages, removed);
        }
        (*p).last_ns = now();
    }
    true
}

/// A task seen adding shmem pages for the first time: its entry, and its cgroup path for
/// the agent. memtrace itself gets none (its pages still count per file and mount).
#[inline(always)]
fn task_insert(o: &Owner, added: u64, source: u32, cgrp: Option<*const u8>) {
    if is_self(o.tgid) {
        return;
    }
    let t = now();
    let v = TaskStats {
        added_pages: added,
        removed_pages: 0,
        first_ns: t,
        last_ns: t,
        cgroup_id: o.cgroup_id,
        pid: o.pid,
        source,
        comm: o.comm,
    };
    match SHMEM_TASKS.insert(&o.tgid, &v, BPF_NOEXIST as u64) {
        Ok(()) => emit_task(o, cgrp),
        Err(_) => {
            // Another CPU inserted it first, or the map is full.
            if !task_add(o.tgid, added, 0) {
                count(Family::Shmem, stats::MAP_FULL);
            }
        }
    }
}

/// Makes sure the superblock is known (the classic free tracepoint filters on it).
#[inline(always)]
fn dev_register(dev: u32) {
    if SHMEM_DEVS.get_ptr(&dev).is_none() {
        let zero = DevStats { unseen_freed_pages: 0 };
        let _ = SHMEM_DEVS.insert(&dev, &zero, BPF_NOEXIST as u64);
    }
}

/// Pages freed from an inode memtrace never saw allocating (allocated before it started).
#[inline(always)]
fn dev_unseen(dev: u32, pages: u64) {
    dev_register(dev);
    match SHMEM_DEVS.get_ptr_mut(&dev) {
        // SAFETY: map value pointer.
        Some(p) => add(unsafe { &raw mut (*p).unseen_freed_pages }, pages),
        None => count(Family::Shmem, stats::MAP_FULL),
    }
}

/// Counts `nr` pages allocated into `inode` (key `dev`, `ino`) by task `tgid`; `owner` is
/// called only when a new writer entry needs the task's name and cgroup.
#[inline(always)]
fn record_alloc(
    inode: *const u8,
    dev: u32,
    ino: u64,
    nr: u64,
    tgid: u32,
    how: u32,
    owner: impl Fn() -> Owner,
) {
    let t = now();
    let key = InodeKey { dev, _pad: 0, ino };
    bump(counter::ALLOC_FOLIOS, 1);
    match SHMEM_INODES.get_ptr_mut(&key) {
        Some(p) => {
            // SAFETY: map value pointer.
            unsafe {
                add(&raw mut (*p).alloc_pages, nr);
                (*p).last_ns = t;
            }
        }
        None => {
            if let Some(s) = SHMEM_SCRATCH.get_ptr_mut(0) {
                // SAFETY: per-CPU scratch, fully written before use.
                let s = unsafe { &mut *s };
                s.alloc_pages = nr;
                s.freed_pages = 0;
                s.first_ns = t;
                s.last_ns = t;
                s.name = [0; SHMEM_NAME_LEN];
                let _ = kernel::inode_name(inode, &mut s.name);
                dev_register(dev);
                if SHMEM_INODES.insert(&key, s, BPF_NOEXIST as u64).is_err() {
                    match SHMEM_INODES.get_ptr_mut(&key) {
                        // SAFETY: map value pointer (inserted concurrently).
                        Some(p) => add(unsafe { &raw mut (*p).alloc_pages }, nr),
                        None => count(Family::Shmem, stats::MAP_FULL),
                    }
                }
            }
        }
    }
    if is_self(tgid) {
        // memtrace's own pages count for the file, under no writer.
        return;
    }
    let wkey = WriterKey { dev, tgid, ino };
    match SHMEM_WRITERS.get_ptr_mut(&wkey) {
        Some(p) => {
            // SAFETY: map value pointer.
            unsafe {
                add(&raw mut (*p).alloc_pages, nr);
                (*p).last_ns = t;
                if how > (*p).how {
                    (*p).how = how;
                }
            }
        }
        None => {
            let o = owner();
            let w = WriterStats {
                alloc_pages: nr,
                first_ns: t,
                last_ns: t,
                cgroup_id: o.cgroup_id,
                pid: o.pid,
                how,
                comm: o.comm,
            };
            if SHMEM_WRITERS.insert(&wkey, &w, BPF_NOEXIST as u64).is_err() {
                match SHMEM_WRITERS.get_ptr_mut(&wkey) {
                    // SAFETY: map value pointer (inserted concurrently).
                    Some(p) => add(unsafe { &raw mut (*p).alloc_pages }, nr),
                    None => count(Family::Shmem, stats::MAP_FULL),
                }
            }
        }
    }
}

/// Counts `nr` pages freed from inode (`dev`, `ino`), in the freeing task's context.
#[inline(always)]
fn record_free(dev: u32, ino: u64, nr: u64, rt: u32) {
    let key = InodeKey { dev, _pad: 0, ino };
    match SHMEM_INODES.get_ptr_mut(&key) {
        Some(p) => {
            // SAFETY: map value pointer.
            unsafe {
                add(&raw mut (*p).freed_pages, nr);
                (*p).last_ns = now();
            }
        }
        None => {
            bump(counter::UNSEEN_FREED_PAGES, nr);
            dev_unseen(dev, nr);
        }
    }
    if rt & RT_NR_SHMEM_SEEN == 0 {
        // Without the NR_SHMEM hook, the free hook says who freed (tasks already known).
        let tgid = kernel::current_tgid();
        if let Some(p) = SHMEM_TASKS.get_ptr_mut(&tgid) {
            // SAFETY: map value pointer.
            unsafe {
                add(&raw mut (*p).removed_pages, nr);
                (*p).last_ns = now();
            }
        }
    }
}

/// The inode of a shmem mapping (`mapping->host`) and its (superblock dev_t, inode number).
#[inline(always)]
fn mapping_inode(mapping: *const u8) -> Result<(*const u8, u32, u64), i64> {
    let inode = read_ptr(mapping, get(&layout().mapping_host))?;
    let (dev, ino) = kernel::inode_key(inode)?;
    Ok((inode, dev, ino))
}

/// Counts `nr` pages allocated into an inode by the current task (process `tgid`),
/// identified `how`; `task_totals`: also add them to the task's totals (when no NR_SHMEM
/// hook keeps those).
#[inline(always)]
fn alloc_by_current(
    inode: *const u8,
    dev: u32,
    ino: u64,
    nr: u64,
    tgid: u32,
    how: u32,
    task_totals: bool,
) {
    record_alloc(inode, dev, ino, nr, tgid, how, || current_owner());
    if task_totals && !task_add(tgid, nr, 0) {
        task_insert(&current_owner(), nr, TASK_FROM_ALLOC_HOOK, current_memcg_cgroup());
    }
}

/// Counts `nr` pages allocated into an inode by the task of an NR_SHMEM run.
#[inline(always)]
fn alloc_by_run(inode: *const u8, dev: u32, ino: u64, nr: u64, r: &CpuRun) {
    record_alloc(inode, dev, ino, nr, r.tgid, HOW_CPU_RUN, || run_owner(r));
}

// ---------------------------------------------------------------------------------------
// Allocation, exact: shmem_add_to_page_cache(folio, mapping, index, ...) or the folio
// returned by shmem_alloc_and_add_folio.

/// A folio added to a shmem mapping in the allocating task's context.
#[inline(always)]
pub(super) fn try_added(folio: *const u8, mapping: *const u8) -> Result<(), i64> {
    count(Family::Shmem, stats::EVENTS);
    let rt = runtime();
    if rt & RT_ALLOC_EXACT_SEEN == 0 {
        set_runtime(RT_ALLOC_EXACT_SEEN);
    }
    let flags = kernel::folio_flags(folio)?;
    let nr = kernel::folio_nr_pages(folio, flags) as u64;
    let (inode, dev, ino) = mapping_inode(mapping)?;
    let tgid = kernel::current_tgid();
    alloc_by_current(inode, dev, ino, nr, tgid, HOW_EXACT, rt & RT_NR_SHMEM_SEEN == 0);
    Ok(())
}

#[inline(always)]
pub(super) fn read_failed(r: Result<(), i64>) {
    if r.is_err() {
        count(Family::Shmem, stats::READ_ERRORS);
    }
}

// ---------------------------------------------------------------------------------------
// Allocation, fallback: pagemap:mm_lru_insertion.

/// Shmem folio: swap-backed, not anonymous, not in the swap cache. Returns
/// (flags, mapping) with mapping possibly null (truncated).
#[inline(always)]
fn shmem_folio(folio: *const u8) -> Result<Option<(u64, *const u8)>, i64> {
    let l = layout();
    let flags = kernel::folio_flags(folio)?;
    if !flag_set(flags, get(&l.pg_swapbacked)) || flag_set(flags, get(&l.pg_swapcache)) {
        return Ok(None);
    }
    let mapping = read_ptr(folio, get(&l.folio_mapping))?;
    if (mapping as u64) & 1 != 0 {
        return Ok(None); // anonymous (or KSM)
    }
    Ok(Some((flags, mapping)))
}

#[inline(always)]
pub(super) fn try_lru(folio: *const u8) -> Result<(), i64> {
    let Some((flags, mapping)) = shmem_folio(folio)? else { return Ok(()) };
    count(Family::Shmem, stats::EVENTS);
    let nr = kernel::folio_nr_pages(folio, flags);
    let rt = runtime();
    let run = if rt & RT_NR_SHMEM_SEEN != 0 {
        match pop_run(nr) {
            Some(r) => Some(r),
            None => {
                // No NR_SHMEM increase pending on this CPU: a folio put back after
                // isolation or migration, not a new one.
                bump(counter::LRU_REINSERTED, 1);
                return Ok(());
            }
        }
    } else {
        None
    };
    if mapping.is_null() {
        // Truncated while waiting in the per-CPU batch: counted at the free.
        bump(counter::LRU_TRUNCATED, 1);
        return Ok(());
    }
    if run.is_none() && rt & RT_ALLOC_EXACT_SEEN == 0 {
        let key = folio as u64;
        if SHMEM_FOLIOS.get_ptr(&key).is_some() {
            bump(counter::LRU_REINSERTED, 1);
            return Ok(());
        }
        if SHMEM_FOLIOS.insert(&key, &1, BPF_NOEXIST as u64).is_err() {
            count(Family::Shmem, stats::MAP_FULL);
        }
    }
    let (inode, dev, ino) = mapping_inode(mapping)?;
    match run {
        Some(r) => {
            bump(counter::RUN_ATTRIBUTED, 1);
            alloc_by_run(inode, dev, ino, nr as u64, &r);
        }
        None => {
            // No NR_SHMEM runs: the task totals come from here.
            bump(counter::DRAIN_ATTRIBUTED, 1);
            let tgid = kernel::current_tgid();
            alloc_by_current(inode, dev, ino, nr as u64, tgid, HOW_DRAIN_TASK, true);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Who and how much: memcg:mod_memcg_lruvec_state(memcg, item, val), item NR_SHMEM, in the
// context of the task adding (or removing) the pages.

/// `memcg` (BTF tracepoints) or `id` (classic) names the charged memory cgroup. The common
/// case (the same task adding again on this CPU) reads nothing from the kernel: the task's
/// name and cgroup are read only for a new run or a new task.
#[inline(always)]
pub(super) fn try_nr_shmem(val: i32, memcg: Option<*const u8>, id: u64) {
    count(Family::Shmem, stats::EVENTS);
    bump(counter::NR_SHMEM_EVENTS, 1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let pages = val.unsigned_abs() as u64;
    if val < 0 {
        task_add(tgid, 0, pages);
        return;
    }
    if val == 0 {
        return;
    }
    let rt = runtime();
    if rt & RT_NR_SHMEM_SEEN == 0 {
        set_runtime(RT_NR_SHMEM_SEEN);
    }
    let queue = rt & RT_ALLOC_EXACT_SEEN == 0;
    let extended = queue && extend_run(pid, val as u32);
    let known = task_add(tgid, pages, 0);
    if known && (extended || !queue) {
        return;
    }
    let cgrp = match memcg {
        Some(m) => kernel::memcg_cgroup(m).ok(),
        None => current_memcg_cgroup(),
    };
    let mut o = current_owner_in(pid_tgid, cgrp);
    if id != 0 {
        o.cgroup_id = id;
    }
    if queue && !extended {
        push_run(&o, val as u32);
    }
    if !known {
        task_insert(&o, pages, TASK_FROM_NR_SHMEM, cgrp);
    }
}

#[inline(always)]
pub(super) fn nr_shmem_item() -> i64 {
    let v = get(&cfg().nr_shmem_item);
    if v == ABSENT { -1 } else { v as i64 }
}

// ---------------------------------------------------------------------------------------
// Frees: filemap:mm_filemap_delete_from_page_cache, fired before the folio leaves the page
// cache (its mapping is still set).

#[inline(always)]
pub(super) fn try_free_folio(folio: *const u8) -> Result<(), i64> {
    let Some((flags, mapping)) = shmem_folio(folio)? else { return Ok(()) };
    if mapping.is_null() {
        return Ok(());
    }
    count(Family::Shmem, stats::EVENTS);
    let nr = kernel::folio_nr_pages(folio, flags) as u64;
    let (inode, dev, ino) = mapping_inode(mapping)?;
    let rt = runtime();
    if rt & RT_ALLOC_EXACT_SEEN == 0 && !flag_set(flags, get(&layout().pg_lru)) {
        // Allocated while traced but still waiting in a per-CPU LRU batch: its LRU insertion
        // (if any) comes after this free, with no mapping. Count the allocation here.
        bump(counter::FREED_BEFORE_LRU, 1);
        let tgid = kernel::current_tgid();
        match (rt & RT_NR_SHMEM_SEEN != 0).then(|| peek_run(tgid)).flatten() {
            Some(r) => alloc_by_run(inode, dev, ino, nr, &r),
            None => alloc_by_current(inode, dev, ino, nr, tgid, HOW_DRAIN_TASK, false),
        }
    }
    if rt & (RT_NR_SHMEM_SEEN | RT_ALLOC_EXACT_SEEN) == 0 {
        let _ = SHMEM_FOLIOS.remove(&(folio as u64));
    }
    record_free(dev, ino, nr, rt);
    Ok(())
}

/// The classic free tracepoint: (s_dev, i_ino, order), no folio; shmem is recognised by
/// its superblock being in SHMEM_DEVS (tmpfs mounts, the internal shm mount, or seen
/// allocating).
#[inline(always)]
pub(super) fn free_classic(ctx: &TracePointContext) {
    let c = cfg();
    // SAFETY: offsets from the tracepoint's format file.
    let dev = unsafe { ctx.read_at::<u32>(get(&c.del_dev_off) as usize) }.unwrap_or(0);
    if SHMEM_DEVS.get_ptr(&dev).is_none() {
        return;
    }
    count(Family::Shmem, stats::EVENTS);
    // SAFETY: as above.
    let ino = unsafe { ctx.read_at::<u64>(get(&c.del_ino_off) as usize) }.unwrap_or(0);
    let order_off = get(&c.del_order_off);
    let order = if order_off == ABSENT {
        0
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u8>(order_off as usize) }.unwrap_or(0) as u32
    };
    record_free(dev, ino, 1u64 << (order & 31), runtime());
}
