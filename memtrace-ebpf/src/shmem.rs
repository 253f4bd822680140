//! Shmem family: who allocated shmem/tmpfs pages, into which file, and what was freed.
//! See memtrace_common::shmem for the strategies and their accuracy; hooks.rs picks one
//! per kernel. Every program is a thin wrapper around a shared `try_*` function.
//!
//! Accuracy by allocation strategy:
//! - fexit `shmem_add_to_page_cache`: exact (allocator's context, only successful adds).
//! - kprobe `shmem_add_to_page_cache`: exact context; an add that then fails (a racing
//!   allocator of the same page, a charge failure on kernels that charge inside) is counted.
//! - kretprobe `shmem_alloc_and_add_folio`: exact; misses pages re-added by swap-in.
//! - `pagemap:mm_lru_insertion`: the file is exact, the task is matched through per-CPU
//!   NR_SHMEM runs (or is the draining task without the memcg tracepoint): usually, not
//!   always, the allocator. Folios truncated before their LRU insertion are counted at the
//!   free (tp_btf free hook only).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
    },
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{
        BtfTracePointContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use memtrace_common::{
    CGROUP_UNAVAILABLE, EventKind, Family, TASK_COMM_LEN,
    layout::ABSENT,
    shmem::{
        CpuRun, CpuRuns, DevStats, HOW_CPU_RUN, HOW_DRAIN_TASK, HOW_EXACT, InodeKey, InodeStats,
        RT_ALLOC_EXACT_SEEN, RT_NR_SHMEM_SEEN, SHMEM_CPU_RUNS, SHMEM_MAX_DEVS, SHMEM_MAX_FOLIOS,
        SHMEM_MAX_INODES, SHMEM_MAX_TASKS, SHMEM_MAX_WRITERS, SHMEM_NAME_LEN, SHMEM_RUN_CAP,
        ShmemConfig, ShmemTaskEvent, TASK_FROM_ALLOC_HOOK, TASK_FROM_NR_SHMEM, TaskStats,
        WriterKey, WriterStats, counter,
    },
    stats,
};

use crate::{
    kernel::{self, flag_set, get, layout, read_ptr},
    maps::{EVENTS, count},
};

#[unsafe(no_mangle)]
static SHMEM_CONFIG: ShmemConfig = ShmemConfig::DEFAULT;

#[inline(always)]
fn cfg(v: &u32) -> u32 {
    // SAFETY: reading our own static (rewritten by the loader).
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn config() -> &'static ShmemConfig {
    // SAFETY: a static that the loader rewrites before load.
    unsafe { &*core::ptr::addr_of!(SHMEM_CONFIG) }
}

#[map(name = "SHMEM_INODES")]
static SHMEM_INODES: HashMap<InodeKey, InodeStats> = HashMap::with_max_entries(SHMEM_MAX_INODES, 0);

#[map(name = "SHMEM_WRITERS")]
static SHMEM_WRITERS: HashMap<WriterKey, WriterStats> =
    HashMap::with_max_entries(SHMEM_MAX_WRITERS, 0);

#[map(name = "SHMEM_TASKS")]
static SHMEM_TASKS: HashMap<u32, TaskStats> = HashMap::with_max_entries(SHMEM_MAX_TASKS, 0);

/// Per superblock; the agent also inserts every tmpfs it knows (the classic free
/// tracepoint has no folio, so it recognises shmem by superblock).
#[map(name = "SHMEM_DEVS")]
static SHMEM_DEVS: HashMap<u32, DevStats> = HashMap::with_max_entries(SHMEM_MAX_DEVS, 0);

#[map(name = "SHMEM_CPU")]
static SHMEM_CPU: PerCpuArray<CpuRuns> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SHMEM_COUNTERS")]
static SHMEM_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Word 0: `RT_*` bits, set by the programs when they first run.
#[map(name = "SHMEM_RUNTIME")]
static SHMEM_RUNTIME: Array<u32> = Array::with_max_entries(1, 0);

/// Scratch for a new inode entry (too big for comfort on the BPF stack).
/// Without NR_SHMEM runs (drain-task attribution), the folios already counted: an LRU
/// insertion of one of them is a put-back after isolation (compaction, migration, DAMON),
/// not an allocation. Entries leave at the folio's free.
#[map(name = "SHMEM_FOLIOS")]
static SHMEM_FOLIOS: HashMap<u64, u8> = HashMap::with_max_entries(SHMEM_MAX_FOLIOS, 0);

#[map(name = "SHMEM_SCRATCH")]
static SHMEM_SCRATCH: PerCpuArray<InodeStats> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn bump(idx: u32, n: u64) {
    if let Some(p) = SHMEM_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot.
        unsafe { *p += n };
    }
}

