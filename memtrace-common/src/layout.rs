//! Kernel struct member offsets, resolved by the agent from the running kernel's BTF and
//! handed to BPF as the global `LAYOUT`. Rust BPF has no CO-RE: nothing in the BPF
//! programs may hard-code a kernel layout; every access goes through these numbers.

/// Offset value meaning "this member does not exist on this kernel".
pub const ABSENT: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// 1 once the agent has filled this struct from BTF.
    pub valid: u32,

    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_signal: u32,
    pub task_mm: u32,
    pub task_cgroups: u32,
    pub task_real_cred: u32,
    pub task_group_leader: u32,

    // struct signal_struct
    pub signal_oom_score_adj: u32,

    // struct mm_struct
    pub mm_rss_stat: u32,
    /// Bytes between two counters of `rss_stat` (sizeof(percpu_counter) on 6.2+, 8 before).
    pub mm_rss_stride: u32,
    /// Offset of the 64-bit count inside one counter.
    pub mm_rss_count: u32,
    pub mm_pgtables_bytes: u32,
    pub mm_total_vm: u32,
    /// enum values: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES.
    pub mm_filepages_idx: u32,
    pub mm_anonpages_idx: u32,
    pub mm_swapents_idx: u32,
    pub mm_shmempages_idx: u32,

    // struct cred
    pub cred_uid: u32,

    // struct css_set, cgroup_subsys_state, cgroup, kernfs_node
    pub css_set_subsys: u32,
    pub css_set_dfl_cgrp: u32,
    /// enum cgroup_subsys_id memory_cgrp_id, or ABSENT without CONFIG_MEMCG.
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_name: u32,
    pub kn_parent: u32,
    pub kn_id: u32,

    // struct compact_control (reclaim family: direct compaction stalls). Optional: ABSENT
    // here is a reclaim coverage gap, not a layout gap for the other families.
    pub cc_direct_compaction: u32,
    pub cc_order: u32,
    pub cc_gfp_mask: u32,
    /// task_struct.memcg_nr_pages_over_high (reclaim family, memory.high hook). Optional.
    pub task_memcg_nr_pages_over_high: u32,

    // struct kmem_cache (slab family; ABSENT on allocators without it)
    pub kmem_cache_name: u32,
    pub kmem_cache_size: u32,
    pub kmem_cache_object_size: u32,

    // struct pt_regs (slab family: the running syscall's number and arguments, read at a
    // dentry allocation; arch specific, ABSENT where unknown)
    pub pt_regs_syscall_nr: u32,
    pub pt_regs_args: [u32; 6],
}

impl KernelLayout {
    pub const EMPTY: KernelLayout = KernelLayout {
        valid: 0,
        task_pid: ABSENT,
        task_tgid: ABSENT,
        task_comm: ABSENT,
        task_signal: ABSENT,
        task_mm: ABSENT,
        task_cgroups: ABSENT,
        task_real_cred: ABSENT,
        task_group_leader: ABSENT,
        signal_oom_score_adj: ABSENT,
        mm_rss_stat: ABSENT,
        mm_rss_stride: ABSENT,
        mm_rss_count: ABSENT,
        mm_pgtables_bytes: ABSENT,
        mm_total_vm: ABSENT,
        mm_filepages_idx: ABSENT,
        mm_anonpages_idx: ABSENT,
        mm_swapents_idx: ABSENT,
        mm_shmempages_idx: ABSENT,
        cred_uid: ABSENT,
        css_set_subsys: ABSENT,
        css_set_dfl_cgrp: ABSENT,
        memory_cgrp_id: ABSENT,
        css_cgroup: ABSENT,
        cgroup_kn: ABSENT,
        kn_name: ABSENT,
        kn_parent: ABSENT,
        kn_id: ABSENT,
        cc_direct_compaction: ABSENT,
        cc_order: ABSENT,
        cc_gfp_mask: ABSENT,
        task_memcg_nr_pages_over_high: ABSENT,
        kmem_cache_name: ABSENT,
        kmem_cache_size: ABSENT,
        kmem_cache_object_size: ABSENT,
        pt_regs_syscall_nr: ABSENT,
        pt_regs_args: [ABSENT; 6],
    };
}
