//! Syscalls that take a path, with the positions of the path and dirfd arguments, for
//! reading the path of the running syscall at a dentry allocation (`DIRS_REGS`). Numbers
//! come from libc for the architecture memtrace is built for; the register layout from BTF.

/// (syscall number, path argument index, dirfd argument index).
type Entry = (libc::c_long, u8, Option<u8>);

/// Path syscalls of this architecture (empty where memtrace does not know the table).
pub fn path_syscalls() -> Vec<Entry> {
    #[allow(unused_mut, reason = "architectures without extra legacy syscalls")]
    let mut v: Vec<Entry> = Vec::new();
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    v.extend([
        (libc::SYS_openat, 1, Some(0)),
        (libc::SYS_openat2, 1, Some(0)),
        (libc::SYS_newfstatat, 1, Some(0)),
        (libc::SYS_statx, 1, Some(0)),
        (libc::SYS_faccessat, 1, Some(0)),
        (libc::SYS_faccessat2, 1, Some(0)),
        (libc::SYS_mkdirat, 1, Some(0)),
        (libc::SYS_mknodat, 1, Some(0)),
        (libc::SYS_unlinkat, 1, Some(0)),
        (libc::SYS_renameat2, 1, Some(0)),
        (libc::SYS_linkat, 1, Some(0)),
        (libc::SYS_symlinkat, 2, Some(1)),
        (libc::SYS_readlinkat, 1, Some(0)),
        (libc::SYS_fchmodat, 1, Some(0)),
        (libc::SYS_fchownat, 1, Some(0)),
        (libc::SYS_utimensat, 1, Some(0)),
        (libc::SYS_execveat, 1, Some(0)),
        (libc::SYS_name_to_handle_at, 1, Some(0)),
        (libc::SYS_inotify_add_watch, 1, None),
        (libc::SYS_execve, 0, None),
        (libc::SYS_chdir, 0, None),
        (libc::SYS_chroot, 0, None),
        (libc::SYS_truncate, 0, None),
        (libc::SYS_statfs, 0, None),
        (libc::SYS_getxattr, 0, None),
        (libc::SYS_lgetxattr, 0, None),
        (libc::SYS_setxattr, 0, None),
        (libc::SYS_lsetxattr, 0, None),
        (libc::SYS_listxattr, 0, None),
        (libc::SYS_llistxattr, 0, None),
        (libc::SYS_removexattr, 0, None),
        (libc::SYS_lremovexattr, 0, None),
    ]);
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (libc::SYS_open, 0, None),
        (libc::SYS_creat, 0, None),
        (libc::SYS_stat, 0, None),
        (libc::SYS_lstat, 0, None),
        (libc::SYS_access, 0, None),
        (libc::SYS_mkdir, 0, None),
        (libc::SYS_mknod, 0, None),
        (libc::SYS_rmdir, 0, None),
        (libc::SYS_unlink, 0, None),
        (libc::SYS_rename, 0, None),
        (libc::SYS_renameat, 1, Some(0)),
        (libc::SYS_link, 0, None),
        (libc::SYS_symlink, 1, None),
        (libc::SYS_readlink, 0, None),
        (libc::SYS_chmod, 0, None),
        (libc::SYS_chown, 0, None),
        (libc::SYS_lchown, 0, None),
        (libc::SYS_utime, 0, None),
        (libc::SYS_utimes, 0, None),
        (libc::SYS_futimesat, 1, Some(0)),
    ]);
    v
}

/// [`path_syscalls`] indexed by syscall number (numbers from N on are left out): per
/// entry, the path argument + 1 in the low nibble and the dirfd argument + 1 in the high
/// one; 0 for syscalls without a path.
pub fn table<const N: usize>() -> [u8; N] {
    let mut t = [0u8; N];
    for (nr, path, dfd) in path_syscalls() {
        if let Ok(i) = usize::try_from(nr) {
            if i < N {
                t[i] = (path + 1) | dfd.map_or(0, |d| (d + 1) << 4);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn encodes_path_and_dirfd_positions() {
        let t = table::<512>();
        // newfstatat(dfd, path, ...): path arg 1, dirfd arg 0.
        assert_eq!(t[262], 2 | 1 << 4);
        // stat(path, ...): path arg 0, relative to the current directory.
        assert_eq!(t[4], 1);
        // symlinkat(target, newdirfd, linkpath): the new name is looked up.
        assert_eq!(t[266], 3 | 2 << 4);
        // read(2) takes no path.
        assert_eq!(t[0], 0);
        assert!(path_syscalls().iter().all(|e| (e.0 as usize) < 512));
    }
}
