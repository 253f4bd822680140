//! Reclaim family: how long tasks stall in direct reclaim, memcg reclaim, node reclaim,
//! soft-limit reclaim, direct compaction, reclaim throttling and memory.high enforcement.
//!
//! Begin hooks store a per-thread timestamp (bounded hash `RECLAIM_START`); end hooks take
//! the duration and add it to a per-CPU log-linear histogram keyed by (kind, tgid, memory
//! cgroup id), so a reclaim storm costs a map update per stall and nothing on the ring
//! buffer. Stalls at or above `min_latency_ns` are also streamed with full context.
//!
//! The histograms are double-buffered: the agent flips `RECLAIM_SWITCH`, lets in-flight
//! programs finish, then reads and empties the map no longer written. Every program is a
//! thin wrapper around shared `try_*`/helper functions; failures are counted in `STATS`.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::{
        BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use memtrace_common::{
    CGROUP_UNAVAILABLE, EventKind, Family,
    layout::ABSENT,
    reclaim::{
        BUCKETS, Hist, HistKey, KIND_COMPACTION, KIND_DIRECT, KIND_HIGH, KIND_MEMCG, KIND_NODE,
        KIND_SOFTLIMIT, KIND_THROTTLE, KswapdNode, MAX_NODES, ReclaimConfig,
        ReclaimStallEvent, STALL_NO_ALLOC_INFO, STALL_READ_ERROR, Start, StartKey, bucket,
    },
    stats,
};

use crate::{
    kernel::{self, get, layout, read},
    maps::{EVENTS, count},
};

#[unsafe(no_mangle)]
static RECLAIM_CONFIG: ReclaimConfig = ReclaimConfig::DEFAULT;

/// Stalls in progress, per thread and kind. Sized for every thread of a large machine
/// being in reclaim at once; an insert that fails is counted as MAP_FULL.
#[map(name = "RECLAIM_START")]
static RECLAIM_START: HashMap<StartKey, Start> = HashMap::with_max_entries(16384, 0);

/// The two histogram buffers (max_entries set by the agent at load).
#[map(name = "RECLAIM_HIST0")]
static RECLAIM_HIST0: PerCpuHashMap<HistKey, Hist> = PerCpuHashMap::with_max_entries(1024, 0);
#[map(name = "RECLAIM_HIST1")]
static RECLAIM_HIST1: PerCpuHashMap<HistKey, Hist> = PerCpuHashMap::with_max_entries(1024, 0);

/// Which histogram buffer programs write: index 0 holds 0 or 1. Written by the agent.
#[map(name = "RECLAIM_SWITCH")]
static RECLAIM_SWITCH: Array<u32> = Array::with_max_entries(1, 0);

/// One all-zero histogram, the source of new entries (a map value may be the value of
/// an update; a 1.8 KiB stack temporary may not). Never written.
#[map(name = "RECLAIM_ZERO")]
static RECLAIM_ZERO: Array<Hist> = Array::with_max_entries(1, 0);

/// Throttle sleeps by reason bit (mm_vmscan_throttled reason, lowest set bit; slot 7 for
/// none): [2 * bit] = count, [2 * bit + 1] = ns slept.
#[map(name = "RECLAIM_THROTTLE")]
static RECLAIM_THROTTLE: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);

/// kswapd wake/sleep per node.
#[map(name = "RECLAIM_KSWAPD")]
static RECLAIM_KSWAPD: Array<KswapdNode> = Array::with_max_entries(MAX_NODES, 0);

#[inline(always)]
fn cfg() -> &'static ReclaimConfig {
    // SAFETY: a static the loader rewrites before load.
    unsafe { &*core::ptr::addr_of!(RECLAIM_CONFIG) }
}

#[inline(always)]
fn cfg32(v: &u32) -> u32 {
    // SAFETY: reading our own static (volatile: the loader rewrites it).
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn cfg64(v: &u64) -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(v) }
}

/// The current task if it passes the -p / -c filters: (tid, tgid, memcg id).
#[inline(always)]
fn admit() -> Option<(u32, u32, u64)> {
    let c = cfg();
    let pt = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pt as u32, (pt >> 32) as u32);
    let want = cfg32(&c.filter_tgid);
    if want != 0 && want != tgid {
        return None;
    }
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let kn = kernel::task_memcg(task).and_then(kernel::cgroup_kn).unwrap_or(core::ptr::null());
    if cfg32(&c.filter_memcg) != 0 && !kernel::kn_under(kn, cfg64(&c.filter_memcg_id)) {
        return None;
    }
    let id = if kn.is_null() { 0 } else { kernel::kn_id(kn).unwrap_or(0) };
    Some((tid, tgid, id))
}

