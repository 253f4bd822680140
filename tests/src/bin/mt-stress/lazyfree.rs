//! `lazyfree --mb N [--churn]`: touches N MiB of anonymous memory, then madvise(MADV_FREE)s it:
//! the pages stay charged but the kernel may drop them under pressure without swap (they
//! sit on the file LRU). Reclaimable memory for machines without disks or swap. Prints
//! `ready <KiB>` and sleeps until killed. With `--churn`, touches and frees the range again
//! and again instead: in a cgroup smaller than N MiB, a CPU-bound memcg reclaim storm.

use crate::common::{Opts, fail, park, say};

pub fn run(o: &Opts) {
    let total = o.num("mb", 64) as usize * 1024 * 1024;
    // SAFETY: anonymous private mapping; checked for MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        fail("mmap failed");
    }
    let p = base.cast::<u8>();
    // Touch and free in 2 MiB chunks: never more than one chunk of plain anonymous memory,
    // so N may exceed the cgroup's limit (the freed chunks are reclaimed to make room).
    let chunk = 2 << 20;
    let pass = |value: u8| {
        for start in (0..total).step_by(chunk) {
            let len = chunk.min(total - start);
            for off in (start..start + len).step_by(4096) {
                // SAFETY: inside the mapping.
                unsafe { p.add(off).write_volatile(value) };
            }
            // SAFETY: our own mapping, page aligned.
            if unsafe { libc::madvise(base.cast::<u8>().add(start).cast(), len, libc::MADV_FREE) } != 0 {
                fail(&format!("madvise(MADV_FREE): {}", std::io::Error::last_os_error()));
            }
        }
    };
    pass(1);
    say(&format!("ready {}", total / 1024));
    if !o.flag("churn") {
        park()
    }
    let mut v = 1u8;
    loop {
        v = v.wrapping_add(1) | 1;
        pass(v);
    }
}
