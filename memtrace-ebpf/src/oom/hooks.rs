//! The oom programs: each reads its arguments and calls a body in decision.rs or model.rs.
//! Program names are what the agent attaches by: never rename one.

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext, TracePointContext,
    },
};
use memtrace_common::oom::{
    OOM_METHOD_FEXIT, REAPER_FINISH, REAPER_SKIP, REAPER_START, REAPER_WAKE,
};

use super::{
    config::cfg,
    decision::try_mark_victim,
    model::{
        badness, badness_entry, badness_return, compact_retry, enter, leave, reaper,
        reclaim_retry_zone, task_exit_btf, task_exit_tp, tp_pid,
    },
};
use crate::shared::emit::get;

// ---------------------------------------------------------------------------------------
// oom:mark_victim

/// Preferred: BTF tracepoint, `mark_victim(struct task_struct *task, uid_t uid)`.
#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let _ = try_mark_victim(Some(task), 0);
    0
}

/// Same hook through a raw tracepoint (kernels whose tp_btf attach fails).
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim_raw(ctx: RawTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let _ = try_mark_victim(Some(task), 0);
    0
}

/// Last resort for kernels whose tracepoint passes only the pid: the victim's task is
/// not reachable, so only pid and the trigger are reported (doctor states the gap).
#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim_tp(ctx: TracePointContext) -> u32 {
    let off = get(&cfg().tp_pid_offset);
    // SAFETY: offset comes from the tracepoint's format file.
    let pid = unsafe { ctx.read_at::<i32>(off as usize) }.unwrap_or(0);
    let _ = try_mark_victim(None, pid as u32);
    let _ = ctx.as_ptr();
    0
}

// ---------------------------------------------------------------------------------------
// Exact strategies: out_of_memory() entry/exit and oom_badness() returns.

#[fentry(function = "out_of_memory")]
pub fn oom_enter_fentry(ctx: FEntryContext) -> i32 {
    let oc: u64 = ctx.arg(0);
    enter(oc);
    0
}

#[kprobe(function = "out_of_memory")]
pub fn oom_enter_kprobe(ctx: ProbeContext) -> u32 {
    let oc: u64 = ctx.arg(0).unwrap_or(0);
    enter(oc);
    0
}

#[fexit(function = "oom_badness")]
pub fn oom_badness_fexit(ctx: FExitContext) -> i32 {
    let p: u64 = ctx.arg(0);
    let totalpages: u64 = ctx.arg(1);
    let points: i64 = ctx.arg(2);
    badness(p, totalpages, points, OOM_METHOD_FEXIT);
    0
}

/// oom_badness() entry: keeps the arguments for the kretprobe (flagged tasks only).
#[kprobe(function = "oom_badness")]
pub fn oom_badness_kprobe(ctx: ProbeContext) -> u32 {
    badness_entry(&ctx);
    0
}

#[kretprobe(function = "oom_badness")]
pub fn oom_badness_kretprobe(ctx: RetProbeContext) -> u32 {
    badness_return(&ctx);
    0
}

#[fexit(function = "out_of_memory")]
pub fn oom_leave_fexit(ctx: FExitContext) -> i32 {
    let ret: u64 = ctx.arg(1);
    leave(ret as u8 as u32);
    0
}

#[kretprobe(function = "out_of_memory")]
pub fn oom_leave_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    leave(ret as u8 as u32);
    0
}

// ---------------------------------------------------------------------------------------
// After the kill: the reaper (classic tracepoints, `int pid`) and the victim's exit.

#[tracepoint(category = "oom", name = "wake_reaper")]
pub fn oom_wake_reaper(ctx: TracePointContext) -> u32 {
    if let Some(pid) = tp_pid(&ctx, get(&cfg().reaper_pid_offset[0])) {
        reaper(pid, REAPER_WAKE);
    }
    0
}

#[tracepoint(category = "oom", name = "start_task_reaping")]
pub fn oom_start_task_reaping(ctx: TracePointContext) -> u32 {
    if let Some(pid) = tp_pid(&ctx, get(&cfg().reaper_pid_offset[1])) {
        reaper(pid, REAPER_START);
    }
    0
}

#[tracepoint(category = "oom", name = "finish_task_reaping")]
pub fn oom_finish_task_reaping(ctx: TracePointContext) -> u32 {
    if let Some(pid) = tp_pid(&ctx, get(&cfg().reaper_pid_offset[2])) {
        reaper(pid, REAPER_FINISH);
    }
    0
}

#[tracepoint(category = "oom", name = "skip_task_reaping")]
pub fn oom_skip_task_reaping(ctx: TracePointContext) -> u32 {
    if let Some(pid) = tp_pid(&ctx, get(&cfg().reaper_pid_offset[3])) {
        reaper(pid, REAPER_SKIP);
    }
    0
}

/// The hot path: direct BTF loads from the typed task, no probe-read helpers. A kernel
/// whose verifier refuses them falls back to the classic tracepoint below.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn oom_victim_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    task_exit_btf(task);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn oom_victim_exit_tp(ctx: TracePointContext) -> u32 {
    task_exit_tp(&ctx);
    0
}

// ---------------------------------------------------------------------------------------
// Retries before a page-allocator OOM.

#[tracepoint(category = "oom", name = "reclaim_retry_zone")]
pub fn oom_reclaim_retry_zone(ctx: TracePointContext) -> u32 {
    reclaim_retry_zone(&ctx);
    0
}

#[tracepoint(category = "oom", name = "compact_retry")]
pub fn oom_compact_retry(ctx: TracePointContext) -> u32 {
    compact_retry(&ctx);
    0
}
