//! The tracepoint strategy's search for the decision: the `oom_control` on the OOM-invoking
//! task's kernel stack, and the walk of the OOM domain's processes recomputing the kernel's
//! formula; and the candidate record both strategies emit.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_loop, bpf_probe_read_kernel_buf};
use memtrace_common::{
    Family,
    layout::ABSENT,
    oom::{
        CAND_EXACT, CAND_ORIGIN, CAND_PENDING_VICTIM, CAND_POINTS, CAND_READ_ERROR,
        CAND_SKIP_ADJ_MIN, CAND_SKIP_NO_MM, CAND_SKIP_OLD_VICTIM, CAND_SKIP_OOM_SKIP,
        CAND_SKIP_OTHER, CAND_SKIP_VFORK, CONSTRAINT_MEMCG, KIND_CANDIDATE, OOM_D_INFERRED,
        OOM_D_WALK_TRUNCATED, OOM_D_WALK_UNFINISHED, OOM_METHOD_WALK, OomCandidateEvent,
    },
    stats,
};

use super::{
    config::cfg,
    maps::{Decision, OOM_CANDIDATES, OOM_SCRATCH, SCAN_CHUNK, SCAN_WORDS},
};
use crate::shared::{
    emit::{get, header},
    kernel::{self, layout, read, read_ptr},
    maps::{count, reserve_on},
};

const OOM_SCORE_ADJ_MIN: i32 = -1000;
/// A task's memcg is searched this many levels up for the OOM memcg.
const MEMCG_DEPTH: usize = 16;
/// Steps of the walk's loop: past `max_walk` tasks it only counts the domain's processes,
/// up to this many tasks in all (PID_MAX_LIMIT, the most pids a 64-bit kernel hands out;
/// bpf_loop allows 1 << 23).
const WALK_LOOPS: u32 = 1 << 22;

#[repr(C)]
struct ScanCtx {
    base: u64,
    victim: u64,
    found: u64,
}

/// The address of the `struct oom_control` whose `chosen` is `victim`, searched on the
/// current task's kernel stack (the highest valid match: the live frame), or 0.
#[inline(always)]
pub(super) fn scan_stack(victim: u64) -> u64 {
    let l = layout();
    if get(&l.oc_chosen) == ABSENT || get(&l.task_stack) == ABSENT {
        return 0;
    }
    let current = kernel::current_task();
    let Ok(base) = read::<u64>(current, get(&l.task_stack)) else { return 0 };
    if base == 0 {
        return 0;
    }
    let mut c = ScanCtx { base, victim, found: 0 };
    let words = get(&cfg().thread_size) / 8;
    // SAFETY: bpf_loop calls scan_word with `c`, which outlives the call.
    unsafe {
        bpf_loop(words, scan_word as *mut c_void, (&raw mut c).cast(), 0);
    }
    c.found
}

/// Word `i` of the stack: chunks of SCAN_CHUNK bytes are read into per-CPU scratch at
/// their first word, then compared one word per step (one small body for the verifier).
extern "C" fn scan_word(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the ScanCtx given in scan_stack.
    let c = unsafe { &mut *(ctx as *mut ScanCtx) };
    let Some(buf) = OOM_SCRATCH.get_ptr_mut(0) else { return 1 };
    let j = (i as usize) & (SCAN_WORDS - 1);
    let chunk = c.base.wrapping_add(u64::from(i & !(SCAN_WORDS as u32 - 1)) * 8);
    if j == 0 {
        // SAFETY: per-CPU scratch of SCAN_CHUNK bytes; probe reads tolerate any address.
        let bytes = unsafe { &mut *(buf as *mut [u8; SCAN_CHUNK as usize]) };
        // A failed read leaves the previous chunk: its matches fail oc_valid's reads.
        let _ = unsafe { bpf_probe_read_kernel_buf(chunk as *const u8, bytes) };
    }
    // SAFETY: as above; j < SCAN_WORDS.
    let word = unsafe { (*buf)[j] };
    if word == c.victim {
        let oc = chunk.wrapping_add(j as u64 * 8).wrapping_sub(u64::from(get(&layout().oc_chosen)));
        if oc_valid(oc) != 0 {
            c.found = oc;
        }
    }
    0
}

/// Whether `oc` looks like a live `struct oom_control` (its `chosen` already matched).
#[inline(never)]
fn oc_valid(oc: u64) -> u64 {
    let l = layout();
    let p = oc as *const u8;
    let (Ok(order), Ok(constraint), Ok(total), Ok(memcg), Ok(zonelist)) = (
        read::<i32>(p, get(&l.oc_order)),
        read::<u32>(p, get(&l.oc_constraint)),
        read::<u64>(p, get(&l.oc_totalpages)),
        read::<u64>(p, get(&l.oc_memcg)),
        read::<u64>(p, get(&l.oc_zonelist)),
    ) else {
        return 0;
    };
    let kernel_ptr = |v: u64| (v as i64) < 0;
    let ok = (-1..=16).contains(&order)
        && constraint <= CONSTRAINT_MEMCG
        && total >= 1
        && total < (1 << 44)
        && (memcg == 0 || kernel_ptr(memcg))
        && (zonelist == 0 || kernel_ptr(zonelist))
        && ((constraint == CONSTRAINT_MEMCG) == (memcg != 0));
    ok as u64
}

