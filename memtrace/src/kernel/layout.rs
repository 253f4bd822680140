//! Resolves the kernel struct layout that BPF needs (`memtrace_common::layout::KernelLayout`)
//! from the running kernel's BTF. This is the only place that knows member names; the BPF
//! programs get numbers.

use memtrace_common::layout::{ABSENT, KernelLayout};

use super::btf::{Btf, Kind};

/// The resolved layout plus what could not be found (each a coverage gap).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub layout: KernelLayout,
    pub missing: Vec<String>,
    /// Members only the shmem family needs (a gap there is a shmem coverage gap).
    pub shmem_missing: Vec<String>,
    /// Members that only some features need (each a narrower coverage gap).
    pub optional_missing: Vec<String>,
}

struct Resolver<'a> {
    btf: &'a Btf,
    missing: Vec<String>,
    optional_missing: Vec<String>,
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

    /// Like `off`, for members whose absence only narrows a feature.
    fn opt(&mut self, s: &str, members: &[&str]) -> u32 {
        for m in members {
            if let Some((off, _)) = self.btf.offset_of(s, m) {
                return off;
            }
        }
        self.optional_missing.push(format!("struct {s}: no member {}", members.join(" or ")));
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
    let mut r = Resolver { btf, missing: Vec::new(), optional_missing: Vec::new() };
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
        Some((off, ty)) => match btf.get(btf.resolve(ty)).map(|t| (t.kind, t.array)) {
            Some((Kind::Array, Some((elem, _)))) => {
                l.mm_rss_stat = off;
                l.mm_rss_stride = btf.size_of(elem).unwrap_or(ABSENT);
                l.mm_rss_count = btf.member_in(elem, "count").map(|(o, _)| o).unwrap_or_else(|| {
                    r.missing.push("struct percpu_counter: no member count".into());
                    ABSENT
                });
            }
            Some((Kind::Struct, _)) => {
                match btf.member_in(btf.resolve(ty), "count").and_then(|(c, _)| off.checked_add(c)) {
                    Some(at) => {
                        l.mm_rss_stat = at;
                        l.mm_rss_stride = 8;
                        l.mm_rss_count = 0;
                    }
                    None => r.missing.push("struct mm_rss_stat: no member count".into()),
                }
            }
            _ => r.missing.push("mm_struct.rss_stat has an unknown type".into()),
        },
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

    // OOM decision: the task list, stacks, OOM flags, memcg page counters, oom_control.
    l.task_flags = r.opt("task_struct", &["flags"]);
    l.task_tasks = r.opt("task_struct", &["tasks"]);
    l.task_stack = r.opt("task_struct", &["stack"]);
    l.task_vfork_done = r.opt("task_struct", &["vfork_done"]);
    l.task_real_parent = r.opt("task_struct", &["real_parent"]);
    l.signal_oom_mm = r.opt("signal_struct", &["oom_mm"]);
    l.signal_oom_flag_origin = r.opt("signal_struct", &["oom_flag_origin"]);
    l.signal_live = r.opt("signal_struct", &["live"]);
    l.mm_flags = r.opt("mm_struct", &["flags"]);
    l.css_parent = r.opt("cgroup_subsys_state", &["parent"]);
    l.memcg_css = r.opt("mem_cgroup", &["css"]);
    l.memcg_memory = r.opt("mem_cgroup", &["memory"]);
    l.page_counter_usage = r.opt("page_counter", &["usage"]);
    l.page_counter_max = r.opt("page_counter", &["max"]);
    l.oc_zonelist = r.opt("oom_control", &["zonelist"]);
    l.oc_memcg = r.opt("oom_control", &["memcg"]);
    l.oc_gfp_mask = r.opt("oom_control", &["gfp_mask"]);
    l.oc_order = r.opt("oom_control", &["order"]);
    l.oc_totalpages = r.opt("oom_control", &["totalpages"]);
    l.oc_chosen = r.opt("oom_control", &["chosen"]);
    l.oc_chosen_points = r.opt("oom_control", &["chosen_points"]);
    l.oc_constraint = r.opt("oom_control", &["constraint"]);
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
            for (i, a) in (0u32..).zip(l.pt_regs_args.iter_mut()) {
                *a = regs.checked_add(8 * i).unwrap_or(ABSENT);
            }
        }
    }
    l.valid = 1;
    let shmem_missing = resolve_shmem(btf, &mut l);
    Resolved { layout: l, missing: r.missing, optional_missing: r.optional_missing, shmem_missing }
}

/// The member of `struct pt_regs` (the saved registers) that only this build's
/// architecture has: a BTF without it describes a kernel of another architecture.
#[cfg(target_arch = "x86_64")]
const ARCH_REG: (&str, &str) = ("x86_64", "orig_ax");
#[cfg(target_arch = "aarch64")]
const ARCH_REG: (&str, &str) = ("aarch64", "syscallno");

