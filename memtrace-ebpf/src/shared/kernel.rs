//! Kernel struct access through offsets resolved from BTF by the agent (global `LAYOUT`).
//! Nothing else in the BPF crate knows a kernel layout.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    bpf_probe_read_kernel_str_bytes,
};
use memtrace_common::{
    CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_READ_FAILED, CGROUP_TRUNCATED, CGROUP_UNAVAILABLE,
    CgroupPath, TASK_COMM_LEN,
    layout::{ABSENT, KernelLayout},
};

use super::emit::get;

#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout::EMPTY;

/// The layout; read its members with [`get`] so the compiler cannot fold the placeholder
/// in.
#[inline(always)]
pub fn layout() -> &'static KernelLayout {
    // SAFETY: a static that the loader rewrites before load; never written at run time.
    unsafe { &*core::ptr::addr_of!(LAYOUT) }
}

/// The current task (`bpf_get_current_task`).
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: plain helper.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// The current task's process id (thread group id).
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
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

/// `task->cgroups`: the task's css_set.
#[inline(always)]
pub fn task_css_set(task: *const u8) -> Result<*const u8, i64> {
    read_ptr(task, get(&layout().task_cgroups))
}

/// The css of the memory cgroup in a css_set, `cset->subsys[memory_cgrp_id]`, or its
/// default-hierarchy cgroup (`cset->dfl_cgrp`) when the kernel has no memory controller.
#[inline(always)]
pub fn css_set_memcg(cset: *const u8) -> Result<*const u8, i64> {
    let l = layout();
    let memcg_id = get(&l.memory_cgrp_id);
    if memcg_id != ABSENT {
        read_ptr(cset, get(&l.css_set_subsys).wrapping_add(memcg_id.wrapping_mul(8)))
    } else {
        read_ptr(cset, get(&l.css_set_dfl_cgrp))
    }
}

/// The cgroup of a css returned by [`css_set_memcg`]: `css->cgroup`, or the css itself
/// when it already is a cgroup (no memory controller).
#[inline(always)]
pub fn css_cgroup(css: *const u8) -> Result<*const u8, i64> {
    let l = layout();
    if get(&l.memory_cgrp_id) != ABSENT { read_ptr(css, get(&l.css_cgroup)) } else { Ok(css) }
}

/// The memory cgroup a task is charged to: `task->cgroups->subsys[memory_cgrp_id]->cgroup`,
/// or the default-hierarchy cgroup when the kernel has no memory controller.
#[inline(always)]
pub fn task_memcg(task: *const u8) -> Result<*const u8, i64> {
    css_cgroup(css_set_memcg(task_css_set(task)?)?)
}

/// Fills `out` with the path of `task`'s memory cgroup; an empty path marked
/// `CGROUP_UNAVAILABLE` (and false) when its cgroup cannot be read.
#[inline(always)]
pub fn task_cgroup_path(task: *const u8, out: &mut CgroupPath) -> bool {
    match task_memcg(task) {
        Ok(cg) => {
            cgroup_path(cg, out);
            true
        }
        Err(_) => {
            cgroup_unavailable(out);
            false
        }
    }
}

/// An empty path marked `CGROUP_UNAVAILABLE`.
#[inline(always)]
pub fn cgroup_unavailable(out: &mut CgroupPath) {
    out.depth = 0;
    out.id = 0;
    out.status = CGROUP_UNAVAILABLE;
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

/// A `T` at `base + off` by a direct load, for trusted BTF pointers (tp_btf/fentry
/// arguments) only: the offset must come from `LAYOUT` (frozen .rodata, so the verifier
/// knows it and checks the access against the kernel's BTF). Much cheaper than
/// `bpf_probe_read_kernel`; the verifier rejects the program if the offset is unknown.
///
/// # Safety
/// `base` must be a BTF pointer the verifier tracks, and `off` a member offset of its
/// type whose member has type `T`.
#[inline(always)]
pub unsafe fn btf_load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: per the contract; the verifier turns this into a checked load.
    unsafe { core::ptr::read(base.wrapping_add(off as usize) as *const T) }
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

/// `folio->flags` (the first word of the folio; `memdesc_flags_t` on 6.18 wraps it).
#[inline(always)]
pub fn folio_flags(folio: *const u8) -> Result<u64, i64> {
    read::<u64>(folio, get(&layout().folio_flags))
}

/// Whether bit `bit` (an enum pageflags value) is set in `flags`.
#[inline(always)]
pub fn flag_set(flags: u64, bit: u32) -> bool {
    bit < 64 && flags & (1u64 << bit) != 0
}

/// `folio_nr_pages()`: 1 unless PG_head, else the folio's page count.
#[inline(always)]
pub fn folio_nr_pages(folio: *const u8, flags: u64) -> u32 {
    let l = layout();
    if !flag_set(flags, get(&l.pg_head)) {
        return 1;
    }
    match read::<u32>(folio, get(&l.folio_nr_pages)) {
        Ok(n) if n > 0 && n <= 1 << 18 => n,
        _ => 1,
    }
}

/// The (superblock dev_t, inode number) of an inode.
#[inline(always)]
pub fn inode_key(inode: *const u8) -> Result<(u32, u64), i64> {
    let l = layout();
    let ino = read::<u64>(inode, get(&l.inode_ino))?;
    let sb = read_ptr(inode, get(&l.inode_sb))?;
    let dev = read::<u32>(sb, get(&l.sb_dev))?;
    Ok((dev, ino))
}

/// The name of the first dentry of an inode (`inode->i_dentry.first`, container of
/// `d_u.d_alias`): a file's last path component, or memfd:NAME / SYSV%08x / dev/zero for the
/// kernel's internal shmem files.
#[inline(always)]
pub fn inode_name(inode: *const u8, out: &mut [u8]) -> Result<(), i64> {
    let l = layout();
    let first = read_ptr(inode, get(&l.inode_dentry))?;
    if first.is_null() {
        return Err(-2);
    }
    let dentry = first.wrapping_sub(get(&l.dentry_alias) as usize);
    let name = read_ptr(dentry, get(&l.dentry_name))?;
    // SAFETY: bpf_probe_read_kernel_str_bytes tolerates any address.
    unsafe { bpf_probe_read_kernel_str_bytes(name, out) }.map(|_| ()).map_err(|e| e as i64)
}

/// `memcg->css.cgroup`.
#[inline(always)]
pub fn memcg_cgroup(memcg: *const u8) -> Result<*const u8, i64> {
    read_ptr(memcg, get(&layout().memcg_css_cgroup))
}

/// A cgroup's id (its kernfs node id; the cgroup directory's inode number).
#[inline(always)]
pub fn cgroup_id(cgrp: *const u8) -> Result<u64, i64> {
    let l = layout();
    let kn = read_ptr(cgrp, get(&l.cgroup_kn))?;
    read::<u64>(kn, get(&l.kn_id))
}
