//! The reclaim family's BPF global (`RECLAIM_CONFIG`: filters, the streaming threshold,
//! classic tracepoint offsets) and its map sizes.

use std::os::unix::fs::MetadataExt as _;

use memtrace_common::reclaim::{
    Hist, RECLAIM_CONFIG, RECLAIM_HIST0, RECLAIM_HIST1, ReclaimConfig,
};

use super::args::Options;
use crate::{
    engine::{
        family::{Filter, smallest},
        loader::Global,
    },
    kernel::{Kernel, cgroup},
};

/// Kernel inode number (kernfs id) of a memory cgroup given relative to the hierarchy.
fn memcg_id(k: &Kernel, rel: &str) -> Option<u64> {
    let dir = cgroup::memory_cgroup(&k.procfs)?.dir(rel);
    std::fs::metadata(dir).ok().map(|md| md.ino())
}

/// BPF globals of the reclaim programs.
pub fn globals(kernel: &Kernel, cfg: &Filter, opts: &Options) -> Vec<Global> {
    let mut c = ReclaimConfig::DEFAULT;
    c.min_latency_ns = opts.min_latency.as_nanos().min(u64::MAX as u128) as u64;
    c.filter_tgid = cfg.pid.unwrap_or(0);
    if let Some(rel) = cfg.cgroup.as_deref().filter(|r| *r != "/") {
        // Validated to exist by the CLI; a vanished cgroup matches nothing.
        c.filter_memcg = 1;
        c.filter_memcg_id = memcg_id(kernel, rel).unwrap_or(u64::MAX);
    }
    let field = |cat: &str, name: &str, f: &str, dflt: u32| {
        kernel.format(cat, name).and_then(|fmt| fmt.offset(f)).unwrap_or(dflt)
    };
    c.tp_begin_order = field("vmscan", "mm_vmscan_direct_reclaim_begin", "order", c.tp_begin_order);
    c.tp_begin_gfp = field("vmscan", "mm_vmscan_direct_reclaim_begin", "gfp_flags", c.tp_begin_gfp);
    c.tp_end_nr = field("vmscan", "mm_vmscan_direct_reclaim_end", "nr_reclaimed", c.tp_end_nr);
    c.tp_node_order = field("vmscan", "mm_vmscan_node_reclaim_begin", "order", c.tp_node_order);
    c.tp_node_gfp = field("vmscan", "mm_vmscan_node_reclaim_begin", "gfp_flags", c.tp_node_gfp);
    c.tp_thr_nid = field("vmscan", "mm_vmscan_throttled", "nid", c.tp_thr_nid);
    c.tp_thr_delayed = field("vmscan", "mm_vmscan_throttled", "usec_delayed", c.tp_thr_delayed);
    c.tp_thr_reason = field("vmscan", "mm_vmscan_throttled", "reason", c.tp_thr_reason);
    c.tp_kswapd_nid = field("vmscan", "mm_vmscan_kswapd_sleep", "nid", c.tp_kswapd_nid);
    vec![Global::of(RECLAIM_CONFIG, &c)]
}

/// Test-only: a smaller histogram buffer (keys), to show that draining every second loses
/// nothing when a run sees many more keys than a buffer holds.
pub const KEYS_MAX_ENV: &str = "MEMTRACE_RECLAIM_KEYS_MAX";

/// Map sizes for this session: the histogram buffers get as many keys as fit in 16 MiB
/// per buffer on this machine's CPU count (per-CPU values), between 128 and 4096 (fewer,
/// down to 8, with MEMTRACE_RECLAIM_KEYS_MAX); every map shrinks to one entry when the
/// family is not traced.
pub fn map_sizes(traced: bool) -> Vec<(&'static str, u32)> {
    if !traced {
        return smallest(memtrace_common::reclaim::MAP_NAMES);
    }
    let cpus = aya::util::nr_cpus().unwrap_or(1).max(1);
    let per_key = cpus * std::mem::size_of::<Hist>() + 64;
    let by_memory = ((16usize << 20) / per_key).clamp(128, 4096) as u32;
    let keys = std::env::var(KEYS_MAX_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(by_memory, |v| v.clamp(8, by_memory));
    vec![(RECLAIM_HIST0, keys), (RECLAIM_HIST1, keys)]
}