/// Whether this BTF describes a kernel of this build's architecture (the byte order is
/// the reader's check); Err says why not.
pub fn check_arch(btf: &Btf) -> Result<(), String> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let (arch, reg) = ARCH_REG;
        if btf.find("pt_regs", Kind::Struct).is_none() {
            return Err("it has no struct pt_regs, so it is not a kernel's (vmlinux) BTF".into());
        }
        if btf.offset_of("pt_regs", reg).is_none() {
            return Err(format!(
                "its struct pt_regs has no {reg}: it describes a kernel of another architecture, \
                 not this {arch} one"
            ));
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = btf;
    Ok(())
}

/// The value of `enumerator` in `enum name`.
pub fn enum_value_in(btf: &Btf, name: &str, enumerator: &str) -> Option<i64> {
    let t = btf.get(btf.find(name, Kind::Enum).or_else(|| btf.find(name, Kind::Enum64))?)?;
    t.values.iter().find(|(n, _)| n == enumerator).map(|&(_, v)| v)
}

/// Shmem: folio -> mapping -> host inode -> superblock, the inode's dentry name, page flag
/// bits, and the memcg's cgroup. Returns what is missing.
fn resolve_shmem(btf: &Btf, l: &mut KernelLayout) -> Vec<String> {
    let mut r = Resolver { btf, missing: Vec::new(), optional_missing: Vec::new() };
    l.folio_flags = r.off("folio", &["flags"]);
    l.folio_mapping = r.off("folio", &["mapping"]);
    l.folio_index = r.off("folio", &["index"]);
    // `_nr_pages` since 6.15 (second page of the folio), `_folio_nr_pages` before.
    l.folio_nr_pages = r.off("folio", &["_nr_pages", "_folio_nr_pages"]);
    let mut flag = |name: &str| match enum_value_in(btf, "pageflags", name) {
        Some(v) if (0..64).contains(&v) => v as u32,
        _ => {
            r.missing.push(format!("enum pageflags: no {name}"));
            ABSENT
        }
    };
    l.pg_head = flag("PG_head");
    l.pg_lru = flag("PG_lru");
    l.pg_swapbacked = flag("PG_swapbacked");
    // An alias of PG_owner_priv_1 (meaningful with PG_swapbacked).
    l.pg_swapcache = flag("PG_swapcache");
    l.mapping_host = r.off("address_space", &["host"]);
    l.inode_sb = r.off("inode", &["i_sb"]);
    l.inode_ino = r.off("inode", &["i_ino"]);
    l.inode_dentry = r.off("inode", &["i_dentry"]);
    l.sb_dev = r.off("super_block", &["s_dev"]);
    l.dentry_alias = r.off("dentry", &["d_u.d_alias", "d_alias"]);
    l.dentry_name = r.off("dentry", &["d_name.name"]);
    l.memcg_css_cgroup = r.off("mem_cgroup", &["css.cgroup"]);
    r.missing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against this machine's BTF: everything resolves, and the values agree with facts
    /// that do not depend on the kernel build.
    #[test]
    fn resolves_this_kernel() {
        let Some(btf) = crate::kernel::btf::running_kernel_btf() else { return };
        let r = resolve(&btf);
        assert!(r.missing.is_empty(), "missing: {:?}", r.missing);
        assert!(r.shmem_missing.is_empty(), "shmem missing: {:?}", r.shmem_missing);
        assert!(r.optional_missing.is_empty(), "optional missing: {:?}", r.optional_missing);
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
        // struct oom_control: the pointers come first, in this order, since 4.x.
        assert_eq!((l.oc_zonelist, l.oc_memcg), (0, 16));
        assert!(l.oc_chosen > l.oc_totalpages && l.oc_chosen_points > l.oc_chosen);
        assert_eq!(l.memcg_css, 0, "mem_cgroup starts with its css");
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

    /// The shmem chain folio -> mapping -> inode -> superblock resolves, with the facts
    /// that hold on every 6.x kernel.
    #[test]
    fn resolves_shmem_members() {
        let Some(btf) = crate::kernel::btf::running_kernel_btf() else { return };
        let r = resolve(&btf);
        assert!(r.shmem_missing.is_empty(), "{:?}", r.shmem_missing);
        let l = r.layout;
        // flags, then a list_head (two pointers), then mapping and index.
        assert_eq!(l.folio_mapping, l.folio_flags + 24);
        assert_eq!(l.folio_index, l.folio_mapping + 8);
        // _nr_pages / _folio_nr_pages live in the folio's second struct page.
        assert!(l.folio_nr_pages >= 64, "{}", l.folio_nr_pages);
        for bit in [l.pg_head, l.pg_lru, l.pg_swapbacked, l.pg_swapcache] {
            assert!(bit < 64);
        }
        assert_ne!(l.pg_head, l.pg_swapbacked);
        assert!(enum_value_in(&btf, "node_stat_item", "NR_SHMEM").is_some());
        assert_eq!(enum_value_in(&btf, "node_stat_item", "NO_SUCH_ITEM"), None);
    }
}
