//! Hook selection: every probe family's hooks, each with its ordered strategies and the
//! runtime checks that decide between them. This table is the only place that knows which
//! kernel offers what; `memtrace doctor` prints its decisions.
//!
//! Checks look at the running kernel (BTF types and tracepoint prototypes, tracefs
//! format files, kprobe support), never at version numbers; the final word is the load and
//! attach attempt in `probes`.

use memtrace_common::Family;

use crate::system::Kernel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code, reason = "kprobe/fentry strategies are chosen only on kernels that allow them")]
pub enum Strategy {
    TpBtf,
    RawTracepoint,
    Tracepoint,
    Kprobe,
    Kretprobe,
    Fentry,
    Fexit,
}

impl Strategy {
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::TpBtf => "tp_btf",
            Strategy::RawTracepoint => "raw_tp",
            Strategy::Tracepoint => "tracepoint",
            Strategy::Kprobe => "kprobe",
            Strategy::Kretprobe => "kretprobe",
            Strategy::Fentry => "fentry",
            Strategy::Fexit => "fexit",
        }
    }
}

/// One way to implement a hook.
pub struct Candidate {
    pub strategy: Strategy,
    /// Program name in the BPF object.
    pub program: &'static str,
    /// tp_btf / raw_tp / kprobe / fentry target, or the classic tracepoint "category:name".
    pub target: &'static str,
    /// What this strategy cannot see (empty when complete); reported as a coverage gap.
    pub limits: &'static str,
    pub check: fn(&Kernel) -> Result<(), String>,
}

/// A kernel event a family needs, with its strategies best first.
pub struct Hook {
    pub family: Family,
    pub name: &'static str,
    pub candidates: Vec<Candidate>,
}

/// The BTF tracepoint exists and its first argument has the given type.
fn btf_tp_first_arg(k: &Kernel, tp: &str, ty: &str) -> Result<(), String> {
    match k.btf.tracepoint_args(tp) {
        None => Err(format!("no btf_trace_{tp} in BTF")),
        Some(args) => match args.first() {
            Some((_, t)) if t == ty => Ok(()),
            Some((_, t)) => Err(format!("{tp} passes `{t}`, not `{ty}`")),
            None => Err(format!("{tp} has no arguments")),
        },
    }
}

/// The classic tracepoint exists with the given fields.
fn classic_tp(k: &Kernel, category: &str, name: &str, fields: &[&str]) -> Result<(), String> {
    let Some(f) = crate::tracefs::format(&k.tracefs, category, name) else {
        return Err(format!("no tracepoint {category}:{name} in tracefs"));
    };
    for field in fields {
        if f.field(field).is_none() {
            return Err(format!("{category}:{name} has no field {field}"));
        }
    }
    Ok(())
}

/// kprobes exist and the function is in kallsyms (not inlined away).
#[allow(dead_code, reason = "used by the families with kprobe strategies")]
pub fn kprobe_target(k: &Kernel, func: &str) -> Result<(), String> {
    if !k.kprobes {
        return Err("kernel has no kprobes (CONFIG_KPROBES off)".into());
    }
    if !crate::system::kallsyms_has(func) {
        return Err(format!("{func} is not in /proc/kallsyms (inlined or renamed)"));
    }
    Ok(())
}

/// The function is in BTF (fentry/fexit need its prototype); the load attempt decides the
/// rest (lockdown policies refuse fentry on some kernels).
#[allow(dead_code, reason = "used by the families with fentry strategies")]
pub fn fentry_target(k: &Kernel, func: &str) -> Result<(), String> {
    if k.btf.has_func(func) {
        Ok(())
    } else {
        Err(format!("{func} is not a BTF function on this kernel"))
    }
}

/// Whether BPF can read a task's memory cgroup with the resolved layout.
fn layout_complete(k: &Kernel) -> Result<(), String> {
    if k.layout.missing.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel layout incomplete: {}", k.layout.missing.join("; ")))
    }
}

