//! Shmem-backed mounts: tmpfs mounts and their `df` numbers (statfs), kernel device
//! numbers, the internal shm mount's device, and inode -> path maps of a tmpfs (a bounded
//! walk).

use std::{
    collections::HashMap,
    ffi::CString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::procfs::Procfs;

/// Kernel `dev_t` (`MKDEV`: major << 20 | minor), as BPF reads `super_block.s_dev`.
pub fn kdev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// "major:minor" of a kernel dev_t.
pub fn kdev_str(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

/// A userspace `st_dev` (glibc encoding) as a kernel dev_t.
pub fn kdev_of_st(st: u64) -> u32 {
    let major = ((st >> 8) & 0xfff) | ((st >> 32) & !0xfff);
    let minor = (st & 0xff) | ((st >> 12) & !0xff);
    kdev(major as u32, minor as u32)
}

/// A shmem-backed mount (tmpfs or devtmpfs) from /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: u32,
    pub point: PathBuf,
    /// The path inside the filesystem that is mounted here ("/" unless a bind mount).
    pub root: String,
    pub fstype: String,
}

/// Undoes mountinfo's octal escapes (\040 for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The shmem-backed mounts in a mountinfo text, one per superblock (the mount of the
/// filesystem's root preferred, then the shortest mount point). A mount hidden by a later
/// mount on the same point is not reachable by path and is left out.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut by_dev: HashMap<u32, Mount> = HashMap::new();
    // The last mount on each point is the visible one.
    let mut top: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(point) = line.split(' ').nth(4) {
            top.insert(point.to_string(), n);
        }
    }
    for (n, line) in text.lines().enumerate() {
        if line.split(' ').nth(4).and_then(|p| top.get(p)) != Some(&n) {
            continue;
        }
        // id parent maj:min root point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.is_empty() {
            continue;
        }
        let fstype = r[0];
        // rootfs is a tmpfs or a ramfs (the initramfs root): `mounts` keeps the tmpfs ones.
        if !matches!(fstype, "tmpfs" | "devtmpfs" | "rootfs") {
            continue;
        }
        let Some((maj, min)) = l[2].split_once(':') else { continue };
        let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else { continue };
        let m = Mount {
            dev: kdev(maj, min),
            point: PathBuf::from(unescape(l[4])),
            root: unescape(l[3]),
            fstype: fstype.to_string(),
        };
        let better = |old: &Mount| {
            (m.root == "/", std::cmp::Reverse(m.point.as_os_str().len()))
                > (old.root == "/", std::cmp::Reverse(old.point.as_os_str().len()))
        };
        match by_dev.get(&m.dev) {
            Some(old) if !better(old) => {}
            _ => {
                by_dev.insert(m.dev, m);
            }
        }
    }
    let mut v: Vec<Mount> = by_dev.into_values().collect();
    v.sort_by(|a, b| a.point.cmp(&b.point));
    v
}

/// The shmem-backed mounts this process can reach by path.
pub fn mounts(procfs: &Procfs) -> Vec<Mount> {
    let mut v = parse_mountinfo(&procfs.read("proc/self/mountinfo").unwrap_or_default());
    v.retain(|m| (m.fstype != "rootfs" || is_tmpfs(&m.point)) && reachable(m));
    v
}

/// The mount point really is that superblock (not shadowed, not in another namespace).
fn reachable(m: &Mount) -> bool {
    std::fs::metadata(&m.point).is_ok_and(|md| kdev_of_st(md.dev()) == m.dev)
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn is_tmpfs(point: &Path) -> bool {
    let Ok(c) = CString::new(point.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC }
}

/// `df` of a mount: (used bytes, size bytes). A tmpfs without a size limit reports no
/// blocks: None.
pub fn statfs(point: &Path) -> Option<(u64, u64)> {
    let c = CString::new(point.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    let bs = st.f_bsize as u64;
    Some(((st.f_blocks - st.f_bfree) as u64 * bs, st.f_blocks as u64 * bs))
}

/// The device of the kernel's internal shm mount (memfd, SysV shm, shared anonymous
/// memory): a memfd's st_dev.
pub fn internal_shm_dev() -> Option<u32> {
    let name = CString::new("memtrace-probe").expect("no NUL");
    // SAFETY: valid name; the fd is closed below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    ok.then(|| kdev_of_st(st.st_dev))
}

/// Inode -> path for the files of one filesystem below `root` (not crossing into other
/// filesystems), visiting at most `budget` entries. Returns the map and whether the walk
/// was complete.
pub fn walk(root: &Path, dev: u32, budget: usize) -> (HashMap<u64, PathBuf>, bool) {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            seen += 1;
            if seen > budget {
                return (out, false);
            }
            let Ok(md) = e.metadata() else { continue };
            if kdev_of_st(md.dev()) != dev {
                continue;
            }
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                out.entry(md.ino()).or_insert_with(|| e.path());
            }
        }
    }
    (out, true)
}