#[inline(always)]
fn begin(kind: u32, order: i32, gfp_flags: u64) {
    let Some((tid, _, memcg_id)) = admit() else { return };
    // SAFETY: plain helper.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let start = Start { ts_ns, gfp_flags, memcg_id, order, _pad: 0 };
    if RECLAIM_START.insert(StartKey { tid, kind }, start, 0).is_err() {
        count(Family::Reclaim, stats::MAP_FULL);
    }
}

#[inline(always)]
fn end(kind: u32, nr_reclaimed: u64) {
    let pt = bpf_get_current_pid_tgid();
    let key = StartKey { tid: pt as u32, kind };
    // A miss is a stall that began before we attached, or a filtered task.
    let Some(s) = RECLAIM_START.get_ptr(key) else { return };
    // SAFETY: a value of our map; copied before the entry is removed.
    let s: Start = unsafe { *s };
    let _ = RECLAIM_START.remove(key);
    // SAFETY: plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    let flags = if kind == KIND_HIGH { STALL_NO_ALLOC_INFO } else { 0 };
    let stall = Stall {
        kind,
        tid: pt as u32,
        tgid: (pt >> 32) as u32,
        memcg_id: s.memcg_id,
        duration_ns: now.wrapping_sub(s.ts_ns),
        nr_reclaimed,
        order: s.order,
        gfp_flags: s.gfp_flags,
        reason: 0,
        flags,
    };
    account(&stall);
}

struct Stall {
    kind: u32,
    tid: u32,
    tgid: u32,
    memcg_id: u64,
    duration_ns: u64,
    nr_reclaimed: u64,
    order: i32,
    gfp_flags: u64,
    reason: u32,
    flags: u32,
}

/// Adds a finished stall to the histograms and streams it when slow.
#[inline(always)]
fn account(s: &Stall) {
    count(Family::Reclaim, stats::EVENTS);
    let sw = RECLAIM_SWITCH.get(0).copied().unwrap_or(0);
    let key = HistKey { kind: s.kind, tgid: s.tgid, memcg_id: s.memcg_id };
    let h = if sw == 0 { hist_entry(&RECLAIM_HIST0, &key) } else { hist_entry(&RECLAIM_HIST1, &key) };
    match h {
        Some(h) => {
            // SAFETY: this CPU's copy of a per-CPU map value; programs on this CPU do not
            // run concurrently with each other.
            let h = unsafe { &mut *h };
            if h.count == 0 {
                // SAFETY: plain helper.
                let task = unsafe { bpf_get_current_task() } as *const u8;
                if kernel::leader_comm(task, &mut h.comm).is_err() {
                    count(Family::Reclaim, stats::READ_ERRORS);
                }
            }
            h.count += 1;
            h.total_ns += s.duration_ns;
            if s.duration_ns > h.max_ns {
                h.max_ns = s.duration_ns;
            }
            h.nr_reclaimed += s.nr_reclaimed;
            let idx = bucket(s.duration_ns);
            if idx < BUCKETS {
                h.buckets[idx] += 1;
            }
        }
        None => count(Family::Reclaim, stats::MAP_FULL),
    }
    if s.duration_ns >= cfg64(&cfg().min_latency_ns) {
        stream(s);
    }
}

#[inline(always)]
fn hist_entry(map: &PerCpuHashMap<HistKey, Hist>, key: &HistKey) -> Option<*mut Hist> {
    if let Some(h) = map.get_ptr_mut(key) {
        return Some(h);
    }
    let zero = RECLAIM_ZERO.get_ptr(0)?;
    // SAFETY: a value of our own map, used only as the source of the copy. EEXIST
    // (another CPU inserted it first) is fine: the lookup below finds it.
    let _ = map.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64);
    map.get_ptr_mut(key)
}

