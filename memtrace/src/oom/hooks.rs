//! The OOM family's hooks: the kill (oom:mark_victim), the decision (out_of_memory and
//! oom_badness, exact with fentry/fexit or kprobes; without them the candidates come from a
//! task walk at mark_victim), the reaper, the victim's exit and the allocator's retries.

use memtrace_common::layout::ABSENT;

use crate::{
    engine::hook::{Candidate, Hook, Strategy},
    kernel::{checks::Check, layout::Resolved},
    tracepoints,
};

/// BPF can read a task's memory counters and cgroup with the resolved layout.
fn core_layout(l: &Resolved) -> Result<(), String> {
    if l.missing.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel layout incomplete: {}", l.missing.join("; ")))
    }
}

/// The oom_control members that the exact strategies and the stack scan read.
fn oom_control(l: &Resolved) -> Result<(), String> {
    let l = &l.layout;
    if [l.oc_chosen, l.oc_totalpages, l.oc_memcg, l.oc_constraint].contains(&ABSENT) {
        return Err("struct oom_control lacks chosen/totalpages/memcg/constraint in BTF".into());
    }
    Ok(())
}

const CORE: Check = Check::Layout(core_layout);
const OUT_OF_MEMORY: [Check; 2] = [
    Check::Layout(oom_control),
    Check::ParamTypes("out_of_memory", &["struct oom_control *"]),
];
/// oom_badness(struct task_struct *, unsigned long totalpages) returning long (5.9+).
const OOM_BADNESS: Check =
    Check::ParamTypes("oom_badness", &["struct task_struct *", "long unsigned int"]);

/// A classic oom tracepoint hook with one program.
fn classic(name: &'static str, program: &'static str, fields: &'static [&'static str]) -> Hook {
    Hook::new(name, vec![
        Candidate::new(Strategy::Tracepoint, program, name).requires([Check::Fields(name, fields)]),
    ])
}

pub fn hooks() -> Vec<Hook> {
    let mut mark_victim = tracepoints!("oom_mark_victim", "oom", "mark_victim",
        TpArgs["struct task_struct *"], ["pid"]);
    mark_victim[0].requires.push(CORE);
    mark_victim[1].requires.push(CORE);
    mark_victim[2].limits = "pid only: no victim comm, rss, oom_score_adj or cgroup (the \
        tracepoint does not pass the task on this kernel)";
    let mut exit = tracepoints!("oom_victim_exit", "sched", "sched_process_exit",
        TpArgs["struct task_struct *"], ["pid"]);
    exit.remove(1); // no raw_tp program: tp_btf or the classic tracepoint
    exit[0].requires.push(CORE);
    vec![
        Hook::new("oom:mark_victim", mark_victim),
        Hook::new("oom:out_of_memory", vec![
            Candidate::new(Strategy::Fentry, "oom_enter_fentry", "out_of_memory")
                .requires(OUT_OF_MEMORY)
                .requires([Check::BtfFunc("out_of_memory")]),
            Candidate::new(Strategy::Kprobe, "oom_enter_kprobe", "out_of_memory")
                .requires(OUT_OF_MEMORY)
                .requires([Check::Kprobe("out_of_memory")]),
        ]),
        Hook::new("oom:oom_badness", vec![
            Candidate::new(Strategy::Fexit, "oom_badness_fexit", "oom_badness")
                .requires([OOM_BADNESS, Check::BtfFunc("oom_badness")]),
            Candidate::new(Strategy::Kretprobe, "oom_badness_kretprobe", "oom_badness")
                .requires([OOM_BADNESS, Check::Kprobe("oom_badness")]),
        ]),
        Hook::new("oom:oom_badness entry", vec![
            Candidate::new(Strategy::Kprobe, "oom_badness_kprobe", "oom_badness")
                .requires([OOM_BADNESS, Check::Kprobe("oom_badness")]),
        ]),
        Hook::new("oom:out_of_memory return", vec![
            Candidate::new(Strategy::Fexit, "oom_leave_fexit", "out_of_memory")
                .requires([Check::BtfFunc("out_of_memory")]),
            Candidate::new(Strategy::Kretprobe, "oom_leave_kretprobe", "out_of_memory")
                .requires([Check::Kprobe("out_of_memory")]),
        ]),
        classic("oom:wake_reaper", "oom_wake_reaper", &["pid"]),
        classic("oom:start_task_reaping", "oom_start_task_reaping", &["pid"]),
        classic("oom:finish_task_reaping", "oom_finish_task_reaping", &["pid"]),
        classic("oom:skip_task_reaping", "oom_skip_task_reaping", &["pid"]),
        Hook::new("sched:sched_process_exit (OOM victims)", exit),
        classic("oom:reclaim_retry_zone", "oom_reclaim_retry_zone", &["order", "no_progress_loops"]),
        classic("oom:compact_retry", "oom_compact_retry", &["order", "retries", "max_retries"]),
    ]
}