/// Whether `path` is still inode `ino` of `dev`.
pub fn is_inode(path: &Path, dev: u32, ino: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == ino && kdev_of_st(m.dev()) == dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_devices() {
        assert_eq!(kdev(0, 52), 52);
        assert_eq!(kdev(8, 1), 8 << 20 | 1);
        assert_eq!(kdev_str(kdev(259, 3)), "259:3");
        // glibc makedev(8, 1) = 0x801; makedev(0, 300) = 0x1_002c ... big minors.
        assert_eq!(kdev_of_st(0x801), kdev(8, 1));
        let st = (300u64 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(kdev_of_st(st), kdev(0, 300));
    }

    #[test]
    fn parses_mountinfo() {
        let t = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
26 30 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=12334492k
27 26 0:24 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
28 30 0:24 /sub /mnt/bind rw - tmpfs tmpfs rw
29 30 0:40 / /mnt/with\\040space rw - tmpfs none rw,size=4k
30 30 0:41 /x /b rw - tmpfs none rw
31 30 0:41 /x /a/longer rw - tmpfs none rw
32 30 0:50 / /stacked rw - tmpfs none rw
33 30 0:51 / /stacked rw - tmpfs none rw
";
        let m = parse_mountinfo(t);
        let by = |d: u32| m.iter().find(|x| x.dev == d).unwrap();
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(!m.iter().any(|x| x.dev == kdev(0, 50)), "hidden by 0:51");
        assert_eq!(by(kdev(0, 51)).point, Path::new("/stacked"));
        assert_eq!(by(kdev(0, 5)).fstype, "devtmpfs");
        assert_eq!(by(kdev(0, 24)).point, Path::new("/dev/shm"), "the root mount wins");
        assert_eq!(by(kdev(0, 40)).point, Path::new("/mnt/with space"));
        assert_eq!(by(kdev(0, 41)).point, Path::new("/b"), "the shortest bind mount");
        assert_eq!(by(kdev(0, 41)).root, "/x");
    }

    #[test]
    fn finds_the_internal_mount_and_dev_shm() {
        let dev = internal_shm_dev().expect("memfd_create works");
        let shm = mounts(&Procfs::system()).into_iter().find(|m| m.point == Path::new("/dev/shm"));
        if let Some(shm) = shm {
            assert_ne!(shm.dev, dev, "memfds live on the internal mount, not /dev/shm");
        }
        assert_eq!(dev >> 20, 0, "an anonymous superblock device");
    }

    #[test]
    fn walks_a_directory() {
        let dir = std::env::temp_dir().join(format!("memtrace-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), b"x").unwrap();
        std::fs::write(dir.join("g"), b"y").unwrap();
        let md = std::fs::metadata(dir.join("a/b/f")).unwrap();
        let dev = kdev_of_st(md.dev());
        let (m, complete) = walk(&dir, dev, 1000);
        assert!(complete);
        assert_eq!(m.get(&md.ino()), Some(&dir.join("a/b/f")));
        assert_eq!(m.len(), 2);
        assert!(is_inode(&dir.join("a/b/f"), dev, md.ino()));
        assert!(!is_inode(&dir.join("g"), dev, md.ino()));
        let (_, complete) = walk(&dir, dev, 2);
        assert!(!complete, "budget exhausted");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
