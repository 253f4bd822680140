//! The reclaim programs' BPF global `RECLAIM_CONFIG`: filters, the streaming threshold and
//! classic-tracepoint field offsets, set by the agent at load.

/// Name of the BPF global holding a [`ReclaimConfig`].
pub const RECLAIM_CONFIG: &str = "RECLAIM_CONFIG";

/// Global `RECLAIM_CONFIG` of the reclaim programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimConfig {
    /// Stream stalls at least this long (ns).
    pub min_latency_ns: u64,
    /// Only this process (tgid), 0 = all.
    pub filter_tgid: u32,
    /// 1 when `filter_memcg_id` applies.
    pub filter_memcg: u32,
    /// Only tasks in this memory cgroup or below (kernfs id of the cgroup directory).
    pub filter_memcg_id: u64,
    /// Classic tracepoint field offsets (tracefs format files) for the fallbacks.
    pub tp_begin_order: u32,
    pub tp_begin_gfp: u32,
    pub tp_end_nr: u32,
    pub tp_node_order: u32,
    pub tp_node_gfp: u32,
    pub tp_thr_nid: u32,
    pub tp_thr_delayed: u32,
    pub tp_thr_reason: u32,
    pub tp_kswapd_nid: u32,
    pub _pad: u32,
}

impl ReclaimConfig {
    /// Offsets of the 6.x tracepoint records; the agent overrides them from tracefs.
    pub const DEFAULT: ReclaimConfig = ReclaimConfig {
        min_latency_ns: 1_000_000,
        filter_tgid: 0,
        filter_memcg: 0,
        filter_memcg_id: 0,
        tp_begin_order: 8,
        tp_begin_gfp: 16,
        tp_end_nr: 8,
        tp_node_order: 12,
        tp_node_gfp: 16,
        tp_thr_nid: 8,
        tp_thr_delayed: 16,
        tp_thr_reason: 20,
        tp_kswapd_nid: 8,
        _pad: 0,
    };
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ReclaimConfig {}
