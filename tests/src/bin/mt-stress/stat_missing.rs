//! `stat-missing --count N --dir D [--go-file F] [--via stat|statx|open|access] [--procs P]
//! [--hold]`: stats N unique paths that do not exist in directory D (created if needed), so
//! the kernel allocates one negative dentry per path. Prints `ready` when set up, waits for
//! file F to exist (with --go-file), then prints `done <ENOENT count>` and exits (or sleeps
//! until killed with --hold). With --procs P, P child processes one after the other each
//! stat N paths (many processes: high cardinality), and the count is their total.

use std::{ffi::CString, path::Path};

use crate::common::{Opts, fail, park, say};

pub fn run(o: &Opts) {
    let count = o.num("count", 10_000);
    let dir = o.get("dir").unwrap_or_else(|| fail("stat-missing needs --dir DIR"));
    let via = o.get("via").unwrap_or("stat").to_string();
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("mkdir {dir}: {e}")));
    say("ready");
    if let Some(go) = o.get("go-file") {
        while !Path::new(go).exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let procs = o.num("procs", 0);
    let enoent = if procs == 0 {
        stat_paths(dir, &via, count)
    } else {
        let mut total = 0;
        for _ in 0..procs {
            // SAFETY: single-threaded here; the child only stats and exits.
            match unsafe { libc::fork() } {
                0 => {
                    let n = stat_paths(dir, &via, count);
                    // SAFETY: ends the child without running the parent's atexit state.
                    unsafe { libc::_exit(if n == count { 0 } else { 1 }) }
                }
                -1 => fail("fork failed"),
                child => {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                        total += count;
                    }
                }
            }
        }
        total
    };
    say(&format!("done {enoent}"));
    if o.flag("hold") {
        park()
    }
}

/// Stats `count` unique missing paths in `dir`; returns how many failed with ENOENT. The
/// names carry the pid and this run's boot-clock nanoseconds (low 32 bits), so no earlier run (a pid
/// reused, the same directory) can have left them as cached negative dentries.
fn stat_paths(dir: &str, via: &str, count: u64) -> u64 {
    let pid = std::process::id();
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    // The low 32 bits: names stay under the dentry's inline length (32 bytes).
    let run = (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64) as u32;
    let mut enoent = 0u64;
    for i in 0..count {
        let p = CString::new(format!("{dir}/mt-miss-{pid}-{run:x}-{i}")).expect("no NUL");
        // SAFETY: valid C string and out buffers.
        let rc = unsafe {
            match via {
                "statx" => {
                    let mut sx: libc::statx = std::mem::zeroed();
                    libc::statx(libc::AT_FDCWD, p.as_ptr(), 0, libc::STATX_BASIC_STATS, &mut sx)
                }
                "open" => libc::open(p.as_ptr(), libc::O_RDONLY),
                "access" => libc::access(p.as_ptr(), libc::F_OK),
                _ => {
                    let mut st: libc::stat = std::mem::zeroed();
                    libc::stat(p.as_ptr(), &mut st)
                }
            }
        };
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            enoent += 1;
        }
    }
    enoent
}