// ---------------------------------------------------------------------------------------
// The candidate walk (tracepoint strategy).

#[repr(C)]
pub struct WalkCtx {
    start: u64,
    cur: u64,
    victim_tgid: u64,
    /// css of the OOM memcg, 0 for the whole system.
    domain: u64,
    totalpages: u64,
    decision: u64,
    /// Tasks (thread group leaders) visited, the start included.
    visited: u32,
    emitted: u32,
    dropped: u32,
    /// 1: back at the start; 2: a list read failed.
    done: u32,
    /// Tasks visited with a record each (`max_walk`); past them, count only.
    max: u32,
    /// Processes of the domain past `max`: counted, no record.
    unwalked: u32,
}

/// Walks the OOM domain's processes, one candidate record each for the first `max_walk`
/// tasks, then only counting the domain's processes (each is a candidate the table
/// lacks); sets the decision's method and counts. The domain and totalpages come from the
/// oom_control when found, else from the memcg limits (inferred).
#[inline(always)]
pub(super) fn walk(victim: u64, d: &mut Decision) {
    let l = layout();
    if get(&l.task_tasks) == ABSENT {
        return;
    }
    let vp = victim as *const u8;
    let Ok(leader) = read::<u64>(vp, get(&l.task_group_leader)) else { return };
    let victim_tgid = read::<i32>(vp, get(&l.task_tgid)).unwrap_or(0) as u64;
    let (domain, totalpages) = if d.oc != 0 {
        let oc = d.oc as *const u8;
        let memcg = read::<u64>(oc, get(&l.oc_memcg)).unwrap_or(0);
        let domain = if memcg == 0 { 0 } else { memcg.wrapping_add(u64::from(get(&l.memcg_css))) };
        (domain, read::<u64>(oc, get(&l.oc_totalpages)).unwrap_or(0))
    } else {
        d.dflags |= OOM_D_INFERRED;
        let (css, total) = match limited_memcg(vp) {
            Some((css, max)) => (css, max),
            None => (0, get(&cfg().global_totalpages)),
        };
        d.inferred_memcg = if css == 0 { 0 } else { css.wrapping_sub(u64::from(get(&l.memcg_css))) };
        d.inferred_totalpages = total;
        (css, total)
    };
    let mut c = WalkCtx {
        start: leader,
        cur: leader,
        victim_tgid,
        domain,
        totalpages,
        decision: d.decision,
        visited: 1,
        emitted: 0,
        dropped: 0,
        done: 0,
        max: get(&cfg().max_walk),
        unwalked: 0,
    };
    oom_eval_task(&mut c, leader);
    // SAFETY: bpf_loop calls walk_step with `c`, which outlives the call.
    unsafe {
        bpf_loop(WALK_LOOPS, walk_step as *mut c_void, (&raw mut c).cast(), 0);
    }
    d.method = OOM_METHOD_WALK;
    d.emitted = c.emitted;
    d.dropped = c.dropped;
    d.visited = c.visited;
    d.unwalked = c.unwalked;
    if c.visited > c.max {
        d.dflags |= OOM_D_WALK_TRUNCATED;
    }
    if c.done != 1 {
        d.dflags |= OOM_D_WALK_UNFINISHED;
    }
}

extern "C" fn walk_step(_i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the WalkCtx given in walk.
    let c = unsafe { &mut *(ctx as *mut WalkCtx) };
    let tasks = get(&layout().task_tasks);
    let Ok(next) = read::<u64>(c.cur as *const u8, tasks) else {
        c.done = 2;
        return 1;
    };
    let task = next.wrapping_sub(u64::from(tasks));
    if task == c.start || next == 0 {
        c.done = 1;
        return 1;
    }
    c.cur = task;
    c.visited += 1;
    oom_eval_task(c, task);
    0
}

/// One process of the walk: skipped silently when the kernel would not evaluate it
/// (kernel threads, init, outside the OOM memcg), else a candidate record, or only
/// counted once the walk is past its `max_walk` tasks.
///
/// A global function: the verifier checks it once, not once per walk step.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn oom_eval_task(c: *mut WalkCtx, task: u64) -> i64 {
    if c.is_null() {
        return 0;
    }
    // SAFETY: checked non-null; points at the walk's context.
    eval_task(unsafe { &mut *c }, task);
    0
}

