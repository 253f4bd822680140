//! The reclaim family's hooks. Stalls: direct, memcg, soft-limit and node reclaim
//! (begin/end pairs), reclaim throttling, direct compaction, memory.high enforcement
//! (kprobe only). Context: kswapd wake/sleep.

use memtrace_common::layout::ABSENT;

use crate::{
    engine::hook::{Candidate, Hook, Strategy},
    kernel::{checks::Check, layout::Resolved},
    tracepoints,
};

fn compaction_layout(l: &Resolved) -> Result<(), String> {
    if l.layout.cc_direct_compaction == ABSENT {
        Err("struct compact_control has no direct_compaction member".into())
    } else {
        Ok(())
    }
}

fn over_high_layout(l: &Resolved) -> Result<(), String> {
    if l.layout.task_memcg_nr_pages_over_high == ABSENT {
        Err("task_struct has no memcg_nr_pages_over_high".into())
    } else {
        Ok(())
    }
}

/// Direct compaction (compact_zone runs with cc->direct_compaction): tp_btf or raw_tp
/// only, the classic record does not say whether the run is direct.
fn compaction(name: &'static str, mut c: Vec<Candidate>) -> Hook {
    c.truncate(2);
    for c in &mut c {
        c.requires.push(Check::Layout(compaction_layout));
    }
    Hook::new(name, c)
}

pub fn hooks() -> Vec<Hook> {
    vec![
        Hook::new("vmscan:direct_begin", tracepoints!("rc_direct_b", "vmscan",
            "mm_vmscan_direct_reclaim_begin", TpArgs["int", "gfp_t"], ["order", "gfp_flags"])),
        Hook::new("vmscan:direct_end", tracepoints!("rc_direct_e", "vmscan",
            "mm_vmscan_direct_reclaim_end", TpArgs["long unsigned int"], ["nr_reclaimed"])),
        Hook::new("vmscan:memcg_begin", tracepoints!("rc_memcg_b", "vmscan",
            "mm_vmscan_memcg_reclaim_begin", TpArgs["int", "gfp_t"], ["order", "gfp_flags"])),
        Hook::new("vmscan:memcg_end", tracepoints!("rc_memcg_e", "vmscan",
            "mm_vmscan_memcg_reclaim_end", TpArgs["long unsigned int"], ["nr_reclaimed"])),
        Hook::new("vmscan:softlimit_begin", tracepoints!("rc_soft_b", "vmscan",
            "mm_vmscan_memcg_softlimit_reclaim_begin", TpArgs["int", "gfp_t"], ["order", "gfp_flags"])),
        Hook::new("vmscan:softlimit_end", tracepoints!("rc_soft_e", "vmscan",
            "mm_vmscan_memcg_softlimit_reclaim_end", TpArgs["long unsigned int"], ["nr_reclaimed"])),
        Hook::new("vmscan:node_begin", tracepoints!("rc_node_b", "vmscan",
            "mm_vmscan_node_reclaim_begin", TpArgs["int", "int", "gfp_t"], ["nid", "order", "gfp_flags"])),
        Hook::new("vmscan:node_end", tracepoints!("rc_node_e", "vmscan",
            "mm_vmscan_node_reclaim_end", TpArgs["long unsigned int"], ["nr_reclaimed"])),
        Hook::new("vmscan:throttled", tracepoints!("rc_throttle", "vmscan",
            "mm_vmscan_throttled", TpArgs["int", "int", "int", "int"], ["usec_delayed", "reason"])),
        Hook::new("vmscan:kswapd_wake", tracepoints!("rc_kswapd_w", "vmscan",
            "mm_vmscan_kswapd_wake", TpArgs["int"], ["nid"])),
        Hook::new("vmscan:kswapd_sleep", tracepoints!("rc_kswapd_s", "vmscan",
            "mm_vmscan_kswapd_sleep", TpArgs["int"], ["nid"])),
        compaction("compaction:begin", tracepoints!("rc_cmpct_b", "compaction",
            "mm_compaction_begin", TpArgs["struct compact_control *"], [])),
        compaction("compaction:end", tracepoints!("rc_cmpct_e", "compaction",
            "mm_compaction_end", TpArgs["struct compact_control *"], [])),
        Hook::new("memcg:over_high", vec![
            Candidate::new(Strategy::Kprobe, "rc_high_enter", "mem_cgroup_handle_over_high")
                .requires([
                    Check::Kprobe("mem_cgroup_handle_over_high"),
                    Check::Layout(over_high_layout),
                ]),
        ]),
        Hook::new("memcg:over_high_return", vec![
            Candidate::new(Strategy::Kretprobe, "rc_high_exit", "mem_cgroup_handle_over_high")
                .requires([Check::Kprobe("mem_cgroup_handle_over_high")]),
        ]),
    ]
}
