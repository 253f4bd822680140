//! Resolves the kernel struct layout that BPF needs (`memtrace_common::layout::KernelLayout`)
//! from the running kernel's BTF. This is the only place that knows member names; the BPF
//! programs get numbers.

use memtrace_common::layout::{ABSENT, KernelLayout};

use crate::btf::{Btf, Kind};

/// The resolved layout plus what could not be found (each a coverage gap).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub layout: KernelLayout,
    pub missing: Vec<String>,
}

struct Resolver<'a> {
    btf: &'a Btf,
    missing: Vec<String>,
}

impl Resolver<'_> {
    /// Offset of the first of `members` that exists in `struct s`.
    fn off(&mut self, s: &str, members: &[&str]) -> u32 {
        for m in members {
            if let Some((off, _)) = self.btf.offset_of(s, m) {
                return off;
            }
        }
        self.missing.push(format!("struct {s}: no member {}", members.join(" or ")));
        ABSENT
    }

    fn enum_val(&mut self, name: &str) -> u32 {
        match self.btf.enum_value(name) {
            Some(v) if v >= 0 => v as u32,
            _ => {
                self.missing.push(format!("enum value {name}"));
                ABSENT
            }
        }
    }
}

pub fn resolve(btf: &Btf) -> Resolved {
    let mut r = Resolver { btf, missing: Vec::new() };
    let mut l = KernelLayout::EMPTY;
    l.task_pid = r.off("task_struct", &["pid"]);
    l.task_tgid = r.off("task_struct", &["tgid"]);
    l.task_comm = r.off("task_struct", &["comm"]);
    l.task_signal = r.off("task_struct", &["signal"]);
    l.task_mm = r.off("task_struct", &["mm"]);
    l.task_cgroups = r.off("task_struct", &["cgroups"]);
    l.task_real_cred = r.off("task_struct", &["real_cred"]);
    l.task_group_leader = r.off("task_struct", &["group_leader"]);
    l.signal_oom_score_adj = r.off("signal_struct", &["oom_score_adj"]);

    // mm->rss_stat: `struct percpu_counter rss_stat[NR_MM_COUNTERS]` since 6.2,
    // `struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }` before.
    match btf.offset_of("mm_struct", "rss_stat") {
        Some((off, ty)) => {
            let t = btf.get(btf.resolve(ty)).expect("resolved type exists");
            match (t.kind, t.array) {
                (Kind::Array, Some((elem, _))) => {
                    l.mm_rss_stat = off;
                    l.mm_rss_stride = btf.size_of(elem).unwrap_or(ABSENT);
                    l.mm_rss_count = btf
                        .member_in(elem, "count")
                        .map(|(o, _)| o)
                        .unwrap_or_else(|| {
                            r.missing.push("struct percpu_counter: no member count".into());
                            ABSENT
                        });
                }
                (Kind::Struct, _) => match btf.member_in(btf.resolve(ty), "count") {
                    Some((count_off, _)) => {
                        l.mm_rss_stat = off + count_off;
                        l.mm_rss_stride = 8;
                        l.mm_rss_count = 0;
                    }
                    None => r.missing.push("struct mm_rss_stat: no member count".into()),
                },
                _ => r.missing.push("mm_struct.rss_stat has an unknown type".into()),
            }
        }
        None => r.missing.push("struct mm_struct: no member rss_stat".into()),
    }
    l.mm_pgtables_bytes = r.off("mm_struct", &["pgtables_bytes"]);
    l.mm_total_vm = r.off("mm_struct", &["total_vm"]);
    l.mm_filepages_idx = r.enum_val("MM_FILEPAGES");
    l.mm_anonpages_idx = r.enum_val("MM_ANONPAGES");
    l.mm_swapents_idx = r.enum_val("MM_SWAPENTS");
    l.mm_shmempages_idx = r.enum_val("MM_SHMEMPAGES");
    l.cred_uid = r.off("cred", &["uid"]);

    l.css_set_subsys = r.off("css_set", &["subsys"]);
    l.css_set_dfl_cgrp = r.off("css_set", &["dfl_cgrp"]);
    l.memory_cgrp_id = btf.enum_value("memory_cgrp_id").map(|v| v as u32).unwrap_or(ABSENT);
    l.css_cgroup = r.off("cgroup_subsys_state", &["cgroup"]);
    l.cgroup_kn = r.off("cgroup", &["kn"]);
    l.kn_name = r.off("kernfs_node", &["name"]);
    // Renamed to __parent (RCU-protected) in 6.15.
    l.kn_parent = r.off("kernfs_node", &["__parent", "parent"]);
    l.kn_id = r.off("kernfs_node", &["id"]);
    // Optional (reclaim's direct compaction hook checks them itself): not in `missing`.
    let opt = |m: &str| btf.offset_of("compact_control", m).map_or(ABSENT, |(o, _)| o);
    l.cc_direct_compaction = opt("direct_compaction");
    l.cc_order = opt("order");
    l.cc_gfp_mask = opt("gfp_mask");
    l.task_memcg_nr_pages_over_high =
        btf.offset_of("task_struct", "memcg_nr_pages_over_high").map_or(ABSENT, |(o, _)| o);
    // Slab family: optional (SLOB kernels have no struct kmem_cache members in BTF); the
    // slab hooks check them, so they are not layout gaps for the other families.
    let member = |s: &str, m: &str| btf.offset_of(s, m).map_or(ABSENT, |(o, _)| o);
    l.kmem_cache_name = member("kmem_cache", "name");
    l.kmem_cache_size = member("kmem_cache", "size");
    l.kmem_cache_object_size = member("kmem_cache", "object_size");
    // Slab family: where a syscall's number and arguments are saved (arch specific).
    #[cfg(target_arch = "x86_64")]
    {
        l.pt_regs_syscall_nr = member("pt_regs", "orig_ax");
        for (i, r) in ["di", "si", "dx", "r10", "r8", "r9"].iter().enumerate() {
            l.pt_regs_args[i] = member("pt_regs", r);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        l.pt_regs_syscall_nr = member("pt_regs", "syscallno");
        let regs = member("pt_regs", "regs");
        if regs != ABSENT {
            for (i, a) in l.pt_regs_args.iter_mut().enumerate() {
                *a = regs + 8 * i as u32;
            }
        }
    }
    l.valid = 1;
    Resolved { layout: l, missing: r.missing }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Against this machine's BTF: everything resolves, and the values agree with facts
    /// that do not depend on the kernel build.
    #[test]
    fn resolves_this_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            assert!(std::env::var_os("CI").is_none(), "CI machines have BTF");
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let r = resolve(&btf);
        assert!(r.missing.is_empty(), "missing: {:?}", r.missing);
        let l = r.layout;
        assert_eq!(l.task_tgid, l.task_pid + 4);
        assert_ne!(l.memory_cgrp_id, ABSENT, "this kernel has CONFIG_MEMCG");
        assert!(l.mm_rss_stride == 8 || l.mm_rss_stride >= 24, "stride {}", l.mm_rss_stride);
        // The enum order is fixed by include/linux/mm_types_task.h.
        assert_eq!((l.mm_filepages_idx, l.mm_anonpages_idx), (0, 1));
        // Member offsets are word aligned where the members are pointers.
        for off in [l.task_mm, l.task_signal, l.task_cgroups, l.cgroup_kn, l.kn_parent] {
            assert_eq!(off % 8, 0);
        }
        // SLUB: object_size follows size (include/linux/slub_def.h, slab.h on 6.8+); name
        // is a pointer.
        assert_eq!(l.kmem_cache_object_size, l.kmem_cache_size + 4);
        assert_eq!(l.kmem_cache_name % 8, 0);
        #[cfg(target_arch = "x86_64")]
        {
            // struct pt_regs: ..., si, di, orig_ax (arch/x86/include/asm/ptrace.h).
            assert_eq!(l.pt_regs_args[0], l.pt_regs_args[1] + 8, "di follows si");
            assert_eq!(l.pt_regs_syscall_nr, l.pt_regs_args[0] + 8, "orig_ax follows di");
            assert!(l.pt_regs_args.iter().all(|&a| a != ABSENT));
        }
    }
}
