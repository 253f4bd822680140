//! Kernel struct access through offsets resolved from BTF by the agent (global `LAYOUT`).
//! Nothing else in the BPF crate knows a kernel layout.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use memtrace_common::{
    CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_READ_FAILED, CGROUP_TRUNCATED, CGROUP_UNAVAILABLE,
    CgroupPath, TASK_COMM_LEN,
    layout::{ABSENT, KernelLayout},
};

#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout::EMPTY;

/// The layout, read volatile so the compiler cannot fold the placeholder in.
#[inline(always)]
pub fn layout() -> &'static KernelLayout {
    // SAFETY: a static that the loader rewrites before load; never written at run time.
    unsafe { &*core::ptr::addr_of!(LAYOUT) }
}

#[inline(always)]
pub fn get(off: &u32) -> u32 {
    // SAFETY: reading our own static.
    unsafe { core::ptr::read_volatile(off) }
}

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, off: u32) -> Result<T, i64> {
    if base.is_null() || off == ABSENT {
        return Err(-1);
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).map_err(|e| e as i64) }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, off: u32) -> Result<*const u8, i64> {
    read::<*const u8>(base, off)
}

/// `task->comm`.
#[inline(always)]
pub fn task_comm(task: *const u8, out: &mut [u8; TASK_COMM_LEN]) -> Result<(), i64> {
    let l = layout();
    *out = read::<[u8; TASK_COMM_LEN]>(task, get(&l.task_comm))?;
    Ok(())
}

/// The memory cgroup a task is charged to: `task->cgroups->subsys[memory_cgrp_id]->cgroup`,
/// or the default-hierarchy cgroup when the kernel has no memory controller.
#[inline(always)]
pub fn task_memcg(task: *const u8) -> Result<*const u8, i64> {
    let l = layout();
    let cset = read_ptr(task, get(&l.task_cgroups))?;
    let memcg_id = get(&l.memory_cgrp_id);
    if memcg_id != ABSENT {
        let css = read_ptr(cset, get(&l.css_set_subsys).wrapping_add(memcg_id * 8))?;
        read_ptr(css, get(&l.css_cgroup))
    } else {
        read_ptr(cset, get(&l.css_set_dfl_cgrp))
    }
}

/// Fills `out` with the path of `cgrp` by walking kernfs parents.
#[inline(always)]
pub fn cgroup_path(cgrp: *const u8, out: &mut CgroupPath) {
    let l = layout();
    out.depth = 0;
    out.id = 0;
    if get(&l.valid) == 0 {
        out.status = CGROUP_UNAVAILABLE;
        return;
    }
    let Ok(mut kn) = read_ptr(cgrp, get(&l.cgroup_kn)) else {
        out.status = CGROUP_READ_FAILED;
        return;
    };
    out.id = read::<u64>(kn, get(&l.kn_id)).unwrap_or(0);
    let name_off = get(&l.kn_name);
    let parent_off = get(&l.kn_parent);
    out.status = CGROUP_TRUNCATED;
    for i in 0..CGROUP_DEPTH {
        let Ok(parent) = read_ptr(kn, parent_off) else {
            out.status = CGROUP_READ_FAILED;
            return;
        };
        if parent.is_null() {
            // kn is the hierarchy root: its name is not part of the path.
            out.status = CGROUP_COMPLETE;
            return;
        }
        let Ok(name) = read_ptr(kn, name_off) else {
            out.status = CGROUP_READ_FAILED;
            return;
        };
        // SAFETY: bpf_probe_read_kernel_str_bytes tolerates any address.
        if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut out.names[i]) }.is_err() {
            out.status = CGROUP_READ_FAILED;
            return;
        }
        out.depth = i as u32 + 1;
        kn = parent;
    }
    // Out of slots: complete only if what remains is the root.
    if let Ok(parent) = read_ptr(kn, parent_off) {
        if parent.is_null() {
            out.status = CGROUP_COMPLETE;
        }
    }
}

/// One RSS counter of an mm (`get_mm_counter`): `rss_stat[idx].count`.
#[inline(always)]
pub fn mm_counter(mm: *const u8, idx: u32) -> Result<i64, i64> {
    let l = layout();
    if idx == ABSENT {
        return Err(-1);
    }
    let off = get(&l.mm_rss_stat)
        .wrapping_add(idx.wrapping_mul(get(&l.mm_rss_stride)))
        .wrapping_add(get(&l.mm_rss_count));
    read::<i64>(mm, off)
}

/// kernfs node of a cgroup (`cgrp->kn`).
#[inline(always)]
pub fn cgroup_kn(cgrp: *const u8) -> Result<*const u8, i64> {
    read_ptr(cgrp, get(&layout().cgroup_kn))
}

/// kernfs node id (`kn->id`): the inode number of the cgroup directory.
#[inline(always)]
pub fn kn_id(kn: *const u8) -> Result<u64, i64> {
    read::<u64>(kn, get(&layout().kn_id))
}

/// True when kernfs node `kn` or one of its first 16 ancestors has id `id`.
#[inline(always)]
pub fn kn_under(mut kn: *const u8, id: u64) -> bool {
    let l = layout();
    let (id_off, parent_off) = (get(&l.kn_id), get(&l.kn_parent));
    for _ in 0..16 {
        if kn.is_null() {
            return false;
        }
        if read::<u64>(kn, id_off) == Ok(id) {
            return true;
        }
        match read_ptr(kn, parent_off) {
            Ok(p) => kn = p,
            Err(_) => return false,
        }
    }
    false
}

/// `task->group_leader->comm`: the process name.
#[inline(always)]
pub fn leader_comm(task: *const u8, out: &mut [u8; TASK_COMM_LEN]) -> Result<(), i64> {
    let leader = read_ptr(task, get(&layout().task_group_leader))?;
    task_comm(leader, out)
}