#[inline(always)]
fn stream(s: &Stall) {
    let Some(mut entry) = EVENTS.reserve::<ReclaimStallEvent>(0) else {
        count(Family::Reclaim, stats::RINGBUF_DROPS);
        return;
    };
    // SAFETY: a reserved record of our type; every field is written before submit.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header.kind = EventKind::ReclaimStall as u32;
    // SAFETY: plain helpers.
    ev.header.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.kind = s.kind;
    ev.flags = s.flags;
    ev.tid = s.tid;
    ev.tgid = s.tgid;
    ev.order = s.order;
    ev.reason = s.reason;
    ev.gfp_flags = s.gfp_flags;
    ev.nr_reclaimed = s.nr_reclaimed;
    ev.duration_ns = s.duration_ns;
    ev.memcg_id = s.memcg_id;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.leader_comm = [0; 16];
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut failed = kernel::leader_comm(task, &mut ev.leader_comm).is_err();
    match kernel::task_memcg(task) {
        Ok(cg) => kernel::cgroup_path(cg, &mut ev.cgroup),
        Err(_) => {
            ev.cgroup.depth = 0;
            ev.cgroup.id = 0;
            ev.cgroup.status = CGROUP_UNAVAILABLE;
            failed = true;
        }
    }
    if failed {
        ev.flags |= STALL_READ_ERROR;
        count(Family::Reclaim, stats::READ_ERRORS);
    }
    entry.submit(0);
}

/// mm_vmscan_throttled: the sleep already happened; usec_delayed is its length.
#[inline(always)]
fn throttled(usec_delayed: i32, reason: i32) {
    let Some((tid, tgid, memcg_id)) = admit() else { return };
    let stall = Stall {
        kind: KIND_THROTTLE,
        tid,
        tgid,
        memcg_id,
        duration_ns: (usec_delayed.max(0) as u64) * 1000,
        nr_reclaimed: 0,
        order: -1,
        gfp_flags: 0,
        reason: reason as u32,
        flags: STALL_NO_ALLOC_INFO,
    };
    let r = reason as u32;
    let bit = if r & 1 != 0 {
        0
    } else if r & 2 != 0 {
        1
    } else if r & 4 != 0 {
        2
    } else if r & 8 != 0 {
        3
    } else {
        7
    };
    if let Some(c) = RECLAIM_THROTTLE.get_ptr_mut(2 * bit) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
    if let Some(c) = RECLAIM_THROTTLE.get_ptr_mut(2 * bit + 1) {
        // SAFETY: this CPU's slot.
        unsafe { *c += stall.duration_ns };
    }
    account(&stall);
}

#[inline(always)]
fn kswapd_wake(nid: i32) {
    if nid < 0 || nid as u32 >= MAX_NODES {
        return;
    }
    if let Some(n) = RECLAIM_KSWAPD.get_ptr_mut(nid as u32) {
        // SAFETY: written only by this node's kswapd thread.
        let n = unsafe { &mut *n };
        n.wakes += 1;
        // SAFETY: plain helper.
        n.woke_ns = unsafe { bpf_ktime_get_ns() };
    }
}

#[inline(always)]
fn kswapd_sleep(nid: i32) {
    if nid < 0 || nid as u32 >= MAX_NODES {
        return;
    }
    if let Some(n) = RECLAIM_KSWAPD.get_ptr_mut(nid as u32) {
        // SAFETY: as above.
        let n = unsafe { &mut *n };
        n.sleeps += 1;
        if n.woke_ns != 0 {
            // SAFETY: plain helper.
            n.awake_ns += unsafe { bpf_ktime_get_ns() }.wrapping_sub(n.woke_ns);
            n.woke_ns = 0;
        }
    }
}

/// mm_compaction_begin(struct compact_control *cc, ...): only compaction on behalf of an
/// allocating task (cc->direct_compaction), not kcompactd or proactive compaction.
#[inline(always)]
fn compaction_begin(cc: *const u8) {
    let l = layout();
    let off = get(&l.cc_direct_compaction);
    if off == ABSENT || read::<u8>(cc, off) != Ok(1) {
        return;
    }
    let order = read::<i32>(cc, get(&l.cc_order)).unwrap_or(-1);
    let gfp = read::<u32>(cc, get(&l.cc_gfp_mask)).unwrap_or(0);
    begin(KIND_COMPACTION, order, gfp as u64);
}

// ---- programs: tp_btf (preferred), raw_tp, classic tracepoint ----

