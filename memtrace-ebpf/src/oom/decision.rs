//! The kill record (`oom:mark_victim`) and the decision behind it: the oom_control of the
//! exact strategies, a memory.oom.group member of an earlier decision, or (tracepoints
//! only) the oom_control found on the stack and the candidate walk (walk.rs).

use memtrace_common::{
    Family,
    oom::{
        CONSTRAINT_MEMCG, CONSTRAINT_NONE, CONSTRAINT_UNKNOWN, KIND_KILL, OOM_D_EXITING_AT_SEND,
        OOM_D_GROUP_MEMBER, OOM_D_HAVE_CHOSEN_POINTS, OOM_D_HAVE_MEMCG, OOM_D_HAVE_OC,
        OOM_D_HAVE_RETRY, OOM_D_INFERRED, OOM_D_NO_SELECTION, OOM_D_OC_ENTRY, OOM_D_OC_STACK,
        OOM_D_VICTIM_EXITING, OOM_HAVE_MM, OOM_HAVE_TASK, OOM_METHOD_NONE, OOM_NO_MM,
        OomKillEvent, OomRetry,
    },
    stats,
};

use super::{
    config::cfg,
    maps::{Decision, Last, OOM_ACTIVE, OOM_KILLS, OOM_LAST, OOM_RETRY, OOM_VICTIMS, mark},
    model::current_tid,
    walk::{memcg_counter, scan_stack, walk},
};
use crate::shared::{
    emit::{get, header, now},
    kernel::{self, layout, read, read_ptr},
    maps::{count, output_on},
};

/// A group member belongs to the previous decision of the same task if it comes this soon.
const GROUP_WINDOW_NS: u64 = 1_000_000_000;

/// The heavy parts are global BPF functions (no pointer arguments: they work on the
/// per-CPU `Mark`), so the verifier checks each once instead of along every path of
/// the program; 6.1's verifier gives up on the inlined whole.
#[inline(always)]
pub(super) fn try_mark_victim(task: Option<*const u8>, pid_only: u32) -> Result<(), i64> {
    count(Family::Oom, stats::EVENTS);
    let Some(m) = mark() else { return Err(-1) };
    m.task = task.map_or(0, |p| p as u64);
    m.pid_only = pid_only;
    m.t = now();
    m.tid = current_tid();
    let mut failed = oom_mark_decide();
    oom_mark_work();
    failed |= oom_mark_fill();
    if failed != 0 {
        count(Family::Oom, stats::READ_ERRORS);
    }
    // After the candidates (the record says how many were sent), on a channel of its own.
    if !output_on::<OomKillEvent>(&OOM_KILLS, Family::Oom, &m.ev) {
        return Err(-1);
    }
    if m.task == 0 && OOM_VICTIMS.insert(&m.ev.victim_pid, &m.d.decision, 0).is_err() {
        count(Family::Oom, stats::MAP_FULL);
    }
    Ok(())
}

/// The cheap part of the decision; the victim registered for its exit and its memory
/// read before the (slow) walk, during which it may exit. Returns 1 when a read failed.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn oom_mark_decide() -> i64 {
    let Some(m) = mark() else { return 0 };
    m.d = Decision {
        decision: m.t,
        oc: 0,
        dflags: 0,
        method: OOM_METHOD_NONE,
        emitted: 0,
        dropped: 0,
        visited: 0,
        unwalked: 0,
        inferred_memcg: 0,
        inferred_totalpages: 0,
        memcg_usage: 0,
        memcg_max: 0,
        memcg_read: 0,
    };
    m.work = decide(m.task, m.tid, m.t, &mut m.d);
    capture_memcg(&mut m.d);
    if m.task != 0 {
        let pid = read::<i32>(m.task as *const u8, get(&layout().task_pid)).unwrap_or(0) as u32;
        if OOM_VICTIMS.insert(&pid, &m.d.decision, 0).is_err() {
            count(Family::Oom, stats::MAP_FULL);
        }
    }
    // The victim's memory now, before it can exit during the walk.
    let task = (m.task != 0).then_some(m.task as *const u8);
    // SAFETY: plain data in this CPU's scratch.
    let failed = unsafe { fill(&mut m.ev, task, m.pid_only) };
    i64::from(failed)
}

/// Reads the OOM memcg's usage and limit once its memcg is known (from the oom_control,
/// or inferred by the walk).
#[inline(always)]
fn capture_memcg(d: &mut Decision) {
    if d.memcg_read != 0 {
        return;
    }
    let memcg = if d.oc != 0 {
        read::<u64>(d.oc as *const u8, get(&layout().oc_memcg)).unwrap_or(0)
    } else {
        d.inferred_memcg
    };
    if memcg == 0 {
        return;
    }
    if let Some((usage, max)) = memcg_counter(memcg) {
        d.memcg_usage = usage;
        d.memcg_max = max;
        d.memcg_read = 1;
    }
}

