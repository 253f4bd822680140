//! `lazyfree --mb N [--churn] [--forks K [--pause-ms P]]`: touches N MiB of anonymous
//! memory, then madvise(MADV_FREE)s it: the pages stay charged but the kernel may drop them
//! under pressure without swap (they sit on the file LRU). Reclaimable memory for machines
//! without disks or swap. Prints `ready <KiB>` and sleeps until killed. With `--churn`,
//! touches and frees the range again and again instead: in a cgroup smaller than N MiB, a
//! CPU-bound memcg reclaim storm. With `--forks K`, K short-lived child processes in turn
//! (P ms apart) each make one such pass and exit, then `done K` and exit: a storm of many
//! distinct stalling processes.

use crate::common::{Opts, fail, map_anon, park, say};

/// Touch and free in 2 MiB chunks: never more than one chunk of plain anonymous memory,
/// so N may exceed the cgroup's limit (the freed chunks are reclaimed to make room).
const CHUNK: usize = 2 << 20;

struct Range {
    base: *mut u8,
    len: usize,
}

impl Range {
    fn map(len: usize) -> Range {
        Range { base: map_anon(len), len }
    }

    /// Writes `value` to every page, freeing each chunk once written.
    fn pass(&self, value: u8) {
        for start in (0..self.len).step_by(CHUNK) {
            let len = CHUNK.min(self.len - start);
            for off in (start..start + len).step_by(4096) {
                // SAFETY: inside the mapping.
                unsafe { self.base.add(off).write_volatile(value) };
            }
            // SAFETY: our own mapping, page aligned.
            if unsafe { libc::madvise(self.base.add(start).cast(), len, libc::MADV_FREE) } != 0 {
                fail(&format!("madvise(MADV_FREE): {}", std::io::Error::last_os_error()));
            }
        }
    }
}

pub fn run(o: &Opts) {
    let total = o.num("mb", 64) as usize * 1024 * 1024;
    let forks = o.num("forks", 0);
    if forks > 0 {
        return train(total, forks, std::time::Duration::from_millis(o.num("pause-ms", 0)));
    }
    let r = Range::map(total);
    r.pass(1);
    say(&format!("ready {}", total / 1024));
    if !o.flag("churn") {
        park()
    }
    let mut v = 1u8;
    loop {
        v = v.wrapping_add(1) | 1;
        r.pass(v);
    }
}

/// `forks` children in turn, each one pass over `total` bytes.
fn train(total: usize, forks: u64, pause: std::time::Duration) {
    for _ in 0..forks {
        // SAFETY: this process has one thread; the child only maps, writes and exits.
        match unsafe { libc::fork() } {
            -1 => fail(&format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                Range::map(total).pass(1);
                // SAFETY: leaves the child at once, without the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    fail(&format!("child {pid} ended with status {status:#x}"));
                }
            }
        }
        std::thread::sleep(pause);
    }
    say(&format!("done {forks}"));
}
