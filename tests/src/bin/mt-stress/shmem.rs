//! Shmem workloads: each puts N MiB into one kind of shmem and prints `ready <inode> ...`.
//!
//! - `tmpfs-write --path P --mb N [--hold] [--go FILE]`: write(2) N MiB into file P (on a
//!   tmpfs), exit (or hold with --hold). With --go, waits for FILE to exist before writing
//!   (so a test can start a tracer filtering on this pid first). Prints `ready <ino>`.
//! - `memfd-write --name NAME --mb N [--exit]`: memfd_create(NAME) and write N MiB, hold the
//!   memfd. Prints `ready <ino>`.
//! - `shm-write --name NAME --mb N [--hold]`: POSIX shm object /dev/shm/NAME, ftruncate and
//!   touch it through a shared mapping (page faults), exit. Prints `ready <ino>`.
//! - `sysv-write --mb N [--hold]`: a SysV segment (IPC_PRIVATE), attach, touch, detach, exit
//!   (the segment stays until IPC_RMID). Prints `ready <ino> <shmid>`.
//! - `shared-anon --mb N [--exit]`: mmap(MAP_SHARED | MAP_ANONYMOUS), touch, hold. Prints
//!   `ready <ino>`.

use std::{ffi::CString, os::unix::fs::MetadataExt as _};

use crate::common::{Opts, fail, park, say};

const MIB: usize = 1024 * 1024;

fn write_all(fd: i32, mb: u64) {
    let buf = vec![0x5au8; MIB];
    for _ in 0..mb {
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: valid buffer and length.
            let n = unsafe { libc::write(fd, buf[off..].as_ptr().cast(), buf.len() - off) };
            if n <= 0 {
                fail(&format!("write: {}", std::io::Error::last_os_error()));
            }
            off += n as usize;
        }
    }
}

fn fstat_ino(fd: i32) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        fail("fstat failed");
    }
    st.st_ino
}

/// Maps `len` bytes of `fd` (or anonymous memory when fd is -1) shared and touches each page.
fn map_and_touch(fd: i32, len: usize) -> *mut u8 {
    let flags = if fd < 0 { libc::MAP_SHARED | libc::MAP_ANONYMOUS } else { libc::MAP_SHARED };
    // SAFETY: checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0)
    };
    if p == libc::MAP_FAILED {
        fail(&format!("mmap: {}", std::io::Error::last_os_error()));
    }
    touch(p.cast(), len);
    p.cast()
}

fn touch(p: *mut u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: inside the mapping.
        unsafe { p.add(off).write_volatile(0x5a) };
        off += 4096;
    }
}

/// The inode of the mapping at `addr` in /proc/self/maps.
fn mapped_ino(addr: *mut u8) -> u64 {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let a = addr as usize;
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some((lo, _)) = f.first().and_then(|r| r.split_once('-')) else { continue };
        if usize::from_str_radix(lo, 16) == Ok(a) {
            return f.get(4).and_then(|i| i.parse().ok()).unwrap_or(0);
        }
    }
    fail("mapping not found in /proc/self/maps")
}

pub fn tmpfs_write(o: &Opts) {
    let path = o.get("path").unwrap_or_else(|| fail("tmpfs-write needs --path"));
    if let Some(go) = o.get("go") {
        while !std::path::Path::new(go).exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| fail(&format!("open {path}: {e}")));
    use std::os::fd::AsRawFd as _;
    write_all(f.as_raw_fd(), o.num("mb", 64));
    let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
    say(&format!("ready {ino}"));
    if o.flag("hold") {
        park()
    }
}

pub fn memfd_write(o: &Opts) {
    let name = CString::new(o.get("name").unwrap_or("mt-memfd")).expect("no NUL");
    // SAFETY: valid name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        fail(&format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    write_all(fd, o.num("mb", 16));
    say(&format!("ready {}", fstat_ino(fd)));
    if !o.flag("exit") {
        park()
    }
}

pub fn shm_write(o: &Opts) {
    let name = o.get("name").unwrap_or("mt-shm");
    let path = format!("/dev/shm/{}", name.trim_start_matches('/'));
    let len = o.num("mb", 16) as usize * MIB;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| fail(&format!("open {path}: {e}")));
    f.set_len(len as u64).unwrap_or_else(|e| fail(&format!("ftruncate: {e}")));
    use std::os::fd::AsRawFd as _;
    map_and_touch(f.as_raw_fd(), len);
    say(&format!("ready {}", f.metadata().map(|m| m.ino()).unwrap_or(0)));
    if o.flag("hold") {
        park()
    }
}

pub fn sysv_write(o: &Opts) {
    let len = o.num("mb", 16) as usize * MIB;
    // SAFETY: plain syscalls; results checked.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        fail(&format!("shmget: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: attach anywhere.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    if p as isize == -1 {
        fail(&format!("shmat: {}", std::io::Error::last_os_error()));
    }
    touch(p.cast(), len);
    let ino = mapped_ino(p.cast());
    say(&format!("ready {ino} {id}"));
    if o.flag("hold") {
        park()
    }
    // SAFETY: our attachment.
    unsafe { libc::shmdt(p) };
}

pub fn shared_anon(o: &Opts) {
    let len = o.num("mb", 16) as usize * MIB;
    let p = map_and_touch(-1, len);
    say(&format!("ready {}", mapped_ino(p)));
    if !o.flag("exit") {
        park()
    }
}
