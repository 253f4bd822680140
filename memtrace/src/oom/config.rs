//! The OOM family's BPF global (`OOM_CONFIG`): classic tracepoint field offsets, the page
//! shift, the kernel stack size for the oom_control stack scan, the global domain size,
//! the walk's limit; and the sizes of the family's two ring buffers.

use memtrace_common::oom::{
    NO_FIELD, OOM_CANDIDATES, OOM_KILLS, OomCandidateEvent, OomConfig, OomKillEvent,
};

use crate::{
    engine::{loader::Global, rings, rings::Ring},
    kernel::{Kernel, procfs::Procfs},
};

/// Test only: `MEMTRACE_OOM_MAX_WALK=N` lowers the walk's limit (tasks sent as candidate
/// records; past it the domain's processes are only counted), to make it bind.
pub const MAX_WALK_ENV: &str = "MEMTRACE_OOM_MAX_WALK";

/// Kill records `OOM_KILLS` holds: a decision's kill and its memory.oom.group members
/// (each a kill record) while the agent drains; reaper records are small.
const KILL_RECORDS: u64 = 96;
/// Headroom in `OOM_CANDIDATES` per CPU, in records: the kernel's own allowance of pids
/// per CPU is 1024 (PIDS_PER_CPU_DEFAULT), a quarter of it here, for processes forked
/// after memtrace sized the ring.
const CANDIDATES_PER_CPU: u64 = 256;

/// The walk's limit: `max_walk` of the default config, or [`MAX_WALK_ENV`].
fn max_walk() -> u32 {
    std::env::var(MAX_WALK_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(OomConfig::DEFAULT.max_walk)
}

/// Candidate records `OOM_CANDIDATES` holds: one decision sends at most one record per
/// process of its domain, so twice the host's tasks (room for a second decision before
/// the agent drained the first, and for tasks started later) and [`CANDIDATES_PER_CPU`]
/// per CPU; at most `max_walk` (the walk sends no more; the kernel's own scan evaluates no
/// more processes than a host has).
pub fn candidate_records(tasks: u64, cpus: u64, max_walk: u32) -> u64 {
    (2 * tasks + CANDIDATES_PER_CPU * cpus.max(1)).min(u64::from(max_walk.max(1)))
}

/// The scheduling entities in /proc/loadavg ("0.10 0.20 0.30 2/149 4242": 149).
fn loadavg_tasks(loadavg: &str) -> Option<u64> {
    loadavg.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()
}

/// The host's task count: the scheduling entities of /proc/loadavg (threads included: at
/// least the processes an OOM can evaluate), or 32768 (the default pid_max) when
/// unreadable.
fn tasks(procfs: &Procfs) -> u64 {
    let tasks = procfs.read("proc/loadavg").as_deref().and_then(loadavg_tasks);
    if tasks.is_none() {
        log::warn!("/proc/loadavg unreadable: the OOM candidate ring is sized for 32768 tasks");
    }
    tasks.unwrap_or(32_768)
}

/// The family's ring buffers: kill records on their own (never crowded out by candidates),
/// candidates sized from the host's tasks and CPUs.
pub fn ring_buffers(k: &Kernel) -> Vec<Ring> {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
    let cand = std::mem::size_of::<OomCandidateEvent>();
    let kill = std::mem::size_of::<OomKillEvent>();
    let tasks = tasks(&k.procfs);
    let cands = candidate_records(tasks, cpus, max_walk());
    log::info!("OOM candidates: room for {cands} records ({tasks} tasks, {cpus} CPUs)");
    vec![
        Ring { name: OOM_KILLS, bytes: rings::bytes_for(KILL_RECORDS, kill, 1 << 20) },
        Ring { name: OOM_CANDIDATES, bytes: rings::bytes_for(cands, cand, 64 << 20) },
    ]
}

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
    c.max_walk = max_walk();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_count_is_read_from_loadavg() {
        assert_eq!(loadavg_tasks("6.61 4.60 3.98 6/149 29416\n"), Some(149));
        assert_eq!(loadavg_tasks("0.00 0.00 0.00 1/10250 1"), Some(10_250));
        assert_eq!(loadavg_tasks(""), None);
        assert_eq!(loadavg_tasks("0.00 0.00 0.00 149 1"), None);
        let root = crate::kernel::procfs::fake::Root::new("oom-loadavg");
        assert_eq!(tasks(&root.procfs()), 32_768, "unreadable: the default pid_max");
        root.write("proc/loadavg", "0.10 0.20 0.30 2/149 4242\n");
        assert_eq!(tasks(&root.procfs()), 149);
        let here = Procfs::system().read("proc/loadavg");
        assert!(here.as_deref().and_then(loadavg_tasks).is_some(), "{here:?}");
    }

    #[test]
    fn the_candidate_ring_holds_every_process_twice_over() {
        assert_eq!(candidate_records(100, 2, 65_536), 712);
        assert_eq!(candidate_records(10_100, 2, 65_536), 20_712);
        assert_eq!(candidate_records(200_000, 64, 65_536), 65_536, "one walk at most");
        assert_eq!(candidate_records(10_100, 2, 1000), 1000, "a lowered limit");
        // 128 bytes a record with the kernel's header: 10,100 tasks take 4 MiB, a small
        // host 128 KiB, the largest 8 MiB.
        let size = std::mem::size_of::<OomCandidateEvent>();
        assert_eq!(size + 8, 128);
        assert_eq!(rings::bytes_for(20_712, size, 64 << 20), 4 << 20);
        assert_eq!(rings::bytes_for(712, size, 64 << 20), 128 << 10);
        assert_eq!(rings::bytes_for(65_536, size, 64 << 20), 8 << 20);
        // The kill records: 96 of them (2,664 bytes each with the header) in 256 KiB.
        let kill = std::mem::size_of::<OomKillEvent>();
        assert_eq!(rings::bytes_for(KILL_RECORDS, kill, 1 << 20), 256 << 10);
        assert!(256 << 10 >= KILL_RECORDS as usize * (kill + 8));
    }
}
