//! `pagecache --path FILE --mb N [--read] [--read-only] [--keep] [--drop] [--passes K]
//! [--loop] [--exit]`: writes N MiB to FILE through the page cache (buffered 1 MiB writes), reads it
//! back with --read (only reads an existing FILE with --read-only), K times (or until
//! killed with --loop), prints `done <MiB written>`, then sleeps (or exits with --exit).
//! The file is removed at the end of each pass unless --keep; --drop writes it back and
//! drops it from the page cache after writing (so later readers charge their own cgroup). Inside a small memory
//! cgroup, the writes make memcg reclaim wait on writeback and the reads make it evict.

use std::io::{Read as _, Write as _};

use crate::common::{Opts, fail, park, say};

pub fn run(o: &Opts) {
    let Some(path) = o.get("path") else { fail("pagecache needs --path FILE") };
    let mb = o.num("mb", 64) as usize;
    let passes = o.num("passes", 1);
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    let mut pass = 0;
    while o.flag("loop") || pass < passes {
        pass += 1;
        if !o.flag("read-only") {
            let mut f = std::fs::File::create(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
            for _ in 0..mb {
                f.write_all(&chunk).unwrap_or_else(|e| fail(&format!("writing {path}: {e}")));
                written += 1;
            }
            if o.flag("drop") {
                use std::os::fd::AsRawFd as _;
                f.sync_all().unwrap_or_else(|e| fail(&format!("fsync {path}: {e}")));
                // SAFETY: a valid fd; advisory call.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            }
        }
        if o.flag("read") || o.flag("read-only") {
            let mut f = std::fs::File::open(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
            let mut buf = vec![0u8; 1 << 20];
            while f.read(&mut buf).unwrap_or_else(|e| fail(&format!("reading {path}: {e}"))) > 0 {}
        }
        if !o.flag("keep") && !o.flag("read-only") {
            let _ = std::fs::remove_file(path);
        }
    }
    say(&format!("done {written}"));
    if o.flag("exit") {
        return;
    }
    park()
}
