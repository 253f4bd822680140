//! The OOM family's BPF global (`OOM_CONFIG`): classic tracepoint field offsets, the page
//! shift, the kernel stack size for the oom_control stack scan, the global domain size.

use memtrace_common::oom::{NO_FIELD, OomConfig};

use crate::{engine::loader::Global, kernel::Kernel};

/// A field offset of a classic tracepoint, or NO_FIELD.
fn tp_off(k: &Kernel, cat: &str, name: &str, field: &str) -> u32 {
    k.format(cat, name).and_then(|f| f.offset(field)).unwrap_or(NO_FIELD)
}

/// Kernel stack size: THREAD_SIZE is 16 KiB on x86-64 and arm64, doubled with KASAN, at
/// least a page.
fn thread_size(k: &Kernel) -> u32 {
    let kasan = k.btf.has_func("kasan_report") || k.btf.has_func("__kasan_check_read");
    (16384u32 << u32::from(kasan)).max(crate::kernel::page_size() as u32)
}

/// BPF globals of the oom programs.
pub fn globals(k: &Kernel) -> Vec<Global> {
    let page_bytes = crate::kernel::page_size();
    let mut c = OomConfig::DEFAULT;
    let pid = tp_off(k, "oom", "mark_victim", "pid");
    c.tp_pid_offset = if pid == NO_FIELD { 8 } else { pid };
    c.page_shift = page_bytes.trailing_zeros();
    c.thread_size = thread_size(k);
    if let Some(m) = k.procfs.meminfo() {
        let (total, swap) = (m.get("MemTotal").copied(), m.get("SwapTotal").copied());
        if let (Some(total), Some(swap)) = (total, swap) {
            c.global_totalpages = (total + swap) * 1024 / page_bytes;
        }
    }
    for (i, tp) in ["wake_reaper", "start_task_reaping", "finish_task_reaping", "skip_task_reaping"]
        .iter()
        .enumerate()
    {
        c.reaper_pid_offset[i] = tp_off(k, "oom", tp, "pid");
    }
    c.exit_pid_offset = tp_off(k, "sched", "sched_process_exit", "pid");
    let rrz = |f| tp_off(k, "oom", "reclaim_retry_zone", f);
    c.rrz_node = rrz("node");
    c.rrz_zone_idx = rrz("zone_idx");
    c.rrz_order = rrz("order");
    c.rrz_reclaimable = rrz("reclaimable");
    c.rrz_available = rrz("available");
    c.rrz_min_wmark = rrz("min_wmark");
    c.rrz_no_progress_loops = rrz("no_progress_loops");
    c.rrz_wmark_check = rrz("wmark_check");
    let cr = |f| tp_off(k, "oom", "compact_retry", f);
    c.cr_order = cr("order");
    c.cr_priority = cr("priority");
    c.cr_result = cr("result");
    c.cr_retries = cr("retries");
    c.cr_max_retries = cr("max_retries");
    c.cr_ret = cr("ret");
    vec![Global::of("OOM_CONFIG", &c)]
}
