//! The exact strategies' bodies (out_of_memory() entry and exit, oom_badness() returns),
//! what happens to a victim after the kill (the reaper, its exit), and the allocation
//! retries before a page-allocator OOM. The kill record itself is in decision.rs.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use memtrace_common::{
    Family,
    oom::{
        CAND_READ_ERROR, KIND_REAPER, KIND_SELECT_DONE, NO_FIELD, OOM_METHOD_KRETPROBE,
        OOM_METHOD_NONE, OomCandidateEvent, OomReaperEvent, OomRetry, OomSelectDoneEvent,
        REAPER_EXIT,
    },
    stats,
};

use super::{
    config::cfg,
    maps::{
        Active, OOM_ACTIVE, OOM_BADNESS_ARGS, OOM_CANDIDATES, OOM_KILLS, OOM_RETRY, OOM_VICTIMS,
    },
    walk::fill_candidate,
};
use crate::shared::{
    emit::{get, header, now},
    kernel::{self, layout, read, read_ptr},
    maps::{count, reserve_on},
};

#[inline(always)]
pub(super) fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

// ---------------------------------------------------------------------------------------
// Exact strategies: out_of_memory() entry/exit and oom_badness() returns.

#[inline(always)]
pub(super) fn enter(oc: u64) {
    let a = Active { oc, decision: now(), calls: 0, emitted: 0, dropped: 0, method: OOM_METHOD_NONE };
    if OOM_ACTIVE.insert(&current_tid(), &a, 0).is_err() {
        count(Family::Oom, stats::MAP_FULL);
    }
}

/// oom_badness() entry: keeps the arguments for the kretprobe (flagged tasks only).
#[inline(always)]
pub(super) fn badness_entry(ctx: &ProbeContext) {
    let tid = current_tid();
    if OOM_ACTIVE.get_ptr(&tid).is_none() {
        return;
    }
    let args = [ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0)];
    if OOM_BADNESS_ARGS.insert(&tid, &args, 0).is_err() {
        count(Family::Oom, stats::MAP_FULL);
    }
}

/// oom_badness() return, with the arguments kept at its entry.
#[inline(always)]
pub(super) fn badness_return(ctx: &RetProbeContext) {
    let tid = current_tid();
    if OOM_ACTIVE.get_ptr(&tid).is_none() {
        return;
    }
    let points: i64 = ctx.ret();
    // SAFETY: copied out at once.
    let Some(args) = (unsafe { OOM_BADNESS_ARGS.get(&tid) }).copied() else { return };
    let _ = OOM_BADNESS_ARGS.remove(&tid);
    badness(args[0], args[1], points, OOM_METHOD_KRETPROBE);
}

#[inline(always)]
pub(super) fn badness(p: u64, totalpages: u64, points: i64, method: u32) {
    let tid = current_tid();
    let Some(a) = OOM_ACTIVE.get_ptr_mut(&tid) else { return };
    // SAFETY: map value of this task, updated only by this task.
    let a = unsafe { &mut *a };
    a.calls += 1;
    a.method = method;
    let Some(mut entry) = reserve_on::<OomCandidateEvent>(&OOM_CANDIDATES, Family::Oom) else {
        a.dropped += 1;
        return;
    };
    // SAFETY: reserved record of our type, fully written by fill_candidate.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    fill_candidate(ev, p as *const u8, a.decision, totalpages, Some(points), false);
    if ev.flags & CAND_READ_ERROR != 0 {
        count(Family::Oom, stats::READ_ERRORS);
    }
    entry.submit(0);
    a.emitted += 1;
}

#[inline(always)]
pub(super) fn leave(ret: u32) {
    let tid = current_tid();
    // SAFETY: copied out at once.
    let Some(a) = (unsafe { OOM_ACTIVE.get(&tid) }).copied() else { return };
    let _ = OOM_ACTIVE.remove(&tid);
    let Some(mut entry) = reserve_on::<OomSelectDoneEvent>(&OOM_KILLS, Family::Oom) else { return };
    // SAFETY: reserved record of our type, every field written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    header(&mut ev.header, KIND_SELECT_DONE);
    ev.decision = a.decision;
    ev.calls = a.calls;
    ev.emitted = a.emitted;
    ev.dropped = a.dropped;
    ev.ret = ret;
    entry.submit(0);
}

// ---------------------------------------------------------------------------------------
// After the kill: the reaper (classic tracepoints, `int pid`) and the victim's exit.

#[inline(always)]
pub(super) fn reaper(pid: u32, phase: u32) {
    // SAFETY: copied out at once.
    let decision = unsafe { OOM_VICTIMS.get(&pid) }.copied().unwrap_or(0);
    let Some(mut entry) = reserve_on::<OomReaperEvent>(&OOM_KILLS, Family::Oom) else { return };
    // SAFETY: reserved record of our type, every field written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    header(&mut ev.header, KIND_REAPER);
    ev.decision = decision;
    ev.pid = pid;
    ev.phase = phase;
    entry.submit(0);
}

/// Every task exit in the system: a record only for OOM victims. mark_oom_victim() sets
/// `signal->oom_mm` before the mark_victim tracepoint, so that member (the exiting task's
/// own, cache-hot data) is the filter: no map lookup for ordinary exits (a cold hash
/// lookup cost ~290 ns per exit here). A victim can exit before its mark_victim program
/// registered it in OOM_VICTIMS: its record then carries decision 0 and is matched by pid.
#[inline(always)]
pub(super) fn victim_exited(pid: u32) {
    reaper(pid, REAPER_EXIT);
    let _ = OOM_VICTIMS.remove(&pid);
}