macro_rules! begin_programs {
    ($kind:expr, $tp:literal, $btf:ident, $raw:ident, $classic:ident) => {
        #[btf_tracepoint(function = $tp)]
        pub fn $btf(ctx: BtfTracePointContext) -> i32 {
            let order: u64 = ctx.arg(0);
            let gfp: u64 = ctx.arg(1);
            begin($kind, order as i32, gfp & 0xffff_ffff);
            0
        }

        #[raw_tracepoint(tracepoint = $tp)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            let order: u64 = ctx.arg(0);
            let gfp: u64 = ctx.arg(1);
            begin($kind, order as i32, gfp & 0xffff_ffff);
            0
        }

        #[tracepoint(category = "vmscan", name = $tp)]
        pub fn $classic(ctx: TracePointContext) -> u32 {
            let c = cfg();
            // SAFETY: offsets from the tracepoint's format file.
            let order = unsafe { ctx.read_at::<i32>(cfg32(&c.tp_begin_order) as usize) };
            let gfp = unsafe { ctx.read_at::<u64>(cfg32(&c.tp_begin_gfp) as usize) };
            begin($kind, order.unwrap_or(-1), gfp.unwrap_or(0) & 0xffff_ffff);
            0
        }
    };
}

macro_rules! end_programs {
    ($kind:expr, $tp:literal, $btf:ident, $raw:ident, $classic:ident) => {
        #[btf_tracepoint(function = $tp)]
        pub fn $btf(ctx: BtfTracePointContext) -> i32 {
            end($kind, ctx.arg(0));
            0
        }

        #[raw_tracepoint(tracepoint = $tp)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            end($kind, ctx.arg(0));
            0
        }

        #[tracepoint(category = "vmscan", name = $tp)]
        pub fn $classic(ctx: TracePointContext) -> u32 {
            // SAFETY: offset from the tracepoint's format file.
            let nr = unsafe { ctx.read_at::<u64>(cfg32(&cfg().tp_end_nr) as usize) };
            end($kind, nr.unwrap_or(0));
            0
        }
    };
}

begin_programs!(
    KIND_DIRECT,
    "mm_vmscan_direct_reclaim_begin",
    rc_direct_b_btf,
    rc_direct_b_raw,
    rc_direct_b_tp
);
end_programs!(
    KIND_DIRECT,
    "mm_vmscan_direct_reclaim_end",
    rc_direct_e_btf,
    rc_direct_e_raw,
    rc_direct_e_tp
);
begin_programs!(
    KIND_MEMCG,
    "mm_vmscan_memcg_reclaim_begin",
    rc_memcg_b_btf,
    rc_memcg_b_raw,
    rc_memcg_b_tp
);
end_programs!(
    KIND_MEMCG,
    "mm_vmscan_memcg_reclaim_end",
    rc_memcg_e_btf,
    rc_memcg_e_raw,
    rc_memcg_e_tp
);
begin_programs!(
    KIND_SOFTLIMIT,
    "mm_vmscan_memcg_softlimit_reclaim_begin",
    rc_soft_b_btf,
    rc_soft_b_raw,
    rc_soft_b_tp
);
end_programs!(
    KIND_SOFTLIMIT,
    "mm_vmscan_memcg_softlimit_reclaim_end",
    rc_soft_e_btf,
    rc_soft_e_raw,
    rc_soft_e_tp
);
end_programs!(
    KIND_NODE,
    "mm_vmscan_node_reclaim_end",
    rc_node_e_btf,
    rc_node_e_raw,
    rc_node_e_tp
);