#[inline(always)]
fn eval_task(c: &mut WalkCtx, task: u64) {
    let l = layout();
    let p = task as *const u8;
    let pid = read::<i32>(p, get(&l.task_pid)).unwrap_or(0);
    let tgid = read::<i32>(p, get(&l.task_tgid)).unwrap_or(0);
    let flags = read::<u32>(p, get(&l.task_flags)).unwrap_or(0);
    if pid <= 0 || tgid == 1 || flags & get(&cfg().pf_kthread) != 0 {
        return;
    }
    if c.domain != 0 {
        if !in_memcg(p, c.domain) {
            return;
        }
        // mem_cgroup_scan_tasks() does not visit dead groups (zombies): for_each_process
        // does, and skips them (no mm).
        // The victim itself may be exiting already: it stays.
        let signal = read_ptr(p, get(&l.task_signal));
        if let Ok(sig) = signal {
            if tgid as u64 != c.victim_tgid && read::<i32>(sig, get(&l.signal_live)) == Ok(0) {
                return;
            }
        }
    }
    if c.visited > c.max {
        c.unwalked += 1;
        return;
    }
    let Some(mut entry) = reserve_on::<OomCandidateEvent>(&OOM_CANDIDATES, Family::Oom) else {
        c.dropped += 1;
        return;
    };
    // SAFETY: reserved record of our type, fully written by fill_candidate.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_candidate(ev, p, c.decision, c.totalpages, None, tgid as u64 == c.victim_tgid);
    if ev.flags & CAND_READ_ERROR != 0 {
        count(Family::Oom, stats::READ_ERRORS);
    }
    entry.submit(0);
    c.emitted += 1;
}

/// `task->cgroups->subsys[memory_cgrp_id]`: the task's memcg css.
#[inline(always)]
fn task_memcg_css(p: *const u8) -> u64 {
    if get(&layout().memory_cgrp_id) == ABSENT {
        return 0;
    }
    kernel::task_css_set(p).and_then(kernel::css_set_memcg).map_or(0, |css| css as u64)
}

/// Whether the task's memcg is `domain` or below it.
#[inline(always)]
fn in_memcg(p: *const u8, domain: u64) -> bool {
    let parent = get(&layout().css_parent);
    let mut css = task_memcg_css(p);
    for _ in 0..MEMCG_DEPTH {
        if css == domain {
            return true;
        }
        if css == 0 {
            return false;
        }
        css = read::<u64>(css as *const u8, parent).unwrap_or(0);
    }
    false
}

/// (usage, max) of a memcg's `memory` page counter, in pages.
#[inline(always)]
pub(super) fn memcg_counter(memcg: u64) -> Option<(u64, u64)> {
    let l = layout();
    let pc = (memcg as *const u8).wrapping_add(get(&l.memcg_memory) as usize);
    if get(&l.memcg_memory) == ABSENT {
        return None;
    }
    let usage = read::<u64>(pc, get(&l.page_counter_usage)).ok()?;
    let max = read::<u64>(pc, get(&l.page_counter_max)).ok()?;
    Some((usage, max))
}

/// Without an oom_control: the lowest memcg above the victim that is at its limit (a
/// memcg OOM), as (css, limit pages); None when none is (a global OOM).
#[inline(always)]
fn limited_memcg(victim: *const u8) -> Option<(u64, u64)> {
    let l = layout();
    let css_off = u64::from(get(&l.memcg_css));
    let parent = get(&l.css_parent);
    let mut css = task_memcg_css(victim);
    for _ in 0..MEMCG_DEPTH {
        if css == 0 {
            return None;
        }
        if let Some((usage, max)) = memcg_counter(css.wrapping_sub(css_off)) {
            // Unlimited counters hold PAGE_COUNTER_MAX (LONG_MAX / PAGE_SIZE).
            if max < (1 << 40) && usage + 64 >= max {
                return Some((css, max));
            }
        }
        css = read::<u64>(css as *const u8, parent).unwrap_or(0);
    }
    None
}