/// Parameters (name, printable type) and return type of a BTF function.
pub fn func_signature(k: &Kernel, func: &str) -> Option<(Vec<(String, String)>, String)> {
    use crate::btf::Kind;
    let f = k.btf.get(k.btf.find(func, Kind::Func)?)?;
    let proto = k.btf.get(f.size_or_type)?;
    if proto.kind != Kind::FuncProto {
        return None;
    }
    let params = proto.params.iter().map(|(n, t)| (n.clone(), k.btf.type_name(*t))).collect();
    Some((params, k.btf.type_name(proto.size_or_type)))
}

/// The function's first parameters have these names and types.
fn func_params_start(k: &Kernel, func: &str, want: &[(&str, &str)]) -> Result<(), String> {
    let (params, _) =
        func_signature(k, func).ok_or_else(|| format!("{func} is not a BTF function"))?;
    for (i, (name, ty)) in want.iter().enumerate() {
        match params.get(i) {
            Some((n, t)) if n == name && t == ty => {}
            Some((n, t)) => {
                return Err(format!("{func} argument {i} is `{t} {n}`, not `{ty} {name}`"));
            }
            None => return Err(format!("{func} has fewer than {} arguments", i + 1)),
        }
    }
    Ok(())
}

/// Whether BPF can follow folio -> mapping -> inode -> superblock on this kernel.
fn shmem_layout(k: &Kernel) -> Result<(), String> {
    if k.layout.shmem_missing.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel layout incomplete: {}", k.layout.shmem_missing.join("; ")))
    }
}

/// The memory controller is enabled (/proc/cgroups): memcg stat tracepoints fire.
fn memcg_enabled() -> Result<(), String> {
    let t = std::fs::read_to_string("/proc/cgroups").map_err(|e| format!("/proc/cgroups: {e}"))?;
    // subsys_name hierarchy num_cgroups enabled
    let on = t.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&"memory") && f.get(3) == Some(&"1")
    });
    if on { Ok(()) } else { Err("the memory cgroup controller is disabled".into()) }
}

/// NR_SHMEM resolves from BTF (`enum node_stat_item`).
fn nr_shmem(k: &Kernel) -> Result<(), String> {
    crate::layout::enum_value_in(&k.btf, "node_stat_item", "NR_SHMEM")
        .map(|_| ())
        .ok_or_else(|| "no NR_SHMEM in enum node_stat_item".into())
}

const SHMEM_ADD: &str = "shmem_add_to_page_cache";
const SHMEM_ADD_ARGS: &[(&str, &str)] =
    &[("folio", "struct folio *"), ("mapping", "struct address_space *")];
const SHMEM_LRU_LIMITS: &str = "the file is exact; the allocating task is matched \
    through per-CPU memcg NR_SHMEM runs, or is the task that drained the per-CPU LRU batch \
    without them: usually, not always, the allocator";

