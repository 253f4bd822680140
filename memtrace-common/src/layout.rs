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

    // OOM decision (optional: a missing member degrades that feature only).
    pub task_flags: u32,
    /// `task_struct.tasks`: the list of thread-group leaders (for_each_process).
    pub task_tasks: u32,
    /// `task_struct.stack`: base of the task's kernel stack.
    pub task_stack: u32,
    pub task_vfork_done: u32,
    pub task_real_parent: u32,
    pub signal_oom_mm: u32,
    pub signal_oom_flag_origin: u32,
    /// `signal_struct.live`: threads not yet exited (0: a dead group, a zombie).
    pub signal_live: u32,
    /// `mm_struct.flags` (an unsigned long, or mm_flags_t's bitmap from 6.18).
    pub mm_flags: u32,
    pub css_parent: u32,
    /// `mem_cgroup.css` and `mem_cgroup.memory` (a page_counter).
    pub memcg_css: u32,
    pub memcg_memory: u32,
    pub page_counter_usage: u32,
    pub page_counter_max: u32,
    /// struct oom_control.
    pub oc_zonelist: u32,
    pub oc_memcg: u32,
    pub oc_gfp_mask: u32,
    pub oc_order: u32,
    pub oc_totalpages: u32,
    pub oc_chosen: u32,
    pub oc_chosen_points: u32,
    pub oc_constraint: u32,
    // struct compact_control (reclaim family: direct compaction stalls). Optional: ABSENT
    // here is a reclaim coverage gap, not a layout gap for the other families.
    pub cc_direct_compaction: u32,
    pub cc_order: u32,
    pub cc_gfp_mask: u32,
    /// task_struct.memcg_nr_pages_over_high (reclaim family, memory.high hook). Optional.
    pub task_memcg_nr_pages_over_high: u32,
    // Shmem family (resolved separately: a gap here affects only shmem).
    // struct folio
    pub folio_flags: u32,
    pub folio_mapping: u32,
    pub folio_index: u32,
    /// `_nr_pages` (6.15+) or `_folio_nr_pages`: valid when the folio has PG_head.
    pub folio_nr_pages: u32,
    /// enum pageflags bit numbers.
    pub pg_head: u32,
    pub pg_lru: u32,
    pub pg_swapbacked: u32,
    pub pg_swapcache: u32,
    // struct address_space, inode, super_block
    pub mapping_host: u32,
    pub inode_sb: u32,
    pub inode_ino: u32,
    pub inode_dentry: u32,
    pub sb_dev: u32,
    // struct dentry
    pub dentry_alias: u32,
    pub dentry_name: u32,
    // struct mem_cgroup: css.cgroup
    pub memcg_css_cgroup: u32,

    // struct kmem_cache (slab family; ABSENT on allocators without it)
    pub kmem_cache_name: u32,
    pub kmem_cache_size: u32,
    pub kmem_cache_object_size: u32,

    // struct pt_regs (slab family: the running syscall's number and arguments, read at a
    // dentry allocation; arch specific, ABSENT where unknown)
    pub pt_regs_syscall_nr: u32,
    pub pt_regs_args: [u32; 6],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelLayout {}

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
        task_flags: ABSENT,
        task_tasks: ABSENT,
        task_stack: ABSENT,
        task_vfork_done: ABSENT,
        task_real_parent: ABSENT,
        signal_oom_mm: ABSENT,
        signal_oom_flag_origin: ABSENT,
        signal_live: ABSENT,
        mm_flags: ABSENT,
        css_parent: ABSENT,
        memcg_css: ABSENT,
        memcg_memory: ABSENT,
        page_counter_usage: ABSENT,
        page_counter_max: ABSENT,
        oc_zonelist: ABSENT,
        oc_memcg: ABSENT,
        oc_gfp_mask: ABSENT,
        oc_order: ABSENT,
        oc_totalpages: ABSENT,
        oc_chosen: ABSENT,
        oc_chosen_points: ABSENT,
        oc_constraint: ABSENT,
        cc_direct_compaction: ABSENT,
        cc_order: ABSENT,
        cc_gfp_mask: ABSENT,
        task_memcg_nr_pages_over_high: ABSENT,
        folio_flags: ABSENT,
        folio_mapping: ABSENT,
        folio_index: ABSENT,
        folio_nr_pages: ABSENT,
        pg_head: ABSENT,
        pg_lru: ABSENT,
        pg_swapbacked: ABSENT,
        pg_swapcache: ABSENT,
        mapping_host: ABSENT,
        inode_sb: ABSENT,
        inode_ino: ABSENT,
        inode_dentry: ABSENT,
        sb_dev: ABSENT,
        dentry_alias: ABSENT,
        dentry_name: ABSENT,
        memcg_css_cgroup: ABSENT,
        kmem_cache_name: ABSENT,
        kmem_cache_size: ABSENT,
        kmem_cache_object_size: ABSENT,
        pt_regs_syscall_nr: ABSENT,
        pt_regs_args: [ABSENT; 6],
    };
}
