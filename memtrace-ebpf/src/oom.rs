//! OOM family: `oom:mark_victim` read at kill time, and the decision behind each kill.
//!
//! - Exact (kernels with fentry or kprobes): out_of_memory() entry remembers the task and
//!   its `struct oom_control *`; every oom_badness() return while that task is inside
//!   out_of_memory() is a candidate record with the kernel's own score (/proc/PID/oom_score
//!   reads call oom_badness() too, from unflagged tasks, and are ignored).
//! - Tracepoints only: at oom:mark_victim the `oom_control` is found on the OOM-invoking
//!   task's kernel stack (its `chosen` member is the victim; the rest is validated), and
//!   the OOM domain's processes are walked (task list, bpf_loop) recomputing the kernel's
//!   formula for each.
//!
//! Candidates are streamed as separate records tied to the kill by a decision id; the
//! agent assembles them. Counters: EVENTS counts mark_victim hits, every lost record is a
//! RINGBUF_DROPS, every failed kernel read a READ_ERRORS, every failed map update MAP_FULL.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id,
        bpf_ktime_get_boot_ns, bpf_loop, bpf_probe_read_kernel_buf,
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext, TracePointContext,
    },
};
use memtrace_common::{
    CGROUP_UNAVAILABLE, EventKind, Family,
    layout::ABSENT,
    oom::{
        CAND_EXACT, CAND_ORIGIN, CAND_PENDING_VICTIM, CAND_POINTS, CAND_READ_ERROR,
        CAND_SKIP_ADJ_MIN, CAND_SKIP_NO_MM, CAND_SKIP_OLD_VICTIM, CAND_SKIP_OOM_SKIP,
        CAND_SKIP_OTHER, CAND_SKIP_VFORK, CONSTRAINT_MEMCG, CONSTRAINT_NONE, CONSTRAINT_UNKNOWN, NO_FIELD,
        OOM_D_GROUP_MEMBER, OOM_D_HAVE_CHOSEN_POINTS, OOM_D_HAVE_MEMCG, OOM_D_HAVE_OC,
        OOM_D_HAVE_RETRY, OOM_D_INFERRED, OOM_D_NO_SELECTION, OOM_D_OC_ENTRY, OOM_D_OC_STACK,
        OOM_D_EXITING_AT_SEND, OOM_D_VICTIM_EXITING, OOM_D_WALK_TRUNCATED, OOM_HAVE_MM, OOM_HAVE_TASK,
        OOM_METHOD_FEXIT, OOM_METHOD_KRETPROBE, OOM_METHOD_NONE, OOM_METHOD_WALK, OOM_NO_MM,
        OomCandidateEvent, OomConfig, OomKillEvent, OomReaperEvent, OomRetry,
        OomSelectDoneEvent, REAPER_EXIT, REAPER_FINISH, REAPER_SKIP, REAPER_START, REAPER_WAKE,
    },
    stats,
};

use crate::{
    kernel::{self, get, layout, read, read_ptr},
    maps::{EVENTS, count},
};

#[unsafe(no_mangle)]
static OOM_CONFIG: OomConfig = OomConfig::DEFAULT;

#[inline(always)]
fn cfg() -> &'static OomConfig {
    // SAFETY: a static that the loader rewrites before load; never written at run time.
    unsafe { &*core::ptr::addr_of!(OOM_CONFIG) }
}

const OOM_SCORE_ADJ_MIN: i32 = -1000;
/// A task's memcg is searched this many levels up for the OOM memcg.
const MEMCG_DEPTH: usize = 16;
/// Bytes of kernel stack read per bpf_loop step of the oom_control scan.
const SCAN_CHUNK: u32 = 512;
const SCAN_WORDS: usize = (SCAN_CHUNK / 8) as usize;
const _: () = assert!(SCAN_WORDS.is_power_of_two());
/// A group member belongs to the previous decision of the same task if it comes this soon.
const GROUP_WINDOW_NS: u64 = 1_000_000_000;

