//! OOM family: `oom:mark_victim`, read at kill time.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use memtrace_common::{
    CGROUP_UNAVAILABLE, EventKind, Family,
    oom::{OOM_HAVE_MM, OOM_HAVE_TASK, OOM_NO_MM, OomConfig, OomKillEvent},
    stats,
};

use crate::{
    kernel::{self, get, layout, read, read_ptr},
    maps::{EVENTS, count},
};

#[unsafe(no_mangle)]
static OOM_CONFIG: OomConfig = OomConfig { tp_pid_offset: 8, _pad: 0 };

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
    // SAFETY: reading our own static.
    let off = unsafe { core::ptr::read_volatile(&OOM_CONFIG.tp_pid_offset) };
    // SAFETY: offset comes from the tracepoint's format file.
    let pid = unsafe { ctx.read_at::<i32>(off as usize) }.unwrap_or(0);
    let _ = try_mark_victim(None, pid as u32);
    let _ = ctx.as_ptr();
    0
}

#[inline(always)]
fn try_mark_victim(task: Option<*const u8>, pid_only: u32) -> Result<(), i64> {
    count(Family::Oom, stats::EVENTS);
    let Some(mut entry) = EVENTS.reserve::<OomKillEvent>(0) else {
        count(Family::Oom, stats::RINGBUF_DROPS);
        return Err(-1);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring-buffer record of our type; every field is
    // written below before submit.
    let failed = unsafe { fill(&mut *ev, task, pid_only) };
    if failed {
        count(Family::Oom, stats::READ_ERRORS);
    }
    entry.submit(0);
    Ok(())
}

/// Fills the record; returns true when a kernel read failed.
#[inline(always)]
unsafe fn fill(ev: &mut OomKillEvent, task: Option<*const u8>, pid_only: u32) -> bool {
    let l = layout();
    let mut failed = false;
    ev.header.kind = EventKind::OomKill as u32;
    // SAFETY: plain helpers.
    ev.header.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.flags = 0;
    ev._pad = 0;
    ev.victim_pid = pid_only;
    ev.victim_tgid = pid_only;
    ev.victim_uid = u32::MAX;
    ev.victim_oom_score_adj = 0;
    ev.rss_anon = 0;
    ev.rss_file = 0;
    ev.rss_shmem = 0;
    ev.swap_ents = 0;
    ev.pgtables_bytes = 0;
    ev.total_vm_pages = 0;
    ev.victim_comm = [0; 16];
    ev.victim_cgroup.depth = 0;
    ev.victim_cgroup.id = 0;
    ev.victim_cgroup.status = CGROUP_UNAVAILABLE;

    // The trigger: the task running the OOM killer.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    ev.trigger_pid = read::<i32>(current, get(&l.task_pid)).unwrap_or(0) as u32;
    ev.trigger_tgid = read::<i32>(current, get(&l.task_tgid)).unwrap_or(0) as u32;
    ev.trigger_comm = [0; 16];
    failed |= kernel::task_comm(current, &mut ev.trigger_comm).is_err();
    match kernel::task_memcg(current) {
        Ok(cg) => kernel::cgroup_path(cg, &mut ev.trigger_cgroup),
        Err(_) => {
            ev.trigger_cgroup.depth = 0;
            ev.trigger_cgroup.id = 0;
            ev.trigger_cgroup.status = CGROUP_UNAVAILABLE;
        }
    }

    let Some(task) = task else {
        return failed;
    };
    ev.flags |= OOM_HAVE_TASK;
    ev.victim_pid = read::<i32>(task, get(&l.task_pid)).unwrap_or(0) as u32;
    ev.victim_tgid = read::<i32>(task, get(&l.task_tgid)).unwrap_or(0) as u32;
    failed |= kernel::task_comm(task, &mut ev.victim_comm).is_err();
    if let Ok(cred) = read_ptr(task, get(&l.task_real_cred)) {
        ev.victim_uid = read::<u32>(cred, get(&l.cred_uid)).unwrap_or(u32::MAX);
    }
    match read_ptr(task, get(&l.task_signal)) {
        Ok(sig) => match read::<i16>(sig, get(&l.signal_oom_score_adj)) {
            Ok(adj) => ev.victim_oom_score_adj = adj as i32,
            Err(_) => failed = true,
        },
        Err(_) => failed = true,
    }
    match kernel::task_memcg(task) {
        Ok(cg) => kernel::cgroup_path(cg, &mut ev.victim_cgroup),
        Err(_) => failed = true,
    }
    match read_ptr(task, get(&l.task_mm)) {
        Ok(mm) if !mm.is_null() => {
            ev.flags |= OOM_HAVE_MM;
            let r = (
                kernel::mm_counter(mm, get(&l.mm_anonpages_idx)),
                kernel::mm_counter(mm, get(&l.mm_filepages_idx)),
                kernel::mm_counter(mm, get(&l.mm_shmempages_idx)),
                kernel::mm_counter(mm, get(&l.mm_swapents_idx)),
                read::<i64>(mm, get(&l.mm_pgtables_bytes)),
                read::<u64>(mm, get(&l.mm_total_vm)),
            );
            ev.rss_anon = r.0.unwrap_or(0);
            ev.rss_file = r.1.unwrap_or(0);
            ev.rss_shmem = r.2.unwrap_or(0);
            ev.swap_ents = r.3.unwrap_or(0);
            ev.pgtables_bytes = r.4.unwrap_or(0);
            ev.total_vm_pages = r.5.unwrap_or(0);
            failed |= r.0.is_err() || r.1.is_err() || r.2.is_err() || r.4.is_err() || r.5.is_err();
        }
        Ok(_) => ev.flags |= OOM_NO_MM,
        Err(_) => failed = true,
    }
    failed
}
