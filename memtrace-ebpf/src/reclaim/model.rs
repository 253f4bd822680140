//! The reclaim bodies: per-thread begin timestamps, durations added to the double-buffered
//! histograms (inside a per-CPU in-flight window the agent's flip waits out), slow stalls
//! streamed, throttle sleeps and kswapd activity.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    maps::PerCpuHashMap,
};
use memtrace_common::{
    Family,
    layout::ABSENT,
    reclaim::{
        BUCKETS, Hist, HistKey, KIND_COMPACTION, KIND_HIGH, KIND_STALL, KIND_THROTTLE,
        MAX_NODES, ReclaimStallEvent, STALL_NO_ALLOC_INFO, STALL_READ_ERROR, Start, StartKey,
        bucket,
    },
    stats,
};

use super::{
    config::cfg,
    maps::{
        RECLAIM_HIST0, RECLAIM_HIST1, RECLAIM_INFLIGHT, RECLAIM_KSWAPD, RECLAIM_START,
        RECLAIM_SWITCH, RECLAIM_THROTTLE, RECLAIM_ZERO,
    },
};
use crate::shared::{
    emit::{get, header, is_self},
    kernel::{self, layout, read},
    maps::{count, percpu_add, reserve},
};

/// The current task if it passes the -p / -c filters: (tid, tgid, memcg id).
#[inline(always)]
fn admit() -> Option<(u32, u32, u64)> {
    let c = cfg();
    let pt = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pt as u32, (pt >> 32) as u32);
    let want = get(&c.filter_tgid);
    if (want != 0 && want != tgid) || is_self(tgid) {
        return None;
    }
    let task = kernel::current_task();
    let kn = kernel::task_memcg(task).and_then(kernel::cgroup_kn).unwrap_or(core::ptr::null());
    if get(&c.filter_memcg) != 0 && !kernel::kn_under(kn, get(&c.filter_memcg_id)) {
        return None;
    }
    let id = if kn.is_null() { 0 } else { kernel::kn_id(kn).unwrap_or(0) };
    Some((tid, tgid, id))
}

#[inline(always)]
pub(super) fn begin(kind: u32, order: i32, gfp_flags: u64) {
    let Some((tid, _, memcg_id)) = admit() else { return };
    // SAFETY: plain helper.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let start = Start { ts_ns, gfp_flags, memcg_id, order, _pad: 0 };
    if RECLAIM_START.insert(StartKey { tid, kind }, start, 0).is_err() {
        count(Family::Reclaim, stats::MAP_FULL);
    }
}

#[inline(always)]
pub(super) fn end(kind: u32, nr_reclaimed: u64) {
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

/// `*p += n`, returning the old value: BPF_ATOMIC | BPF_FETCH, which the kernel's JITs
/// emit fully ordered (x86 `lock xadd`, arm64 `ldaddal`), unlike the plain atomic add.
#[inline(always)]
fn fetch_add(p: *mut u64, n: u64) -> u64 {
    let mut v = n;
    // SAFETY: `p` points into a map value.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
        );
    }
    v
}

/// Adds a finished stall to the histograms and streams it when slow.
#[inline(always)]
fn account(s: &Stall) {
    count(Family::Reclaim, stats::EVENTS);
    // In flight on this CPU from before the buffer index is read until the update is done
    // (see the agent's flip): both counter updates are fully ordered.
    let inflight = RECLAIM_INFLIGHT.get_ptr_mut(0);
    if let Some(p) = inflight {
        fetch_add(p, 1);
    }
    let sw = RECLAIM_SWITCH.get(0).copied().unwrap_or(0);
    let key = HistKey { kind: s.kind, tgid: s.tgid, memcg_id: s.memcg_id };
    let h = if sw == 0 { hist_entry(&RECLAIM_HIST0, &key) } else { hist_entry(&RECLAIM_HIST1, &key) };
    add_stall(h, s);
    if let Some(p) = inflight {
        fetch_add(p, u64::MAX);
    }
    if s.duration_ns >= get(&cfg().min_latency_ns) {
        stream(s);
    }
}

/// One stall into its histogram entry (None: the buffer is full).
#[inline(always)]
fn add_stall(h: Option<*mut Hist>, s: &Stall) {
    match h {
        Some(h) => {
            // SAFETY: this CPU's copy of a per-CPU map value; programs on this CPU do not
            // run concurrently with each other.
            let h = unsafe { &mut *h };
            if h.count == 0 {
                let task = kernel::current_task();
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
    let Some(mut entry) = reserve::<ReclaimStallEvent>(Family::Reclaim) else { return };
    // SAFETY: a reserved record of our type; every field is written before submit.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    header(&mut ev.header, KIND_STALL);
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
    let task = kernel::current_task();
    let mut failed = kernel::leader_comm(task, &mut ev.leader_comm).is_err();
    failed |= !kernel::task_cgroup_path(task, &mut ev.cgroup);
    if failed {
        ev.flags |= STALL_READ_ERROR;
        count(Family::Reclaim, stats::READ_ERRORS);
    }
    entry.submit(0);
}

/// mm_vmscan_throttled: the sleep already happened; usec_delayed is its length.
#[inline(always)]
pub(super) fn throttled(usec_delayed: i32, reason: i32) {
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
    percpu_add(&RECLAIM_THROTTLE, 2 * bit, 1);
    percpu_add(&RECLAIM_THROTTLE, 2 * bit + 1, stall.duration_ns);
    account(&stall);
}

#[inline(always)]
pub(super) fn kswapd_wake(nid: i32) {
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
pub(super) fn kswapd_sleep(nid: i32) {
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
pub(super) fn compaction_begin(cc: *const u8) {
    let l = layout();
    let off = get(&l.cc_direct_compaction);
    if off == ABSENT || read::<u8>(cc, off) != Ok(1) {
        return;
    }
    let order = read::<i32>(cc, get(&l.cc_order)).unwrap_or(-1);
    let gfp = read::<u32>(cc, get(&l.cc_gfp_mask)).unwrap_or(0);
    begin(KIND_COMPACTION, order, gfp as u64);
}

/// The tracepoint passes `enum vmscan_throttle_state` and records `1 << reason`; the
/// classic record already holds the bit.
#[inline(always)]
pub(super) fn reason_bit(reason: u64) -> i32 {
    if reason < 31 { 1 << reason } else { 0 }
}

/// mem_cgroup_handle_over_high entry: a stall only when the task charged pages over
/// memory.high (current->memcg_nr_pages_over_high).
#[inline(always)]
pub(super) fn high_enter() {
    let task = kernel::current_task();
    let off = get(&layout().task_memcg_nr_pages_over_high);
    if off != ABSENT && read::<u32>(task, off).is_ok_and(|n| n > 0) {
        begin(KIND_HIGH, -1, 0);
    }
}