/// Atomic `*p += n` (BPF_XADD): map values are shared between CPUs. The bpfel target has
/// no core atomics, hence the assembly.
#[inline(always)]
fn add(p: *mut u64, n: u64) {
    // SAFETY: `p` points into a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {n}",
            p = in(reg) p,
            n = in(reg) n,
        );
    }
}

#[inline(always)]
fn runtime() -> u32 {
    match SHMEM_RUNTIME.get_ptr(0) {
        // SAFETY: array slot 0 exists.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

#[inline(always)]
fn set_runtime(bit: u32) {
    if let Some(p) = SHMEM_RUNTIME.get_ptr_mut(0) {
        // SAFETY: array slot 0. Checked first so the line is written once per bit; two
        // CPUs setting different bits at once may lose one, which the next event sets again.
        unsafe {
            let v = core::ptr::read_volatile(p);
            if v & bit == 0 {
                core::ptr::write_volatile(p, v | bit);
            }
        }
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Who allocated a folio.
#[derive(Clone, Copy)]
struct Owner {
    tgid: u32,
    pid: u32,
    cgroup_id: u64,
    comm: [u8; TASK_COMM_LEN],
}

/// The current task's memory cgroup.
#[inline(always)]
fn current_memcg_cgroup() -> Option<*const u8> {
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    kernel::task_memcg(task).ok()
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
    let Some(mut entry) = EVENTS.reserve::<ShmemTaskEvent>(0) else {
        count(Family::Shmem, stats::RINGBUF_DROPS);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved record of our type; every field is written before submit.
    unsafe {
        (*ev).header.kind = EventKind::ShmemTask as u32;
        (*ev).header.cpu = bpf_get_smp_processor_id();
        (*ev).header.boot_ns = now();
        (*ev).tgid = o.tgid;
        (*ev).pid = o.pid;
        (*ev).cgroup_id = o.cgroup_id;
        (*ev).comm = o.comm;
        match cgrp {
            Some(c) => kernel::cgroup_path(c, &mut (*ev).cgroup),
            None => {
                (*ev).cgroup.id = 0;
                (*ev).cgroup.depth = 0;
                (*ev).cgroup.status = CGROUP_UNAVAILABLE;
            }
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
/// the agent.
#[inline(always)]
fn task_insert(o: &Owner, added: u64, source: u32, cgrp: Option<*const u8>) {
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
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if let Some(p) = SHMEM_TASKS.get_ptr_mut(&tgid) {
            // SAFETY: map value pointer.
            unsafe {
                add(&raw mut (*p).removed_pages, nr);
                (*p).last_ns = now();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Allocation, exact: shmem_add_to_page_cache(folio, mapping, index, ...) or the folio
// returned by shmem_alloc_and_add_folio.

/// A folio added to a shmem mapping in the allocating task's context.
#[inline(always)]
fn try_added(folio: *const u8, mapping: *const u8) -> Result<(), i64> {
    count(Family::Shmem, stats::EVENTS);
    let rt = runtime();
    if rt & RT_ALLOC_EXACT_SEEN == 0 {
        set_runtime(RT_ALLOC_EXACT_SEEN);
    }
    let l = layout();
    let flags = kernel::folio_flags(folio)?;
    let nr = kernel::folio_nr_pages(folio, flags) as u64;
    let inode = read_ptr(mapping, get(&l.mapping_host))?;
    let (dev, ino) = kernel::inode_key(inode)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    record_alloc(inode, dev, ino, nr, tgid, HOW_EXACT, || current_owner());
    if rt & RT_NR_SHMEM_SEEN == 0 && !task_add(tgid, nr, 0) {
        task_insert(&current_owner(), nr, TASK_FROM_ALLOC_HOOK, current_memcg_cgroup());
    }
    Ok(())
}

#[inline(always)]
fn read_failed(r: Result<(), i64>) {
    if r.is_err() {
        count(Family::Shmem, stats::READ_ERRORS);
    }
}

/// Preferred: fexit, so only successful additions count.
#[fexit(function = "shmem_add_to_page_cache")]
pub fn shmem_add_fexit(ctx: FExitContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    let mapping: *const u8 = ctx.arg(1);
    let ret: i64 = match ctx.ret::<i32>() {
        Ok(r) => r as i64,
        Err(_) => -1,
    };
    if ret != 0 {
        bump(counter::ALLOC_FAILED, 1);
        return 0;
    }
    read_failed(try_added(folio, mapping));
    0
}

#[kprobe(function = "shmem_add_to_page_cache")]
pub fn shmem_add_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(folio), Some(mapping)) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1)) else {
        count(Family::Shmem, stats::READ_ERRORS);
        return 0;
    };
    read_failed(try_added(folio, mapping));
    0
}

/// shmem_alloc_and_add_folio returns the folio already in the page cache (or an ERR_PTR).
#[kretprobe(function = "shmem_alloc_and_add_folio")]
pub fn shmem_alloc_kretprobe(ctx: RetProbeContext) -> u32 {
    let folio: *const u8 = ctx.ret();
    if folio.is_null() || (folio as u64) > u64::MAX - 4095 {
        bump(counter::ALLOC_FAILED, 1);
        return 0;
    }
    let r = read_ptr(folio, get(&layout().folio_mapping)).and_then(|m| try_added(folio, m));
    read_failed(r);
    0
}

// ---------------------------------------------------------------------------------------
// Allocation, fallback: pagemap:mm_lru_insertion.

/// Consumes `nr` pages from the oldest pending run of this CPU.
#[inline(always)]
fn pop_run(nr: u32) -> Option<CpuRun> {
    let c = SHMEM_CPU.get_ptr_mut(0)?;
    // SAFETY: per-CPU value.
    let c = unsafe { &mut *c };
    let len = c.len;
    if len == 0 || len as usize > SHMEM_CPU_RUNS {
        c.len = 0;
        return None;
    }
    let i = (c.head as usize) & (SHMEM_CPU_RUNS - 1);
    let r = c.runs[i];
    if r.pages > nr {
        c.runs[i].pages = r.pages - nr;
    } else {
        c.head = ((i + 1) & (SHMEM_CPU_RUNS - 1)) as u32;
        c.len = len - 1;
    }
    Some(r)
}

/// The newest pending run of this CPU if it is the current task's (a task deleting what it
/// just wrote), else the oldest one. Not consumed. (No loop: the 6.1 verifier gives up on
/// a data-dependent one here.)
#[inline(always)]
fn peek_run(tgid: u32) -> Option<CpuRun> {
    let c = SHMEM_CPU.get_ptr(0)?;
    // SAFETY: per-CPU value.
    let c = unsafe { &*c };
    let len = c.len as usize;
    if len == 0 || len > SHMEM_CPU_RUNS {
        return None;
    }
    let head = c.head as usize;
    let newest = &c.runs[(head + len - 1) & (SHMEM_CPU_RUNS - 1)];
    if newest.tgid == tgid {
        return Some(*newest);
    }
    Some(c.runs[head & (SHMEM_CPU_RUNS - 1)])
}

/// Adds `pages` to the newest run of this CPU if it is task `pid`'s.
#[inline(always)]
fn extend_run(pid: u32, pages: u32) -> bool {
    let Some(c) = SHMEM_CPU.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU value.
    let c = unsafe { &mut *c };
    let len = c.len as usize;
    if len == 0 || len > SHMEM_CPU_RUNS {
        return false;
    }
    let r = &mut c.runs[(c.head as usize + len - 1) & (SHMEM_CPU_RUNS - 1)];
    if r.pid != pid {
        return false;
    }
    r.pages = r.pages.saturating_add(pages).min(SHMEM_RUN_CAP);
    true
}

/// Queues a new run of `pages` allocated by `o` on this CPU (NR_SHMEM hook). When the queue
/// is full the pages join the newest run (counted, misattributed to its task).
#[inline(always)]
fn push_run(o: &Owner, pages: u32) {
    let Some(c) = SHMEM_CPU.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value.
    let c = unsafe { &mut *c };
    let mut len = c.len as usize;
    if len > SHMEM_CPU_RUNS {
        len = 0;
        c.len = 0;
    }
    let head = c.head as usize;
    if len == SHMEM_CPU_RUNS {
        bump(counter::RUNS_MERGED, 1);
        let r = &mut c.runs[(head + len - 1) & (SHMEM_CPU_RUNS - 1)];
        r.pages = r.pages.saturating_add(pages).min(SHMEM_RUN_CAP);
        return;
    }
    c.runs[(head + len) & (SHMEM_CPU_RUNS - 1)] = CpuRun {
        tgid: o.tgid,
        pid: o.pid,
        pages: pages.min(SHMEM_RUN_CAP),
        _pad: 0,
        cgroup_id: o.cgroup_id,
        comm: o.comm,
    };
    c.len = (len + 1) as u32;
}

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
fn try_lru(folio: *const u8) -> Result<(), i64> {
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
    let inode = read_ptr(mapping, get(&layout().mapping_host))?;
    let (dev, ino) = kernel::inode_key(inode)?;
    match run {
        Some(r) => {
            bump(counter::RUN_ATTRIBUTED, 1);
            record_alloc(inode, dev, ino, nr as u64, r.tgid, HOW_CPU_RUN, || run_owner(&r));
        }
        None => {
            bump(counter::DRAIN_ATTRIBUTED, 1);
            let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
            let owner = || current_owner();
            record_alloc(inode, dev, ino, nr as u64, tgid, HOW_DRAIN_TASK, owner);
            if !task_add(tgid, nr as u64, 0) {
                task_insert(&owner(), nr as u64, TASK_FROM_ALLOC_HOOK, current_memcg_cgroup());
            }
        }
    }
    Ok(())
}

#[btf_tracepoint(function = "mm_lru_insertion")]
pub fn shmem_lru_btf(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_lru(folio));
    0
}

#[raw_tracepoint(tracepoint = "mm_lru_insertion")]
pub fn shmem_lru_raw(ctx: RawTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_lru(folio));
    0
}

#[tracepoint(category = "pagemap", name = "mm_lru_insertion")]
pub fn shmem_lru_tp(ctx: TracePointContext) -> u32 {
    let c = config();
    // SAFETY: offsets from the tracepoint's format file.
    let flags = unsafe { ctx.read_at::<u64>(cfg(&c.lru_flags_off) as usize) }.unwrap_or(0);
    let swapbacked = cfg(&c.lru_flag_swapbacked) as u64;
    let skip = cfg(&c.lru_flag_anon) as u64 | cfg(&c.lru_flag_swapcache) as u64;
    if flags & swapbacked == 0 || flags & skip != 0 {
        return 0;
    }
    // SAFETY: as above.
    match unsafe { ctx.read_at::<u64>(cfg(&c.lru_folio_off) as usize) } {
        Ok(folio) => read_failed(try_lru(folio as *const u8)),
        Err(_) => count(Family::Shmem, stats::READ_ERRORS),
    }
    let _ = ctx.as_ptr();
    0
}

// ---------------------------------------------------------------------------------------
// Who and how much: memcg:mod_memcg_lruvec_state(memcg, item, val), item NR_SHMEM, in the
// context of the task adding (or removing) the pages.

/// `memcg` (BTF tracepoints) or `id` (classic) names the charged memory cgroup. The common
/// case (the same task adding again on this CPU) reads nothing from the kernel: the task's
/// name and cgroup are read only for a new run or a new task.
#[inline(always)]
fn try_nr_shmem(val: i32, memcg: Option<*const u8>, id: u64) {
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
fn nr_shmem_item() -> i64 {
    let v = cfg(&config().nr_shmem_item);
    if v == ABSENT { -1 } else { v as i64 }
}

#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn shmem_memcg_btf(ctx: BtfTracePointContext) -> i32 {
    let item: i32 = ctx.arg(1);
    if item as i64 != nr_shmem_item() {
        return 0;
    }
    let memcg: *const u8 = ctx.arg(0);
    let val: i32 = ctx.arg(2);
    try_nr_shmem(val, Some(memcg), 0);
    0
}

#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn shmem_memcg_raw(ctx: RawTracePointContext) -> i32 {
    let item: i32 = ctx.arg(1);
    if item as i64 != nr_shmem_item() {
        return 0;
    }
    let memcg: *const u8 = ctx.arg(0);
    let val: i32 = ctx.arg(2);
    try_nr_shmem(val, Some(memcg), 0);
    0
}

#[tracepoint(category = "memcg", name = "mod_memcg_lruvec_state")]
pub fn shmem_memcg_tp(ctx: TracePointContext) -> u32 {
    let c = config();
    // SAFETY: offsets from the tracepoint's format file.
    let item = unsafe { ctx.read_at::<i32>(cfg(&c.memcg_item_off) as usize) }.unwrap_or(-1);
    if item as i64 != nr_shmem_item() {
        return 0;
    }
    // SAFETY: as above.
    let val = unsafe { ctx.read_at::<i32>(cfg(&c.memcg_val_off) as usize) }.unwrap_or(0);
    // SAFETY: as above. The id is the memcg's cgroup id; its path is read from the current
    // task's memcg, which is the charged one except for remote charges.
    let id = unsafe { ctx.read_at::<u64>(cfg(&c.memcg_id_off) as usize) }.unwrap_or(0);
    try_nr_shmem(val, None, id);
    0
}

// ---------------------------------------------------------------------------------------
// Frees: filemap:mm_filemap_delete_from_page_cache, fired before the folio leaves the page
// cache (its mapping is still set).

#[inline(always)]
fn try_free_folio(folio: *const u8) -> Result<(), i64> {
    let Some((flags, mapping)) = shmem_folio(folio)? else { return Ok(()) };
    if mapping.is_null() {
        return Ok(());
    }
    count(Family::Shmem, stats::EVENTS);
    let l = layout();
    let nr = kernel::folio_nr_pages(folio, flags) as u64;
    let inode = read_ptr(mapping, get(&l.mapping_host))?;
    let (dev, ino) = kernel::inode_key(inode)?;
    let rt = runtime();
    if rt & RT_ALLOC_EXACT_SEEN == 0 && !flag_set(flags, get(&l.pg_lru)) {
        // Allocated while traced but still waiting in a per-CPU LRU batch: its LRU insertion
        // (if any) comes after this free, with no mapping. Count the allocation here.
        bump(counter::FREED_BEFORE_LRU, 1);
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        match (rt & RT_NR_SHMEM_SEEN != 0).then(|| peek_run(tgid)).flatten() {
            Some(r) => record_alloc(inode, dev, ino, nr, r.tgid, HOW_CPU_RUN, || run_owner(&r)),
            None => record_alloc(inode, dev, ino, nr, tgid, HOW_DRAIN_TASK, || current_owner()),
        }
    }
    if rt & (RT_NR_SHMEM_SEEN | RT_ALLOC_EXACT_SEEN) == 0 {
        let _ = SHMEM_FOLIOS.remove(&(folio as u64));
    }
    record_free(dev, ino, nr, rt);
    Ok(())
}

#[btf_tracepoint(function = "mm_filemap_delete_from_page_cache")]
pub fn shmem_free_btf(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_free_folio(folio));
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_delete_from_page_cache")]
pub fn shmem_free_raw(ctx: RawTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_free_folio(folio));
    0
}

/// Classic tracepoint: (s_dev, i_ino, order), no folio; shmem is recognised by its
/// superblock being in SHMEM_DEVS (tmpfs mounts, the internal shm mount, or seen
/// allocating).
#[tracepoint(category = "filemap", name = "mm_filemap_delete_from_page_cache")]
pub fn shmem_free_tp(ctx: TracePointContext) -> u32 {
    let c = config();
    // SAFETY: offsets from the tracepoint's format file.
    let dev = unsafe { ctx.read_at::<u32>(cfg(&c.del_dev_off) as usize) }.unwrap_or(0);
    if SHMEM_DEVS.get_ptr(&dev).is_none() {
        return 0;
    }
    count(Family::Shmem, stats::EVENTS);
    // SAFETY: as above.
    let ino = unsafe { ctx.read_at::<u64>(cfg(&c.del_ino_off) as usize) }.unwrap_or(0);
    let order_off = cfg(&c.del_order_off);
    let order = if order_off == ABSENT {
        0
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u8>(order_off as usize) }.unwrap_or(0) as u32
    };
    record_free(dev, ino, 1u64 << (order & 31), runtime());
    0
}