/// The oom_control scan and the candidate walk, when the decision needs them.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn oom_mark_work() -> i64 {
    let Some(m) = mark() else { return 0 };
    let victim = m.task;
    match m.work {
        WORK_SCAN_WALK => {
            m.d.oc = scan_stack(victim);
            if m.d.oc != 0 {
                m.d.dflags |= OOM_D_OC_STACK;
                capture_memcg(&mut m.d);
            }
            walk(victim, &mut m.d);
            capture_memcg(&mut m.d);
            let last = Last {
                decision: m.d.decision,
                victim,
                oc: m.d.oc,
                ns: m.t,
                dflags: m.d.dflags,
                method: m.d.method,
            };
            if m.d.oc != 0 && OOM_LAST.insert(&m.tid, &last, 0).is_err() {
                count(Family::Oom, stats::MAP_FULL);
            }
        }
        WORK_WALK => walk(victim, &mut m.d),
        _ => {}
    }
    0
}

/// The decision part of the kill record. Returns 1 when a kernel read failed.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn oom_mark_fill() -> i64 {
    let Some(m) = mark() else { return 1 };
    // SAFETY: plain data in this CPU's scratch.
    let failed = unsafe { fill_decision(&mut m.ev, &m.d) };
    let now_flags = read::<u32>(m.task as *const u8, get(&layout().task_flags)).unwrap_or(0);
    if now_flags & get(&cfg().pf_exiting) != 0 {
        m.ev.dflags |= OOM_D_EXITING_AT_SEND;
    }
    i64::from(failed)
}

/// What `decide` leaves to do.
const WORK_NONE: u32 = 0;
/// Find the oom_control on the stack, then walk the candidates.
const WORK_SCAN_WALK: u32 = 1;
/// Walk the candidates (the oom_control is known).
const WORK_WALK: u32 = 2;

/// Finds the decision behind this mark_victim (cheap part): the oom_control of the exact
/// strategies, or a memory.oom.group member of the task's previous decision. Returns what
/// is left to do (`WORK_*`).
#[inline(always)]
fn decide(task: u64, tid: u32, t: u64, d: &mut Decision) -> u32 {
    let l = layout();
    let chosen_off = get(&l.oc_chosen);
    // Exact strategies: the task is inside out_of_memory().
    // SAFETY: the value is copied out at once.
    if let Some(a) = unsafe { OOM_ACTIVE.get(&tid) }.copied() {
        d.decision = a.decision;
        d.oc = a.oc;
        d.dflags |= OOM_D_OC_ENTRY;
        d.method = a.method;
        d.emitted = a.emitted;
        d.dropped = a.dropped;
        d.visited = a.calls;
        let chosen = read::<u64>(a.oc as *const u8, chosen_off).unwrap_or(0);
        if chosen == 0 {
            d.dflags |= OOM_D_NO_SELECTION;
            return WORK_NONE;
        }
        if task != 0 && chosen != task {
            d.dflags |= OOM_D_GROUP_MEMBER;
            return WORK_NONE;
        }
        // No oom_badness() seen: oom_kill_allocating_task (no scan), or that hook is
        // missing on this kernel: then walk.
        let current = kernel::current_task() as u64;
        if a.calls == 0 && task != 0 && chosen != current {
            return WORK_WALK;
        }
        return WORK_NONE;
    }
    if task == 0 {
        return WORK_NONE;
    }
    // A memory.oom.group member of this task's previous decision.
    // SAFETY: copied out at once.
    if let Some(last) = unsafe { OOM_LAST.get(&tid) }.copied() {
        if t.wrapping_sub(last.ns) < GROUP_WINDOW_NS
            && last.victim != task
            && read::<u64>(last.oc as *const u8, chosen_off).ok() == Some(last.victim)
        {
            d.decision = last.decision;
            d.oc = last.oc;
            d.dflags = last.dflags | OOM_D_GROUP_MEMBER;
            d.method = last.method;
            return WORK_NONE;
        }
    }
    WORK_SCAN_WALK
}

