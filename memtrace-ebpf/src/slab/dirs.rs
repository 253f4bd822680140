//! The directory of a dentry allocation: the path argument of the running syscall (from
//! its saved registers, or remembered at `syscalls:sys_enter_*`), cut at its last '/' and
//! counted per (process, dirfd, directory).

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_user_str_bytes, bpf_task_pt_regs,
    },
    programs::TracePointContext,
};
use memtrace_common::{
    layout::ABSENT,
    slab::{
        AT_FDCWD, DIR_LEN, PATH_LEN, PathArg, S_DIR_JOINED, S_DIR_NO_PATH, S_DIR_READ_FAILED,
        S_DIRS_FULL, S_PATHS_RECORDED, SYS_TABLE_LEN,
    },
};

use super::{
    config::cfg,
    maps::{DIR_SCRATCH, DIR_THREAD, DIRS, sc},
};
use crate::shared::{
    emit::{get, is_self},
    kernel::{layout, read},
};

/// A path syscall entered (`DIRS_SYSCALLS`): remember its path argument for the thread.
#[inline(always)]
pub(super) fn on_path(ctx: &TracePointContext, sys: usize) {
    let c = cfg();
    let pid_tgid = bpf_get_current_pid_tgid();
    let only = get(&c.tgid);
    let tgid = (pid_tgid >> 32) as u32;
    if (only != 0 && tgid != only) || is_self(tgid) {
        return;
    }
    let (fo, dfo) = (get(&c.sys_filename[sys]), get(&c.sys_dfd[sys]));
    // SAFETY: offsets from the format file.
    let ptr = unsafe { ctx.read_at::<u64>(fo as usize) }.unwrap_or(0);
    if ptr == 0 {
        return;
    }
    let dfd = if dfo == ABSENT {
        AT_FDCWD
    } else {
        unsafe { ctx.read_at::<i64>(dfo as usize) }.unwrap_or(AT_FDCWD as i64) as i32
    };
    // SAFETY: plain helper.
    let ns = unsafe { bpf_ktime_get_ns() };
    let arg = PathArg { ptr, ns, dfd, sys: sys as u32 };
    if DIR_THREAD.insert(&(pid_tgid as u32), &arg, BPF_ANY as u64).is_ok() {
        sc(S_PATHS_RECORDED);
    }
}

/// [`DIRS_REGS`]: the running syscall's path argument and dirfd, from its saved user
/// registers. None when the task is not in a syscall that takes a path.
#[inline(always)]
pub(super) fn path_from_regs() -> Option<(u64, i32)> {
    let l = layout();
    // SAFETY: plain helpers; the registers are read with probe reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let nr = read::<i32>(regs, get(&l.pt_regs_syscall_nr)).ok()?;
    if nr < 0 || nr as usize >= SYS_TABLE_LEN {
        sc(S_DIR_NO_PATH);
        return None;
    }
    let enc = get(&cfg().sys_table[nr as usize & (SYS_TABLE_LEN - 1)]);
    if enc == 0 {
        sc(S_DIR_NO_PATH);
        return None;
    }
    let path_arg = ((enc & 0xf) as usize).wrapping_sub(1) & 7;
    let args = &l.pt_regs_args;
    let Some(off) = args.get(path_arg) else {
        return None;
    };
    let Ok(ptr) = read::<u64>(regs, get(off)) else {
        sc(S_DIR_READ_FAILED);
        return None;
    };
    let dfd_arg = (enc >> 4) as usize;
    let dfd = match args.get(dfd_arg.wrapping_sub(1) & 7) {
        Some(off) if dfd_arg != 0 => read::<u64>(regs, get(off)).map_or(AT_FDCWD, |v| v as i32),
        _ => AT_FDCWD,
    };
    Some((ptr, dfd))
}

/// [`DIRS_SYSCALLS`]: the path the thread's last path syscall passed, if recent.
#[inline(always)]
pub(super) fn path_from_syscall_hooks(pid_tgid: u64) -> Option<(u64, i32)> {
    // SAFETY: copied out at once.
    let Some(arg) = (unsafe { DIR_THREAD.get(&(pid_tgid as u32)) }).copied() else {
        sc(S_DIR_NO_PATH);
        return None;
    };
    // SAFETY: plain helper.
    let now = unsafe { bpf_ktime_get_ns() };
    let max_age = get(&cfg().dir_max_age_ns);
    if now.wrapping_sub(arg.ns) > max_age {
        sc(S_DIR_NO_PATH);
        return None;
    }
    Some((arg.ptr, arg.dfd))
}

/// A dentry allocation: count it under the directory of the path `ptr` (user memory).
#[inline(always)]
pub(super) fn dir_count(pid_tgid: u64, ptr: u64, dfd: i32) {
    let Some(s) = DIR_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch.
    let s = unsafe { &mut *s };
    // SAFETY: user pointer of the running syscall; the helper tolerates faults.
    let len = match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut s.path) } {
        Ok(b) => b.len(),
        Err(_) => {
            sc(S_DIR_READ_FAILED);
            return;
        }
    };
    // SAFETY: per-CPU scratch fields, written through volatile stores (see DirScratch).
    unsafe { write_volatile(&mut s.last, 0) };
    for i in 0..PATH_LEN {
        if i >= len {
            break;
        }
        if s.path[i] == b'/' {
            unsafe { write_volatile(&mut s.last, i as u64 + 1) };
        }
    }
    // 1 + last slash: "/a/b" -> 3 ("/a"), "/b" -> 1 ("/"), "b" -> 0 ("").
    let last = unsafe { read_volatile(&s.last) };
    let dlen = if last > 1 { last - 1 } else { last };
    s.key.tgid = (pid_tgid >> 32) as u32;
    s.key.dfd = dfd;
    for i in 0..DIR_LEN {
        s.key.dir[i] = if (i as u64) < dlen { s.path[i] } else { 0 };
    }
    match DIRS.get_ptr_mut(&s.key) {
        // SAFETY: per-CPU value.
        Some(p) => unsafe { *p += 1 },
        None => {
            if DIRS.insert(&s.key, &1u64, BPF_NOEXIST as u64).is_err() {
                match DIRS.get_ptr_mut(&s.key) {
                    Some(p) => unsafe { *p += 1 },
                    None => {
                        sc(S_DIRS_FULL);
                        return;
                    }
                }
            }
        }
    }
    sc(S_DIR_JOINED);
}