/// A task inside out_of_memory() (exact strategies).
#[repr(C)]
#[derive(Clone, Copy)]
struct Active {
    oc: u64,
    decision: u64,
    calls: u32,
    emitted: u32,
    dropped: u32,
    method: u32,
}

/// The last decision taken by a task (tracepoint strategy), for memory.oom.group members.
#[repr(C)]
#[derive(Clone, Copy)]
struct Last {
    decision: u64,
    victim: u64,
    oc: u64,
    ns: u64,
    dflags: u32,
    method: u32,
}

#[map(name = "OOM_ACTIVE")]
static OOM_ACTIVE: HashMap<u32, Active> = HashMap::with_max_entries(1024, 0);

/// oom_badness() arguments between kprobe and kretprobe: (task, totalpages).
#[map(name = "OOM_BADNESS_ARGS")]
static OOM_BADNESS_ARGS: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(1024, 0);

#[map(name = "OOM_LAST")]
static OOM_LAST: LruHashMap<u32, Last> = LruHashMap::with_max_entries(1024, 0);

/// Allocation retries per task (oom:reclaim_retry_zone, oom:compact_retry).
#[map(name = "OOM_RETRY")]
static OOM_RETRY: LruHashMap<u32, OomRetry> = LruHashMap::with_max_entries(4096, 0);

/// Victim pid -> decision, to report its exit and the reaper.
#[map(name = "OOM_VICTIMS")]
static OOM_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// One chunk of kernel stack for the oom_control scan.
#[map(name = "OOM_SCRATCH")]
static OOM_SCRATCH: PerCpuArray<[u64; SCAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn header(h: &mut memtrace_common::EventHeader, kind: EventKind) {
    h.kind = kind as u32;
    // SAFETY: plain helpers.
    h.cpu = unsafe { bpf_get_smp_processor_id() };
    h.boot_ns = now();
}

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

/// What the kill record says about the decision; filled before the record is sent.
#[repr(C)]
#[derive(Clone, Copy)]
struct Decision {
    decision: u64,
    oc: u64,
    dflags: u32,
    method: u32,
    emitted: u32,
    dropped: u32,
    visited: u32,
    _pad: u32,
    /// Without an oom_control: the inferred OOM memcg (0: global) and domain size.
    inferred_memcg: u64,
    inferred_totalpages: u64,
    /// The OOM memcg's page counter, read as early as possible (the victim's memory
    /// starts going as soon as it has its SIGKILL); `memcg_read` 1 when read.
    memcg_usage: u64,
    memcg_max: u64,
    memcg_read: u64,
}

/// One mark_victim in progress: per-CPU scratch (OOM kills are serialised by the
/// kernel's oom_lock, and the record is too big for the BPF stack).
#[repr(C)]
pub struct Mark {
    ev: OomKillEvent,
    d: Decision,
    /// The victim's task_struct, 0 for the pid-only tracepoint.
    task: u64,
    t: u64,
    tid: u32,
    pid_only: u32,
    work: u32,
    _pad: u32,
}

#[map(name = "OOM_MARK")]
static OOM_MARK: PerCpuArray<Mark> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn mark() -> Option<&'static mut Mark> {
    // SAFETY: this CPU's scratch; one mark_victim at a time (oom_lock).
    OOM_MARK.get_ptr_mut(0).map(|m| unsafe { &mut *m })
}