/// mm_vmscan_node_reclaim_begin(int nid, int order, gfp_t gfp_flags).
#[btf_tracepoint(function = "mm_vmscan_node_reclaim_begin")]
pub fn rc_node_b_btf(ctx: BtfTracePointContext) -> i32 {
    let order: u64 = ctx.arg(1);
    let gfp: u64 = ctx.arg(2);
    begin(KIND_NODE, order as i32, gfp & 0xffff_ffff);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_node_reclaim_begin")]
pub fn rc_node_b_raw(ctx: RawTracePointContext) -> i32 {
    let order: u64 = ctx.arg(1);
    let gfp: u64 = ctx.arg(2);
    begin(KIND_NODE, order as i32, gfp & 0xffff_ffff);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_node_reclaim_begin")]
pub fn rc_node_b_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets from the tracepoint's format file.
    let order = unsafe { ctx.read_at::<i32>(cfg32(&c.tp_node_order) as usize) };
    let gfp = unsafe { ctx.read_at::<u64>(cfg32(&c.tp_node_gfp) as usize) };
    begin(KIND_NODE, order.unwrap_or(-1), gfp.unwrap_or(0) & 0xffff_ffff);
    0
}

/// The tracepoint passes `enum vmscan_throttle_state` and records `1 << reason`; the
/// classic record already holds the bit.
#[inline(always)]
fn reason_bit(reason: u64) -> i32 {
    if reason < 31 { 1 << reason } else { 0 }
}

/// mm_vmscan_throttled(int nid, int usec_timeout, int usec_delayed, int reason).
#[btf_tracepoint(function = "mm_vmscan_throttled")]
pub fn rc_throttle_btf(ctx: BtfTracePointContext) -> i32 {
    let delayed: u64 = ctx.arg(2);
    let reason: u64 = ctx.arg(3);
    throttled(delayed as i32, reason_bit(reason));
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_throttled")]
pub fn rc_throttle_raw(ctx: RawTracePointContext) -> i32 {
    let delayed: u64 = ctx.arg(2);
    let reason: u64 = ctx.arg(3);
    throttled(delayed as i32, reason_bit(reason));
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_throttled")]
pub fn rc_throttle_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets from the tracepoint's format file.
    let delayed = unsafe { ctx.read_at::<i32>(cfg32(&c.tp_thr_delayed) as usize) };
    let reason = unsafe { ctx.read_at::<i32>(cfg32(&c.tp_thr_reason) as usize) };
    throttled(delayed.unwrap_or(0), reason.unwrap_or(0));
    0
}

/// mm_vmscan_kswapd_wake(int nid, ...) and mm_vmscan_kswapd_sleep(int nid).
#[btf_tracepoint(function = "mm_vmscan_kswapd_wake")]
pub fn rc_kswapd_w_btf(ctx: BtfTracePointContext) -> i32 {
    let nid: u64 = ctx.arg(0);
    kswapd_wake(nid as i32);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_kswapd_wake")]
pub fn rc_kswapd_w_raw(ctx: RawTracePointContext) -> i32 {
    let nid: u64 = ctx.arg(0);
    kswapd_wake(nid as i32);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_wake")]
pub fn rc_kswapd_w_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let nid = unsafe { ctx.read_at::<i32>(cfg32(&cfg().tp_kswapd_nid) as usize) };
    kswapd_wake(nid.unwrap_or(-1));
    0
}

#[btf_tracepoint(function = "mm_vmscan_kswapd_sleep")]
pub fn rc_kswapd_s_btf(ctx: BtfTracePointContext) -> i32 {
    let nid: u64 = ctx.arg(0);
    kswapd_sleep(nid as i32);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_kswapd_sleep")]
pub fn rc_kswapd_s_raw(ctx: RawTracePointContext) -> i32 {
    let nid: u64 = ctx.arg(0);
    kswapd_sleep(nid as i32);
    0
}

#[tracepoint(category = "vmscan", name = "mm_vmscan_kswapd_sleep")]
pub fn rc_kswapd_s_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    let nid = unsafe { ctx.read_at::<i32>(cfg32(&cfg().tp_kswapd_nid) as usize) };
    kswapd_sleep(nid.unwrap_or(-1));
    0
}

/// Direct compaction: mm_compaction_begin/end (struct compact_control * first). The
/// classic tracepoints do not say whether the run is direct, so there is no classic
/// fallback.
#[btf_tracepoint(function = "mm_compaction_begin")]
pub fn rc_cmpct_b_btf(ctx: BtfTracePointContext) -> i32 {
    compaction_begin(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "mm_compaction_begin")]
pub fn rc_cmpct_b_raw(ctx: RawTracePointContext) -> i32 {
    compaction_begin(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "mm_compaction_end")]
pub fn rc_cmpct_e_btf(_ctx: BtfTracePointContext) -> i32 {
    end(KIND_COMPACTION, 0);
    0
}

#[raw_tracepoint(tracepoint = "mm_compaction_end")]
pub fn rc_cmpct_e_raw(_ctx: RawTracePointContext) -> i32 {
    end(KIND_COMPACTION, 0);
    0
}

/// memory.high enforcement: mem_cgroup_handle_over_high (reclaim plus penalty sleep).
/// No tracepoint exists; kprobes only. The function runs on every return to user space
/// with TIF_NOTIFY_RESUME and returns at once unless the task charged pages over
/// memory.high (current->memcg_nr_pages_over_high): only those calls are stalls.
#[kprobe]
pub fn rc_high_enter(_ctx: ProbeContext) -> u32 {
    // SAFETY: plain helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let off = get(&layout().task_memcg_nr_pages_over_high);
    if off != ABSENT && read::<u32>(task, off).is_ok_and(|n| n > 0) {
        begin(KIND_HIGH, -1, 0);
    }
    0
}

#[kretprobe]
pub fn rc_high_exit(_ctx: RetProbeContext) -> u32 {
    end(KIND_HIGH, 0);
    0
}