fn shmem_hooks() -> Vec<Hook> {
    vec![
        Hook {
            family: Family::Shmem,
            name: "shmem:alloc",
            candidates: vec![
                Candidate {
                    strategy: Strategy::Fexit,
                    program: "shmem_add_fexit",
                    target: SHMEM_ADD,
                    limits: "",
                    check: |k| {
                        fentry_target(k, SHMEM_ADD)?;
                        func_params_start(k, SHMEM_ADD, SHMEM_ADD_ARGS)?;
                        shmem_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::Kprobe,
                    program: "shmem_add_kprobe",
                    target: SHMEM_ADD,
                    limits: "counted on entry: an add that then fails (a racing fault on the same \
                        page, a memcg charge failure on kernels that charge inside) is counted \
                        as allocated",
                    check: |k| {
                        kprobe_target(k, SHMEM_ADD)?;
                        func_params_start(k, SHMEM_ADD, SHMEM_ADD_ARGS)?;
                        shmem_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::Kretprobe,
                    program: "shmem_alloc_kretprobe",
                    target: "shmem_alloc_and_add_folio",
                    limits: "pages re-added to the page cache by swap-in are not seen",
                    check: |k| {
                        kprobe_target(k, "shmem_alloc_and_add_folio")?;
                        match func_signature(k, "shmem_alloc_and_add_folio") {
                            Some((_, ret)) if ret == "struct folio *" => shmem_layout(k),
                            Some((_, ret)) => Err(format!(
                                "shmem_alloc_and_add_folio returns `{ret}`, not a folio"
                            )),
                            None => Err("shmem_alloc_and_add_folio is not in BTF".into()),
                        }
                    },
                },
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: "shmem_lru_btf",
                    target: "mm_lru_insertion",
                    limits: SHMEM_LRU_LIMITS,
                    check: |k| {
                        btf_tp_first_arg(k, "mm_lru_insertion", "struct folio *")?;
                        shmem_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: "shmem_lru_raw",
                    target: "mm_lru_insertion",
                    limits: SHMEM_LRU_LIMITS,
                    check: |k| {
                        btf_tp_first_arg(k, "mm_lru_insertion", "struct folio *")?;
                        shmem_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: "shmem_lru_tp",
                    target: "pagemap:mm_lru_insertion",
                    limits: SHMEM_LRU_LIMITS,
                    check: |k| {
                        classic_tp(k, "pagemap", "mm_lru_insertion", &["folio", "flags"])?;
                        shmem_layout(k)
                    },
                },
            ],
        },
        Hook {
            family: Family::Shmem,
            name: "shmem:nr_shmem",
            candidates: vec![
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: "shmem_memcg_btf",
                    target: "mod_memcg_lruvec_state",
                    limits: "",
                    check: |k| {
                        btf_tp_first_arg(k, "mod_memcg_lruvec_state", "struct mem_cgroup *")?;
                        nr_shmem(k)?;
                        memcg_enabled()
                    },
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: "shmem_memcg_raw",
                    target: "mod_memcg_lruvec_state",
                    limits: "",
                    check: |k| {
                        btf_tp_first_arg(k, "mod_memcg_lruvec_state", "struct mem_cgroup *")?;
                        nr_shmem(k)?;
                        memcg_enabled()
                    },
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: "shmem_memcg_tp",
                    target: "memcg:mod_memcg_lruvec_state",
                    limits: "the cgroup path is the current task's (the charged memcg differs \
                        only for remote charges)",
                    check: |k| {
                        classic_tp(k, "memcg", "mod_memcg_lruvec_state", &["id", "item", "val"])?;
                        nr_shmem(k)?;
                        memcg_enabled()
                    },
                },
            ],
        },
        Hook {
            family: Family::Shmem,
            name: "shmem:free",
            candidates: vec![
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: "shmem_free_btf",
                    target: "mm_filemap_delete_from_page_cache",
                    limits: "",
                    check: |k| {
                        btf_tp_first_arg(k, "mm_filemap_delete_from_page_cache", "struct folio *")?;
                        shmem_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: "shmem_free_raw",
                    target: "mm_filemap_delete_from_page_cache",
                    limits: "",
                    check: |k| {
                        btf_tp_first_arg(k, "mm_filemap_delete_from_page_cache", "struct folio *")?;
                        shmem_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: "shmem_free_tp",
                    target: "filemap:mm_filemap_delete_from_page_cache",
                    limits: "no folio: shmem is recognised by superblock (tmpfs mounts, the \
                        internal shm mount, superblocks seen allocating), and folios truncated before \
                        their LRU insertion are not counted (LRU allocation strategy)",
                    check: |k| {
                        classic_tp(k, "filemap", "mm_filemap_delete_from_page_cache", &[
                            "s_dev", "i_ino",
                        ])
                    },
                },
            ],
        },
    ]
}

pub fn table() -> Vec<Hook> {
    let mut t = table_base();
    t.extend(shmem_hooks());
    t
}

fn table_base() -> Vec<Hook> {
    vec![Hook {
        family: Family::Oom,
        name: "oom:mark_victim",
        candidates: vec![
            Candidate {
                strategy: Strategy::TpBtf,
                program: "oom_mark_victim_btf",
                target: "mark_victim",
                limits: "",
                check: |k| {
                    btf_tp_first_arg(k, "mark_victim", "struct task_struct *")?;
                    layout_complete(k)
                },
            },
            Candidate {
                strategy: Strategy::RawTracepoint,
                program: "oom_mark_victim_raw",
                target: "mark_victim",
                limits: "",
                check: |k| {
                    btf_tp_first_arg(k, "mark_victim", "struct task_struct *")?;
                    layout_complete(k)
                },
            },
            Candidate {
                strategy: Strategy::Tracepoint,
                program: "oom_mark_victim_tp",
                target: "oom:mark_victim",
                limits: "pid only: no victim comm, rss, oom_score_adj or cgroup (the \
                         tracepoint does not pass the task on this kernel)",
                check: |k| classic_tp(k, "oom", "mark_victim", &["pid"]),
            },
        ],
    },
    // OOM decision (issue 4). Exact candidate scores need the three out_of_memory /
    // oom_badness hooks; without them the candidates come from a task walk at mark_victim.
    Hook {
        family: Family::Oom,
        name: "oom:out_of_memory",
        candidates: vec![
            Candidate {
                strategy: Strategy::Fentry,
                program: "oom_enter_fentry",
                target: "out_of_memory",
                limits: "",
                check: |k| {
                    crate::oom::check_out_of_memory(k)?;
                    fentry_target(k, "out_of_memory")
                },
            },
            Candidate {
                strategy: Strategy::Kprobe,
                program: "oom_enter_kprobe",
                target: "out_of_memory",
                limits: "",
                check: |k| {
                    crate::oom::check_out_of_memory(k)?;
                    kprobe_target(k, "out_of_memory")
                },
            },
        ],
    },
    Hook {
        family: Family::Oom,
        name: "oom:oom_badness",
        candidates: vec![
            Candidate {
                strategy: Strategy::Fexit,
                program: "oom_badness_fexit",
                target: "oom_badness",
                limits: "",
                check: |k| {
                    crate::oom::check_oom_badness(k)?;
                    fentry_target(k, "oom_badness")
                },
            },
            Candidate {
                strategy: Strategy::Kretprobe,
                program: "oom_badness_kretprobe",
                target: "oom_badness",
                limits: "",
                check: |k| {
                    crate::oom::check_oom_badness(k)?;
                    kprobe_target(k, "oom_badness")
                },
            },
        ],
    },
    Hook {
        family: Family::Oom,
        name: "oom:oom_badness entry",
        candidates: vec![Candidate {
            strategy: Strategy::Kprobe,
            program: "oom_badness_kprobe",
            target: "oom_badness",
            limits: "",
            check: |k| {
                crate::oom::check_oom_badness(k)?;
                kprobe_target(k, "oom_badness")
            },
        }],
    },
    Hook {
        family: Family::Oom,
        name: "oom:out_of_memory return",
        candidates: vec![
            Candidate {
                strategy: Strategy::Fexit,
                program: "oom_leave_fexit",
                target: "out_of_memory",
                limits: "",
                check: |k| fentry_target(k, "out_of_memory"),
            },
            Candidate {
                strategy: Strategy::Kretprobe,
                program: "oom_leave_kretprobe",
                target: "out_of_memory",
                limits: "",
                check: |k| kprobe_target(k, "out_of_memory"),
            },
        ],
    },
    Hook {
        family: Family::Oom,
        name: "oom:wake_reaper",
        candidates: vec![Candidate {
            strategy: Strategy::Tracepoint,
            program: "oom_wake_reaper",
            target: "oom:wake_reaper",
            limits: "",
            check: |k| classic_tp(k, "oom", "wake_reaper", &["pid"]),
        }],
    },
    Hook {
        family: Family::Oom,
        name: "oom:start_task_reaping",
        candidates: vec![Candidate {
            strategy: Strategy::Tracepoint,
            program: "oom_start_task_reaping",
            target: "oom:start_task_reaping",
            limits: "",
            check: |k| classic_tp(k, "oom", "start_task_reaping", &["pid"]),
        }],
    },
    Hook {
        family: Family::Oom,
        name: "oom:finish_task_reaping",
        candidates: vec![Candidate {
            strategy: Strategy::Tracepoint,
            program: "oom_finish_task_reaping",
            target: "oom:finish_task_reaping",
            limits: "",
            check: |k| classic_tp(k, "oom", "finish_task_reaping", &["pid"]),
        }],
    },
    Hook {
        family: Family::Oom,
        name: "oom:skip_task_reaping",
        candidates: vec![Candidate {
            strategy: Strategy::Tracepoint,
            program: "oom_skip_task_reaping",
            target: "oom:skip_task_reaping",
            limits: "",
            check: |k| classic_tp(k, "oom", "skip_task_reaping", &["pid"]),
        }],
    },
    Hook {
        family: Family::Oom,
        name: "sched:sched_process_exit (OOM victims)",
        candidates: vec![
            Candidate {
                strategy: Strategy::TpBtf,
                program: "oom_victim_exit_btf",
                target: "sched_process_exit",
                limits: "",
                check: |k| {
                    btf_tp_first_arg(k, "sched_process_exit", "struct task_struct *")?;
                    layout_complete(k)
                },
            },
            Candidate {
                strategy: Strategy::Tracepoint,
                program: "oom_victim_exit_tp",
                target: "sched:sched_process_exit",
                limits: "",
                check: |k| classic_tp(k, "sched", "sched_process_exit", &["pid"]),
            },
        ],
    },
    Hook {
        family: Family::Oom,
        name: "oom:reclaim_retry_zone",
        candidates: vec![Candidate {
            strategy: Strategy::Tracepoint,
            program: "oom_reclaim_retry_zone",
            target: "oom:reclaim_retry_zone",
            limits: "",
            check: |k| classic_tp(k, "oom", "reclaim_retry_zone", &["order", "no_progress_loops"]),
        }],
    },
    Hook {
        family: Family::Oom,
        name: "oom:compact_retry",
        candidates: vec![Candidate {
            strategy: Strategy::Tracepoint,
            program: "oom_compact_retry",
            target: "oom:compact_retry",
            limits: "",
            check: |k| classic_tp(k, "oom", "compact_retry", &["order", "retries", "max_retries"]),
        }],
    }]
    .into_iter()
    .chain(reclaim_hooks())
    .chain(slab_hooks())
    .collect()
}

/// The hooks of the given families.
pub fn for_families(families: &[Family]) -> Vec<Hook> {
    table().into_iter().filter(|h| families.contains(&h.family)).collect()
}

/// Families this build traces (those with at least one hook in the table).
pub fn implemented() -> Vec<Family> {
    let t = table();
    Family::ALL.into_iter().filter(|f| t.iter().any(|h| h.family == *f)).collect()
}

/// The BTF tracepoint exists and its arguments start with the given types.
fn btf_tp_args(k: &Kernel, tp: &str, types: &[&str]) -> Result<(), String> {
    let Some(args) = k.btf.tracepoint_args(tp) else {
        return Err(format!("no btf_trace_{tp} in BTF"));
    };
    for (i, want) in types.iter().enumerate() {
        match args.get(i) {
            Some((_, t)) if t == want => {}
            Some((_, t)) => return Err(format!("{tp} argument {i} is `{t}`, not `{want}`")),
            None => return Err(format!("{tp} has {} arguments, not {}", args.len(), types.len())),
        }
    }
    Ok(())
}

/// A vmscan tracepoint hook of the reclaim family: tp_btf, raw_tp, classic tracepoint.
macro_rules! reclaim_tp {
    ($name:literal, $tp:literal, $prefix:literal, [$($arg:literal),*], [$($field:literal),*]) => {
        Hook {
            family: Family::Reclaim,
            name: $name,
            candidates: vec![
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: concat!($prefix, "_btf"),
                    target: $tp,
                    limits: "",
                    check: |k| btf_tp_args(k, $tp, &[$($arg),*]),
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: concat!($prefix, "_raw"),
                    target: $tp,
                    limits: "",
                    check: |k| btf_tp_args(k, $tp, &[$($arg),*]),
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: concat!($prefix, "_tp"),
                    target: concat!("vmscan:", $tp),
                    limits: "",
                    check: |k| classic_tp(k, "vmscan", $tp, &[$($field),*]),
                },
            ],
        }
    };
}

/// Direct compaction (compact_zone runs with cc->direct_compaction): tp_btf or raw_tp
/// only, the classic record does not say whether the run is direct.
macro_rules! reclaim_compaction {
    ($name:literal, $tp:literal, $prefix:literal) => {
        Hook {
            family: Family::Reclaim,
            name: $name,
            candidates: vec![
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: concat!($prefix, "_btf"),
                    target: $tp,
                    limits: "",
                    check: |k| {
                        btf_tp_args(k, $tp, &["struct compact_control *"])?;
                        compaction_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: concat!($prefix, "_raw"),
                    target: $tp,
                    limits: "",
                    check: |k| {
                        btf_tp_args(k, $tp, &["struct compact_control *"])?;
                        compaction_layout(k)
                    },
                },
            ],
        }
    };
}

fn compaction_layout(k: &Kernel) -> Result<(), String> {
    let l = &k.layout.layout;
    if l.cc_direct_compaction == memtrace_common::layout::ABSENT {
        Err("struct compact_control has no direct_compaction member".into())
    } else {
        Ok(())
    }
}

/// The reclaim family's hooks. Stalls: direct, memcg, soft-limit and node reclaim
/// (begin/end pairs), reclaim throttling, direct compaction, memory.high enforcement
/// (kprobe only). Context: kswapd wake/sleep.
fn reclaim_hooks() -> Vec<Hook> {
    vec![
        reclaim_tp!(
            "vmscan:direct_begin",
            "mm_vmscan_direct_reclaim_begin", "rc_direct_b", ["int", "gfp_t"], ["order", "gfp_flags"]),
        reclaim_tp!(
            "vmscan:direct_end",
            "mm_vmscan_direct_reclaim_end", "rc_direct_e", ["long unsigned int"], ["nr_reclaimed"]),
        reclaim_tp!(
            "vmscan:memcg_begin",
            "mm_vmscan_memcg_reclaim_begin", "rc_memcg_b", ["int", "gfp_t"], ["order", "gfp_flags"]),
        reclaim_tp!(
            "vmscan:memcg_end",
            "mm_vmscan_memcg_reclaim_end", "rc_memcg_e", ["long unsigned int"], ["nr_reclaimed"]),
        reclaim_tp!(
            "vmscan:softlimit_begin",
            "mm_vmscan_memcg_softlimit_reclaim_begin",
            "rc_soft_b",
            ["int", "gfp_t"],
            ["order", "gfp_flags"]
        ),
        reclaim_tp!(
            "vmscan:softlimit_end",
            "mm_vmscan_memcg_softlimit_reclaim_end",
            "rc_soft_e",
            ["long unsigned int"],
            ["nr_reclaimed"]
        ),
        reclaim_tp!(
            "vmscan:node_begin",
            "mm_vmscan_node_reclaim_begin", "rc_node_b", ["int", "int", "gfp_t"], ["nid", "order", "gfp_flags"]),
        reclaim_tp!(
            "vmscan:node_end",
            "mm_vmscan_node_reclaim_end", "rc_node_e", ["long unsigned int"], ["nr_reclaimed"]),
        reclaim_tp!(
            "vmscan:throttled",
            "mm_vmscan_throttled", "rc_throttle", ["int", "int", "int", "int"], ["usec_delayed", "reason"]),
        reclaim_tp!(
            "vmscan:kswapd_wake",
            "mm_vmscan_kswapd_wake", "rc_kswapd_w", ["int"], ["nid"]),
        reclaim_tp!(
            "vmscan:kswapd_sleep",
            "mm_vmscan_kswapd_sleep", "rc_kswapd_s", ["int"], ["nid"]),
        reclaim_compaction!("compaction:begin", "mm_compaction_begin", "rc_cmpct_b"),
        reclaim_compaction!("compaction:end", "mm_compaction_end", "rc_cmpct_e"),
        Hook {
            family: Family::Reclaim,
            name: "memcg:over_high",
            candidates: vec![Candidate {
                strategy: Strategy::Kprobe,
                program: "rc_high_enter",
                target: "mem_cgroup_handle_over_high",
                limits: "",
                check: |k| {
                    kprobe_target(k, "mem_cgroup_handle_over_high")?;
                    if k.layout.layout.task_memcg_nr_pages_over_high == memtrace_common::layout::ABSENT {
                        return Err("task_struct has no memcg_nr_pages_over_high".into());
                    }
                    Ok(())
                },
            }],
        },
        Hook {
            family: Family::Reclaim,
            name: "memcg:over_high_return",
            candidates: vec![Candidate {
                strategy: Strategy::Kretprobe,
                program: "rc_high_exit",
                target: "mem_cgroup_handle_over_high",
                limits: "",
                check: |k| kprobe_target(k, "mem_cgroup_handle_over_high"),
            }],
        },
    ]
}

/// Argument `index` of the BTF tracepoint (after the hidden `void *`) has type `ty`.
fn btf_tp_arg(k: &Kernel, tp: &str, index: usize, ty: &str) -> Result<(), String> {
    let args = k.btf.tracepoint_args(tp).ok_or_else(|| format!("no btf_trace_{tp} in BTF"))?;
    match args.get(index) {
        Some((_, t)) if t == ty => Ok(()),
        Some((_, t)) => Err(format!("{tp} argument {index} is `{t}`, not `{ty}`")),
        None => Err(format!("{tp} has no argument {index}")),
    }
}

/// kmem_cache members the slab programs read by pointer.
fn slab_layout(k: &Kernel) -> Result<(), String> {
    let l = &k.layout.layout;
    if [l.kmem_cache_name, l.kmem_cache_size, l.kmem_cache_object_size]
        .contains(&memtrace_common::layout::ABSENT)
    {
        return Err("struct kmem_cache has no name/size/object_size in BTF (not SLUB?)".into());
    }
    Ok(())
}

/// Slab family. kmem_cache_alloc/free pass `struct kmem_cache *` as argument 2 since 6.1
/// (5.x passed sizes and, for free, the name string). The classic kmem_cache_free record has
/// the cache name since 5.12; the classic kmem_cache_alloc record has it on 6.18 but not on
/// 6.1/6.12. Path syscalls give the directories of dentry allocations.
fn slab_hooks() -> Vec<Hook> {
    use crate::slab::strategy_allowed as allowed;
    let mut v = vec![
        Hook {
            family: Family::Slab,
            name: "kmem:kmem_cache_alloc",
            candidates: vec![
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: "slab_alloc_btf",
                    target: "kmem_cache_alloc",
                    limits: "",
                    check: |k| {
                        allowed(Strategy::TpBtf)?;
                        btf_tp_arg(k, "kmem_cache_alloc", 2, "struct kmem_cache *")?;
                        slab_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: "slab_alloc_raw",
                    target: "kmem_cache_alloc",
                    limits: "",
                    check: |k| {
                        allowed(Strategy::RawTracepoint)?;
                        btf_tp_arg(k, "kmem_cache_alloc", 2, "struct kmem_cache *")?;
                        slab_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: "slab_alloc_tp",
                    target: "kmem:kmem_cache_alloc",
                    limits: "",
                    check: |k| {
                        allowed(Strategy::Tracepoint)?;
                        crate::slab::classic_alloc_has_name(k)?;
                        classic_tp(k, "kmem", "kmem_cache_alloc", &["call_site", "ptr", "name"])
                    },
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: "slab_alloc_tp",
                    target: "kmem:kmem_cache_alloc",
                    limits: "this kernel's kmem_cache_alloc record names no cache: allocations \
                             are grouped by object size (size-N), --cache cannot select them \
                             and net growth per cache is unavailable",
                    check: |k| {
                        allowed(Strategy::Tracepoint)?;
                        classic_tp(k, "kmem", "kmem_cache_alloc", &["call_site", "ptr", "bytes_alloc"])
                    },
                },
            ],
        },
        Hook {
            family: Family::Slab,
            name: "kmem:kmem_cache_free",
            candidates: vec![
                Candidate {
                    strategy: Strategy::TpBtf,
                    program: "slab_free_btf",
                    target: "kmem_cache_free",
                    limits: "",
                    check: |k| {
                        allowed(Strategy::TpBtf)?;
                        btf_tp_arg(k, "kmem_cache_free", 2, "struct kmem_cache *")?;
                        slab_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::RawTracepoint,
                    program: "slab_free_raw",
                    target: "kmem_cache_free",
                    limits: "",
                    check: |k| {
                        allowed(Strategy::RawTracepoint)?;
                        btf_tp_arg(k, "kmem_cache_free", 2, "struct kmem_cache *")?;
                        slab_layout(k)
                    },
                },
                Candidate {
                    strategy: Strategy::Tracepoint,
                    program: "slab_free_tp",
                    target: "kmem:kmem_cache_free",
                    limits: "",
                    check: |k| {
                        allowed(Strategy::Tracepoint)?;
                        classic_tp(k, "kmem", "kmem_cache_free", &["call_site", "ptr", "name"])
                    },
                },
            ],
        },
    ];
    // Only where the path cannot be read from the syscall's registers at the allocation.
    if !crate::slab::dirs_via_syscall_hooks() {
        return v;
    }
    for (hook, program, sys) in SLAB_PATH_HOOKS {
        v.push(Hook {
            family: Family::Slab,
            name: hook,
            candidates: vec![Candidate {
                strategy: Strategy::Tracepoint,
                program,
                target: hook,
                limits: "",
                check: match sys {
                    "newfstatat" => |k| slab_path_check(k, "newfstatat"),
                    "statx" => |k| slab_path_check(k, "statx"),
                    "openat" => |k| slab_path_check(k, "openat"),
                    "openat2" => |k| slab_path_check(k, "openat2"),
                    "faccessat" => |k| slab_path_check(k, "faccessat"),
                    "faccessat2" => |k| slab_path_check(k, "faccessat2"),
                    "access" => |k| slab_path_check(k, "access"),
                    "newstat" => |k| slab_path_check(k, "newstat"),
                    "newlstat" => |k| slab_path_check(k, "newlstat"),
                    _ => |k| slab_path_check(k, "open"),
                },
            }],
        });
    }
    v
}

/// Path syscalls joined with dentry allocations: (hook, program, syscall).
const SLAB_PATH_HOOKS: [(&str, &str, &str); memtrace_common::slab::NSYS] = [
    ("syscalls:sys_enter_newfstatat", "slab_path_newfstatat", "newfstatat"),
    ("syscalls:sys_enter_statx", "slab_path_statx", "statx"),
    ("syscalls:sys_enter_openat", "slab_path_openat", "openat"),
    ("syscalls:sys_enter_openat2", "slab_path_openat2", "openat2"),
    ("syscalls:sys_enter_faccessat", "slab_path_faccessat", "faccessat"),
    ("syscalls:sys_enter_faccessat2", "slab_path_faccessat2", "faccessat2"),
    ("syscalls:sys_enter_access", "slab_path_access", "access"),
    ("syscalls:sys_enter_newstat", "slab_path_newstat", "newstat"),
    ("syscalls:sys_enter_newlstat", "slab_path_newlstat", "newlstat"),
    ("syscalls:sys_enter_open", "slab_path_open", "open"),
];

fn slab_path_check(k: &Kernel, sys: &str) -> Result<(), String> {
    classic_tp(k, "syscalls", &format!("sys_enter_{sys}"), &["filename"])
}