/// The heavy parts are global BPF functions (no pointer arguments: they work on the
/// per-CPU `Mark`), so the verifier checks each once instead of along every path of
/// the program; 6.1's verifier gives up on the inlined whole.
#[inline(always)]
fn try_mark_victim(task: Option<*const u8>, pid_only: u32) -> Result<(), i64> {
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
    if EVENTS.output::<OomKillEvent>(&m.ev, 0).is_err() {
        count(Family::Oom, stats::RINGBUF_DROPS);
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
        _pad: 0,
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
        // SAFETY: plain helper.
        let current = unsafe { bpf_get_current_task() } as u64;
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

// ---------------------------------------------------------------------------------------
// Finding the oom_control on the OOM-invoking task's stack.

#[repr(C)]
struct ScanCtx {
    base: u64,
    victim: u64,
    found: u64,
}

/// The address of the `struct oom_control` whose `chosen` is `victim`, searched on the
/// current task's kernel stack (the highest valid match: the live frame), or 0.
#[inline(always)]
fn scan_stack(victim: u64) -> u64 {
    let l = layout();
    if get(&l.oc_chosen) == ABSENT || get(&l.task_stack) == ABSENT {
        return 0;
    }
    // SAFETY: plain helper.
    let current = unsafe { bpf_get_current_task() } as *const u8;
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
    visited: u32,
    emitted: u32,
    dropped: u32,
    /// 1: back at the start; 2: a list read failed.
    done: u32,
}

/// Walks the OOM domain's processes, one candidate record each; sets the decision's
/// method and counts. The domain and totalpages come from the oom_control when found,
/// else from the memcg limits (inferred).
#[inline(always)]
fn walk(victim: u64, d: &mut Decision) {
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
            None => (0, get_u64(&cfg().global_totalpages)),
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
    };
    oom_eval_task(&mut c, leader);
    let max = get(&cfg().max_walk);
    // SAFETY: bpf_loop calls walk_step with `c`, which outlives the call.
    unsafe {
        bpf_loop(max, walk_step as *mut c_void, (&raw mut c).cast(), 0);
    }
    d.method = OOM_METHOD_WALK;
    d.emitted = c.emitted;
    d.dropped = c.dropped;
    d.visited = c.visited;
    if c.done == 0 {
        d.dflags |= OOM_D_WALK_TRUNCATED;
    }
}

#[inline(always)]
fn get_u64(v: &u64) -> u64 {
    // SAFETY: reading our own static.
    unsafe { core::ptr::read_volatile(v) }
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
/// (kernel threads, init, outside the OOM memcg), else a candidate record.
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
    let Some(mut entry) = EVENTS.reserve::<OomCandidateEvent>(0) else {
        c.dropped += 1;
        count(Family::Oom, stats::RINGBUF_DROPS);
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
    let l = layout();
    let id = get(&l.memory_cgrp_id);
    if id == ABSENT {
        return 0;
    }
    let Ok(cset) = read_ptr(p, get(&l.task_cgroups)) else { return 0 };
    read::<u64>(cset, get(&l.css_set_subsys).wrapping_add(id * 8)).unwrap_or(0)
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
fn memcg_counter(memcg: u64) -> Option<(u64, u64)> {
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
fn fill_candidate(
    ev: &mut OomCandidateEvent,
    p: *const u8,
    decision: u64,
    totalpages: u64,
    exact: Option<i64>,
    is_victim: bool,
) {
    let l = layout();
    let c = cfg();
    header(&mut ev.header, EventKind::OomCandidate);
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
    ev.cgroup_id = kernel::task_memcg(p)
        .and_then(|cg| read_ptr(cg, get(&l.cgroup_kn)))
        .and_then(|kn| read::<u64>(kn, get(&l.kn_id)))
        .unwrap_or(0);
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

// ---------------------------------------------------------------------------------------
// The kill record.

/// Fills the victim and trigger; returns true when a kernel read failed.
#[inline(always)]
unsafe fn fill(ev: &mut OomKillEvent, task: Option<*const u8>, pid_only: u32) -> bool {
    let l = layout();
    let mut failed = false;
    header(&mut ev.header, EventKind::OomKill);
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
    ev.victim_cgroup.depth = 0;
    ev.victim_cgroup.id = 0;
    ev.victim_cgroup.status = CGROUP_UNAVAILABLE;

    // The trigger: the task running the OOM killer.
    // SAFETY: plain helper.
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
    ev._pad2 = 0;
    ev.constraint = CONSTRAINT_UNKNOWN;
    ev.order = 0;
    ev.gfp_mask = 0;
    ev.totalpages = 0;
    ev.chosen_points = 0;
    ev.memcg_usage = 0;
    ev.memcg_max = 0;
    ev.oom_memcg.depth = 0;
    ev.oom_memcg.id = 0;
    ev.oom_memcg.status = CGROUP_UNAVAILABLE;
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

#[inline(always)]
fn enter(oc: u64) {
    let a = Active { oc, decision: now(), calls: 0, emitted: 0, dropped: 0, method: OOM_METHOD_NONE };
    if OOM_ACTIVE.insert(&current_tid(), &a, 0).is_err() {
        count(Family::Oom, stats::MAP_FULL);
    }
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
    let tid = current_tid();
    if OOM_ACTIVE.get_ptr(&tid).is_none() {
        return 0;
    }
    let args = [ctx.arg::<u64>(0).unwrap_or(0), ctx.arg::<u64>(1).unwrap_or(0)];
    if OOM_BADNESS_ARGS.insert(&tid, &args, 0).is_err() {
        count(Family::Oom, stats::MAP_FULL);
    }
    0
}

#[kretprobe(function = "oom_badness")]
pub fn oom_badness_kretprobe(ctx: RetProbeContext) -> u32 {
    let tid = current_tid();
    if OOM_ACTIVE.get_ptr(&tid).is_none() {
        return 0;
    }
    let points: i64 = ctx.ret();
    // SAFETY: copied out at once.
    let Some(args) = (unsafe { OOM_BADNESS_ARGS.get(&tid) }).copied() else { return 0 };
    let _ = OOM_BADNESS_ARGS.remove(&tid);
    badness(args[0], args[1], points, OOM_METHOD_KRETPROBE);
    0
}

#[inline(always)]
fn badness(p: u64, totalpages: u64, points: i64, method: u32) {
    let tid = current_tid();
    let Some(a) = OOM_ACTIVE.get_ptr_mut(&tid) else { return };
    // SAFETY: map value of this task, updated only by this task.
    let a = unsafe { &mut *a };
    a.calls += 1;
    a.method = method;
    let Some(mut entry) = EVENTS.reserve::<OomCandidateEvent>(0) else {
        a.dropped += 1;
        count(Family::Oom, stats::RINGBUF_DROPS);
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

#[inline(always)]
fn leave(ret: u32) {
    let tid = current_tid();
    // SAFETY: copied out at once.
    let Some(a) = (unsafe { OOM_ACTIVE.get(&tid) }).copied() else { return };
    let _ = OOM_ACTIVE.remove(&tid);
    let Some(mut entry) = EVENTS.reserve::<OomSelectDoneEvent>(0) else {
        count(Family::Oom, stats::RINGBUF_DROPS);
        return;
    };
    // SAFETY: reserved record of our type, every field written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    header(&mut ev.header, EventKind::OomSelectDone);
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
fn reaper(pid: u32, phase: u32) {
    // SAFETY: copied out at once.
    let decision = unsafe { OOM_VICTIMS.get(&pid) }.copied().unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<OomReaperEvent>(0) else {
        count(Family::Oom, stats::RINGBUF_DROPS);
        return;
    };
    // SAFETY: reserved record of our type, every field written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    header(&mut ev.header, EventKind::OomReaper);
    ev.decision = decision;
    ev.pid = pid;
    ev.phase = phase;
    entry.submit(0);
}

#[inline(always)]
fn tp_pid(ctx: &TracePointContext, off: u32) -> Option<u32> {
    if off == NO_FIELD {
        return None;
    }
    // SAFETY: offset comes from the tracepoint's format file.
    unsafe { ctx.read_at::<i32>(off as usize) }.ok().map(|p| p as u32)
}

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

/// Every task exit in the system: a record only for OOM victims. mark_oom_victim() sets
/// `signal->oom_mm` before the mark_victim tracepoint, so that member (the exiting task's
/// own, cache-hot data) is the filter: no map lookup for ordinary exits (a cold hash
/// lookup cost ~290 ns per exit here). A victim can exit before its mark_victim program
/// registered it in OOM_VICTIMS: its record then carries decision 0 and is matched by pid.
#[inline(always)]
fn victim_exited(pid: u32) {
    reaper(pid, REAPER_EXIT);
    let _ = OOM_VICTIMS.remove(&pid);
}

/// The hot path: direct BTF loads from the typed task, no probe-read helpers. A kernel
/// whose verifier refuses them falls back to the classic tracepoint below.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn oom_victim_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
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
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn oom_victim_exit_tp(ctx: TracePointContext) -> u32 {
    let l = layout();
    // SAFETY: plain helper; the exiting task is current.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let Ok(signal) = read_ptr(current, get(&l.task_signal)) else { return 0 };
    if read::<u64>(signal, get(&l.signal_oom_mm)).unwrap_or(0) == 0 {
        return 0;
    }
    if let Some(pid) = tp_pid(&ctx, get(&cfg().exit_pid_offset)) {
        victim_exited(pid);
    }
    0
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

#[tracepoint(category = "oom", name = "reclaim_retry_zone")]
pub fn oom_reclaim_retry_zone(ctx: TracePointContext) -> u32 {
    let c = cfg();
    let t = now();
    let Some(r) = retry_entry(current_tid(), t) else { return 0 };
    // SAFETY: this task's map value, updated only by this task.
    let r = unsafe { &mut *r };
    r.last_ns = t;
    r.reclaim_events += 1;
    r.rrz_node = tp_field::<i32>(&ctx, get(&c.rrz_node));
    r.rrz_zone_idx = tp_field::<i32>(&ctx, get(&c.rrz_zone_idx));
    r.rrz_order = tp_field::<i32>(&ctx, get(&c.rrz_order));
    r.rrz_reclaimable = tp_field::<u64>(&ctx, get(&c.rrz_reclaimable));
    r.rrz_available = tp_field::<u64>(&ctx, get(&c.rrz_available));
    r.rrz_min_wmark = tp_field::<u64>(&ctx, get(&c.rrz_min_wmark));
    r.rrz_no_progress_loops = tp_field::<i32>(&ctx, get(&c.rrz_no_progress_loops));
    r.rrz_wmark_check = u32::from(tp_field::<u8>(&ctx, get(&c.rrz_wmark_check)));
    if r.rrz_no_progress_loops > r.rrz_max_no_progress_loops {
        r.rrz_max_no_progress_loops = r.rrz_no_progress_loops;
    }
    0
}

#[tracepoint(category = "oom", name = "compact_retry")]
pub fn oom_compact_retry(ctx: TracePointContext) -> u32 {
    let c = cfg();
    let t = now();
    let Some(r) = retry_entry(current_tid(), t) else { return 0 };
    // SAFETY: this task's map value, updated only by this task.
    let r = unsafe { &mut *r };
    r.last_ns = t;
    r.compact_events += 1;
    r.cr_order = tp_field::<i32>(&ctx, get(&c.cr_order));
    r.cr_priority = tp_field::<i32>(&ctx, get(&c.cr_priority));
    r.cr_result = tp_field::<i32>(&ctx, get(&c.cr_result));
    r.cr_retries = tp_field::<i32>(&ctx, get(&c.cr_retries));
    r.cr_max_retries = tp_field::<i32>(&ctx, get(&c.cr_max_retries));
    r.cr_ret = u32::from(tp_field::<u8>(&ctx, get(&c.cr_ret)));
    0
}
