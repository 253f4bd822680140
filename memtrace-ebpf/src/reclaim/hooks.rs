//! The reclaim programs: per tracepoint a tp_btf (preferred), a raw_tp and a classic
//! tracepoint program, each reading its arguments and calling a body in model.rs. Program
//! names are what the agent attaches by: never rename one.

use aya_ebpf::{
    macros::{btf_tracepoint, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use memtrace_common::reclaim::{
    KIND_COMPACTION, KIND_DIRECT, KIND_HIGH, KIND_MEMCG, KIND_NODE, KIND_SOFTLIMIT,
};

use super::{
    config::cfg,
    model::{
        begin, compaction_begin, end, high_enter, kswapd_sleep, kswapd_wake, reason_bit,
        throttled,
    },
};
use crate::shared::emit::get;


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
            let order = unsafe { ctx.read_at::<i32>(get(&c.tp_begin_order) as usize) };
            let gfp = unsafe { ctx.read_at::<u64>(get(&c.tp_begin_gfp) as usize) };
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
            let nr = unsafe { ctx.read_at::<u64>(get(&cfg().tp_end_nr) as usize) };
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
    let order = unsafe { ctx.read_at::<i32>(get(&c.tp_node_order) as usize) };
    let gfp = unsafe { ctx.read_at::<u64>(get(&c.tp_node_gfp) as usize) };
    begin(KIND_NODE, order.unwrap_or(-1), gfp.unwrap_or(0) & 0xffff_ffff);
    0
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
    let delayed = unsafe { ctx.read_at::<i32>(get(&c.tp_thr_delayed) as usize) };
    let reason = unsafe { ctx.read_at::<i32>(get(&c.tp_thr_reason) as usize) };
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
    let nid = unsafe { ctx.read_at::<i32>(get(&cfg().tp_kswapd_nid) as usize) };
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
    let nid = unsafe { ctx.read_at::<i32>(get(&cfg().tp_kswapd_nid) as usize) };
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
#[kprobe(function = "mem_cgroup_handle_over_high")]
pub fn rc_high_enter(_ctx: ProbeContext) -> u32 {
    high_enter();
    0
}

#[kretprobe(function = "mem_cgroup_handle_over_high")]
pub fn rc_high_exit(_ctx: RetProbeContext) -> u32 {
    end(KIND_HIGH, 0);
    0
}