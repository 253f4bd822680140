//! The oom programs' BPF global `OOM_CONFIG`: kernel constants and classic-tracepoint
//! field offsets, set by the agent at load.

/// Name of the BPF global holding an [`OomConfig`].
pub const OOM_CONFIG: &str = "OOM_CONFIG";

/// Offset value meaning "this tracepoint field does not exist on this kernel".
pub const NO_FIELD: u32 = u32::MAX;

/// Global `OOM_CONFIG` for the oom programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomConfig {
    /// Byte offset of `pid` in the classic tracepoint record (tracefs format), used only by
    /// the classic-tracepoint fallback.
    pub tp_pid_offset: u32,
    pub _pad: u32,

    /// log2 of the page size (`PAGE_SHIFT`).
    pub page_shift: u32,
    /// Size of a task's kernel stack (`THREAD_SIZE`), scanned for the `oom_control`.
    pub thread_size: u32,
    /// Bit number of `MMF_OOM_SKIP` in `mm->flags`.
    pub mmf_oom_skip_bit: u32,
    /// `PF_KTHREAD` and `PF_EXITING` task flags.
    pub pf_kthread: u32,
    pub pf_exiting: u32,
    /// Most tasks a candidate walk sends records for; the domain's processes past them are
    /// only counted (`OomKillEvent::cand_unwalked`).
    pub max_walk: u32,
    /// RAM + swap in pages (`MemTotal + SwapTotal` when the agent started): the OOM domain
    /// of a global OOM whose `oom_control` could not be read.
    pub global_totalpages: u64,

    /// `pid` offsets of oom:wake_reaper, start_task_reaping, finish_task_reaping,
    /// skip_task_reaping, and sched:sched_process_exit (classic tracepoints).
    pub reaper_pid_offset: [u32; 4],
    pub exit_pid_offset: u32,

    /// oom:reclaim_retry_zone fields.
    pub rrz_node: u32,
    pub rrz_zone_idx: u32,
    pub rrz_order: u32,
    pub rrz_reclaimable: u32,
    pub rrz_available: u32,
    pub rrz_min_wmark: u32,
    pub rrz_no_progress_loops: u32,
    pub rrz_wmark_check: u32,

    /// oom:compact_retry fields.
    pub cr_order: u32,
    pub cr_priority: u32,
    pub cr_result: u32,
    pub cr_retries: u32,
    pub cr_max_retries: u32,
    pub cr_ret: u32,
    pub _pad2: u32,
}

impl OomConfig {
    pub const DEFAULT: OomConfig = OomConfig {
        tp_pid_offset: 8,
        _pad: 0,
        page_shift: 12,
        thread_size: 16384,
        mmf_oom_skip_bit: 21,
        pf_kthread: 0x0020_0000,
        pf_exiting: 0x4,
        max_walk: 65_536,
        global_totalpages: 0,
        reaper_pid_offset: [NO_FIELD; 4],
        exit_pid_offset: NO_FIELD,
        rrz_node: NO_FIELD,
        rrz_zone_idx: NO_FIELD,
        rrz_order: NO_FIELD,
        rrz_reclaimable: NO_FIELD,
        rrz_available: NO_FIELD,
        rrz_min_wmark: NO_FIELD,
        rrz_no_progress_loops: NO_FIELD,
        rrz_wmark_check: NO_FIELD,
        cr_order: NO_FIELD,
        cr_priority: NO_FIELD,
        cr_result: NO_FIELD,
        cr_retries: NO_FIELD,
        cr_max_retries: NO_FIELD,
        cr_ret: NO_FIELD,
        _pad2: 0,
    };
}

impl Default for OomConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for OomConfig {}
