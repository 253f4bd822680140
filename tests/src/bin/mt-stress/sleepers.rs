//! `sleepers --count N [--stack-bytes B]`: N small processes that sleep until killed. Each
//! is a clone sharing this process's memory, files, fs and signal handlers (no copy of the
//! address space or page tables: a task, its kernel stack and B bytes of user stack, 1 KiB
//! by default), a process of its own (its own thread group) that dies with its parent
//! (PR_SET_PDEATHSIG). Prints `pids P1 P2 ...` and `ready N`, then reaps its children as
//! they die, until killed.

use std::ffi::c_void;

use crate::common::{Opts, fail, park, say};

/// A sleeper, on its own tiny stack in the shared address space: only raw syscalls (no
/// allocation, no lock, no errno of its own). `parent` is the parent's pid.
extern "C" fn sleeper(parent: *mut c_void) -> libc::c_int {
    // SAFETY: plain syscalls.
    unsafe {
        let pdeathsig = libc::PR_SET_PDEATHSIG as libc::c_long;
        libc::syscall(libc::SYS_prctl, pdeathsig, libc::SIGKILL as libc::c_long);
        // The parent died before the line above: nobody would kill this one.
        if libc::syscall(libc::SYS_getppid) != parent as libc::c_long {
            libc::syscall(libc::SYS_exit, 0 as libc::c_long);
        }
        loop {
            libc::syscall(libc::SYS_pause);
        }
    }
}

pub fn run(o: &Opts) {
    let count = o.num("count", 1000) as usize;
    let stack = (o.num("stack-bytes", 1024) as usize).max(512).next_multiple_of(64);
    let len = (count * stack).max(1).next_multiple_of(4096);
    // SAFETY: anonymous private mapping; checked for MAP_FAILED. Never unmapped: the
    // sleepers run on it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        fail("mmap of the sleepers' stacks failed");
    }
    let me = std::process::id() as usize;
    let flags = libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND;
    let mut pids = Vec::with_capacity(count);
    for i in 0..count {
        // The top of the i-th stack (16-byte aligned: `stack` is a multiple of 64).
        let top = base.cast::<u8>().wrapping_add((i + 1) * stack).cast::<c_void>();
        // SAFETY: `sleeper` runs on its own slice of the mapping and touches nothing else.
        let pid = unsafe { libc::clone(sleeper, top, flags | libc::SIGCHLD, me as *mut c_void) };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            fail(&format!("clone of sleeper {i} of {count}: {e} (the others die with this one)"));
        }
        pids.push(pid.to_string());
    }
    say(&format!("pids {}", pids.join(" ")));
    say(&format!("ready {count}"));
    loop {
        // SAFETY: plain waitpid; no handlers are installed, so it returns on a child's death.
        if unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL) } < 0 {
            park();
        }
    }
}
