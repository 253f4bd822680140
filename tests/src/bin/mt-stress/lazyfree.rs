//! `lazyfree --mb N`: touches N MiB of anonymous memory, then madvise(MADV_FREE)s it:
//! the pages stay charged but the kernel may drop them under pressure without swap (they
//! sit on the file LRU). Reclaimable memory for machines without disks or swap. Prints
//! `ready <KiB>` and sleeps until killed.

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
    for off in (0..total).step_by(4096) {
        // SAFETY: inside the mapping.
        unsafe { p.add(off).write_volatile(1) };
    }
    // SAFETY: our own mapping.
    if unsafe { libc::madvise(base, total, libc::MADV_FREE) } != 0 {
        fail(&format!("madvise(MADV_FREE): {}", std::io::Error::last_os_error()));
    }
    say(&format!("ready {}", total / 1024));
    park()
}