/// Fills the victim and trigger; returns true when a kernel read failed.
#[inline(always)]
unsafe fn fill(ev: &mut OomKillEvent, task: Option<*const u8>, pid_only: u32) -> bool {
    let l = layout();
    let mut failed = false;
    header(&mut ev.header, KIND_KILL);
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
    ev.victim_task_flags = 0;
    ev.victim_comm = [0; 16];
    kernel::cgroup_unavailable(&mut ev.victim_cgroup);

    // The trigger: the task running the OOM killer.
    let current = kernel::current_task();
    ev.trigger_pid = read::<i32>(current, get(&l.task_pid)).unwrap_or(0) as u32;
    ev.trigger_tgid = read::<i32>(current, get(&l.task_tgid)).unwrap_or(0) as u32;
    ev.trigger_comm = [0; 16];
    failed |= kernel::task_comm(current, &mut ev.trigger_comm).is_err();
    kernel::task_cgroup_path(current, &mut ev.trigger_cgroup);

    let Some(task) = task else {
        return failed;
    };
    ev.flags |= OOM_HAVE_TASK;
    ev.victim_task_flags = read::<u32>(task, get(&l.task_flags)).unwrap_or(0);
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
    failed |= !kernel::task_cgroup_path(task, &mut ev.victim_cgroup);
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

/// Fills the decision: oom_control, the OOM memcg, the candidates' method and counts,
/// the trigger's retries. Returns true when a kernel read failed.
#[inline(always)]
unsafe fn fill_decision(ev: &mut OomKillEvent, d: &Decision) -> bool {
    let l = layout();
    let mut failed = false;
    ev.decision = d.decision;
    ev.dflags = d.dflags;
    ev.method = d.method;
    ev.cand_emitted = d.emitted;
    ev.cand_dropped = d.dropped;
    ev.cand_visited = d.visited;
    ev.cand_unwalked = d.unwalked;
    ev.constraint = CONSTRAINT_UNKNOWN;
    ev.order = 0;
    ev.gfp_mask = 0;
    ev.totalpages = 0;
    ev.chosen_points = 0;
    ev.memcg_usage = 0;
    ev.memcg_max = 0;
    kernel::cgroup_unavailable(&mut ev.oom_memcg);
    if ev.victim_task_flags & get(&cfg().pf_exiting) != 0 {
        ev.dflags |= OOM_D_VICTIM_EXITING;
    }
    let mut memcg = 0u64;
    if d.oc != 0 {
        let oc = d.oc as *const u8;
        let r = (
            read::<u32>(oc, get(&l.oc_constraint)),
            read::<i32>(oc, get(&l.oc_order)),
            read::<u32>(oc, get(&l.oc_gfp_mask)),
            read::<u64>(oc, get(&l.oc_totalpages)),
            read::<i64>(oc, get(&l.oc_chosen_points)),
            read::<u64>(oc, get(&l.oc_memcg)),
        );
        if let (Ok(constraint), Ok(order), Ok(gfp), Ok(total), Ok(points), Ok(m)) = r {
            ev.constraint = constraint;
            ev.order = order;
            ev.gfp_mask = gfp;
            ev.totalpages = total;
            ev.chosen_points = points;
            ev.dflags |= OOM_D_HAVE_OC;
            if d.dflags & (OOM_D_NO_SELECTION | OOM_D_GROUP_MEMBER) == 0 {
                ev.dflags |= OOM_D_HAVE_CHOSEN_POINTS;
            }
            memcg = m;
        } else {
            failed = true;
        }
    } else if d.dflags & OOM_D_INFERRED != 0 {
        // No oom_control: the lowest memcg above the victim at its limit, else global.
        memcg = d.inferred_memcg;
        ev.totalpages = d.inferred_totalpages;
        ev.constraint = if memcg != 0 { CONSTRAINT_MEMCG } else { CONSTRAINT_NONE };
    }
    if memcg != 0 {
        if d.memcg_read != 0 {
            ev.memcg_usage = d.memcg_usage;
            ev.memcg_max = d.memcg_max;
            ev.dflags |= OOM_D_HAVE_MEMCG;
        } else if let Some((usage, max)) = memcg_counter(memcg) {
            ev.memcg_usage = usage;
            ev.memcg_max = max;
            ev.dflags |= OOM_D_HAVE_MEMCG;
        }
        let css = (memcg as *const u8).wrapping_add(get(&l.memcg_css) as usize);
        match read_ptr(css, get(&l.css_cgroup)) {
            Ok(cg) => kernel::cgroup_path(cg, &mut ev.oom_memcg),
            Err(_) => failed = true,
        }
    }
    // The trigger's allocation retries.
    let tid = current_tid();
    // SAFETY: copied out at once.
    match unsafe { OOM_RETRY.get(&tid) }.copied() {
        Some(r) => {
            ev.retry = r;
            ev.dflags |= OOM_D_HAVE_RETRY;
            let _ = OOM_RETRY.remove(&tid);
        }
        None => ev.retry = OomRetry::default(),
    }
    failed
}