/// The kernel's oom_badness() inputs and, for the walk, its formula:
/// points = rss + swap + pgtables_bytes / PAGE_SIZE + oom_score_adj * (totalpages / 1000).
/// `exact` is oom_badness()'s own return value (exact strategies).
#[inline(always)]
pub(super) fn fill_candidate(
    ev: &mut OomCandidateEvent,
    p: *const u8,
    decision: u64,
    totalpages: u64,
    exact: Option<i64>,
    is_victim: bool,
) {
    let l = layout();
    let c = cfg();
    header(&mut ev.header, KIND_CANDIDATE);
    ev.decision = decision;
    ev.totalpages = totalpages;
    ev.points = 0;
    ev.flags = 0;
    ev.rss_anon = 0;
    ev.rss_file = 0;
    ev.rss_shmem = 0;
    ev.swap_ents = 0;
    ev.pgtables_bytes = 0;
    ev.pid = read::<i32>(p, get(&l.task_pid)).unwrap_or(0) as u32;
    ev.tgid = read::<i32>(p, get(&l.task_tgid)).unwrap_or(0) as u32;
    ev.comm = [0; 16];
    let mut err = kernel::task_comm(p, &mut ev.comm).is_err();
    // The memcg's kernfs id (its directory's inode number): the agent names it. The full
    // path walk per candidate would multiply the verifier's work in the walk loop.
    ev.cgroup_id = kernel::task_memcg(p).and_then(kernel::cgroup_id).unwrap_or(0);
    let signal = read_ptr(p, get(&l.task_signal)).unwrap_or(core::ptr::null());
    let adj = match read::<i16>(signal, get(&l.signal_oom_score_adj)) {
        Ok(a) => i64::from(a),
        Err(_) => {
            err = true;
            0
        }
    };
    ev.oom_score_adj = adj as i32;
    let mm = read_ptr(p, get(&l.task_mm)).unwrap_or(core::ptr::null());
    let mut rss = 0i64;
    if !mm.is_null() {
        let anon = kernel::mm_counter(mm, get(&l.mm_anonpages_idx));
        let file = kernel::mm_counter(mm, get(&l.mm_filepages_idx));
        let shmem = kernel::mm_counter(mm, get(&l.mm_shmempages_idx));
        let swap = kernel::mm_counter(mm, get(&l.mm_swapents_idx));
        let pgt = read::<i64>(mm, get(&l.mm_pgtables_bytes));
        err |= anon.is_err() || file.is_err() || pgt.is_err();
        // get_mm_counter() reads percpu_counter_read_positive(): never below zero.
        ev.rss_anon = anon.unwrap_or(0).max(0);
        ev.rss_file = file.unwrap_or(0).max(0);
        ev.rss_shmem = shmem.unwrap_or(0).max(0);
        ev.swap_ents = swap.unwrap_or(0).max(0);
        ev.pgtables_bytes = pgt.unwrap_or(0).max(0);
        rss = ev.rss_anon + ev.rss_file + ev.rss_shmem + ev.swap_ents
            + (ev.pgtables_bytes >> get(&c.page_shift));
    }
    let mm_flags = read::<u64>(mm, get(&l.mm_flags)).unwrap_or(0);
    let oom_skip = mm_flags & (1u64 << (get(&c.mmf_oom_skip_bit) & 63)) != 0;
    let in_vfork = !mm.is_null() && {
        let vfork_done = read::<u64>(p, get(&l.task_vfork_done)).unwrap_or(0);
        vfork_done != 0 && {
            let parent = read_ptr(p, get(&l.task_real_parent)).unwrap_or(core::ptr::null());
            read_ptr(parent, get(&l.task_mm)).ok() == Some(mm)
        }
    };
    // Why the kernel gives LONG_MIN (in oom_badness()'s order).
    let skip = if mm.is_null() {
        CAND_SKIP_NO_MM
    } else if adj == i64::from(OOM_SCORE_ADJ_MIN) {
        CAND_SKIP_ADJ_MIN
    } else if oom_skip {
        CAND_SKIP_OOM_SKIP
    } else if in_vfork {
        CAND_SKIP_VFORK
    } else {
        0
    };
    match exact {
        Some(points) => {
            ev.flags |= CAND_EXACT;
            if points == i64::MIN {
                ev.flags |= if skip != 0 { skip } else { CAND_SKIP_OTHER };
            } else {
                ev.flags |= CAND_POINTS;
                ev.points = points;
            }
        }
        None => {
            // oom_evaluate_task(): earlier victims first, then oom_task_origin.
            let oom_mm = read::<u64>(signal, get(&l.signal_oom_mm)).unwrap_or(0);
            let origin = read::<u8>(signal, get(&l.signal_oom_flag_origin)).unwrap_or(0);
            if !is_victim && oom_mm != 0 {
                let f = read::<u64>(oom_mm as *const u8, get(&l.mm_flags)).unwrap_or(0);
                ev.flags |= if f & (1u64 << (get(&c.mmf_oom_skip_bit) & 63)) != 0 {
                    CAND_SKIP_OLD_VICTIM
                } else {
                    CAND_PENDING_VICTIM
                };
            } else if origin != 0 {
                ev.flags |= CAND_ORIGIN | CAND_POINTS;
                ev.points = i64::MAX;
            } else if skip != 0 {
                ev.flags |= skip;
            } else {
                ev.flags |= CAND_POINTS;
                ev.points = rss + adj * (totalpages / 1000) as i64;
            }
        }
    }
    if err {
        ev.flags |= CAND_READ_ERROR;
    }
}