/// The exit hot path for the BTF tracepoint's typed task: direct BTF loads, no probe-read
/// helpers. A kernel whose verifier refuses them falls back to the classic tracepoint.
#[inline(always)]
pub(super) fn task_exit_btf(task: *const u8) {
    let l = layout();
    // SAFETY: `task` is the tracepoint's trusted task_struct, task->signal a BTF pointer
    // too; offsets from LAYOUT.
    let oom_mm = unsafe {
        let signal = kernel::btf_load::<*const u8>(task, get(&l.task_signal));
        kernel::btf_load::<u64>(signal, get(&l.signal_oom_mm))
    };
    if oom_mm != 0 {
        // SAFETY: as above.
        victim_exited(unsafe { kernel::btf_load::<i32>(task, get(&l.task_pid)) } as u32);
    }
}

/// The same for the classic tracepoint (the exiting task is current); its record gives
/// the pid.
#[inline(always)]
pub(super) fn task_exit_tp(ctx: &TracePointContext) {
    let l = layout();
    let current = kernel::current_task();
    let Ok(signal) = read_ptr(current, get(&l.task_signal)) else { return };
    if read::<u64>(signal, get(&l.signal_oom_mm)).unwrap_or(0) == 0 {
        return;
    }
    if let Some(pid) = tp_pid(ctx, get(&cfg().exit_pid_offset)) {
        victim_exited(pid);
    }
}

/// An `int pid` field of a classic tracepoint record; None when this kernel's format has
/// no such field.
#[inline(always)]
pub(super) fn tp_pid(ctx: &TracePointContext, off: u32) -> Option<u32> {
    if off == NO_FIELD {
        return None;
    }
    // SAFETY: offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<i32>(off as usize) }.ok().map(|p| p as u32)
}

// ---------------------------------------------------------------------------------------
// Retries before a page-allocator OOM.

#[inline(always)]
fn tp_field<T: Copy + Default>(ctx: &TracePointContext, off: u32) -> T {
    if off == NO_FIELD {
        return T::default();
    }
    // SAFETY: offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

#[inline(always)]
fn retry_entry(tid: u32, t: u64) -> Option<*mut OomRetry> {
    if let Some(r) = OOM_RETRY.get_ptr_mut(&tid) {
        return Some(r);
    }
    let fresh = OomRetry { first_ns: t, ..OomRetry::default() };
    if OOM_RETRY.insert(&tid, &fresh, 0).is_err() {
        count(Family::Oom, stats::MAP_FULL);
        return None;
    }
    OOM_RETRY.get_ptr_mut(&tid)
}

/// oom:reclaim_retry_zone: one zone checked by a retry loop of the allocating task.
#[inline(always)]
pub(super) fn reclaim_retry_zone(ctx: &TracePointContext) {
    let c = cfg();
    let t = now();
    let Some(r) = retry_entry(current_tid(), t) else { return };
    // SAFETY: this task's map value, updated only by this task.
    let r = unsafe { &mut *r };
    r.last_ns = t;
    r.reclaim_events += 1;
    r.rrz_node = tp_field::<i32>(ctx, get(&c.rrz_node));
    r.rrz_zone_idx = tp_field::<i32>(ctx, get(&c.rrz_zone_idx));
    r.rrz_order = tp_field::<i32>(ctx, get(&c.rrz_order));
    r.rrz_reclaimable = tp_field::<u64>(ctx, get(&c.rrz_reclaimable));
    r.rrz_available = tp_field::<u64>(ctx, get(&c.rrz_available));
    r.rrz_min_wmark = tp_field::<u64>(ctx, get(&c.rrz_min_wmark));
    r.rrz_no_progress_loops = tp_field::<i32>(ctx, get(&c.rrz_no_progress_loops));
    r.rrz_wmark_check = u32::from(tp_field::<u8>(ctx, get(&c.rrz_wmark_check)));
    if r.rrz_no_progress_loops > r.rrz_max_no_progress_loops {
        r.rrz_max_no_progress_loops = r.rrz_no_progress_loops;
    }
}

/// oom:compact_retry: a compaction retry of the allocating task.
#[inline(always)]
pub(super) fn compact_retry(ctx: &TracePointContext) {
    let c = cfg();
    let t = now();
    let Some(r) = retry_entry(current_tid(), t) else { return };
    // SAFETY: this task's map value, updated only by this task.
    let r = unsafe { &mut *r };
    r.last_ns = t;
    r.compact_events += 1;
    r.cr_order = tp_field::<i32>(ctx, get(&c.cr_order));
    r.cr_priority = tp_field::<i32>(ctx, get(&c.cr_priority));
    r.cr_result = tp_field::<i32>(ctx, get(&c.cr_result));
    r.cr_retries = tp_field::<i32>(ctx, get(&c.cr_retries));
    r.cr_max_retries = tp_field::<i32>(ctx, get(&c.cr_max_retries));
    r.cr_ret = u32::from(tp_field::<u8>(ctx, get(&c.cr_ret)));
}
