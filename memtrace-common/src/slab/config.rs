//! The slab programs' BPF global `SLAB_CONFIG`: `--cache` names, `--live`, the directory
//! join and classic-tracepoint field offsets, set by the agent at load.

use super::CACHE_NAME_LEN;

/// Name of the BPF global holding a [`SlabConfig`].
pub const SLAB_CONFIG: &str = "SLAB_CONFIG";

/// At most this many `--cache` names are filtered in the kernel.
pub const MAX_FILTER: usize = 8;

/// Path syscalls whose argument is remembered per thread for dentry allocations (index of
/// the program and of [`SlabConfig::sys_filename`]).
pub const SYS_NEWFSTATAT: usize = 0;
pub const SYS_STATX: usize = 1;
pub const SYS_OPENAT: usize = 2;
pub const SYS_OPENAT2: usize = 3;
pub const SYS_FACCESSAT: usize = 4;
pub const SYS_FACCESSAT2: usize = 5;
pub const SYS_ACCESS: usize = 6;
pub const SYS_NEWSTAT: usize = 7;
pub const SYS_NEWLSTAT: usize = 8;
pub const SYS_OPEN: usize = 9;
pub const NSYS: usize = 10;
/// Tracepoint names (syscalls:sys_enter_<name>) in index order.
pub const SYS_NAMES: [&str; NSYS] = [
    "newfstatat",
    "statx",
    "openat",
    "openat2",
    "faccessat",
    "faccessat2",
    "access",
    "newstat",
    "newlstat",
    "open",
];

/// Global `SLAB_CONFIG` for the slab programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabConfig {
    /// Number of names in `names` (0: every cache).
    pub nfilter: u32,
    /// 1: remember the allocating caller of every object of the selected caches (`--live`).
    pub live: u32,
    /// How dentry allocations find their directory: [`DIRS_OFF`], [`DIRS_REGS`] or
    /// [`DIRS_SYSCALLS`].
    pub dirs: u32,
    /// Only this process (tgid); 0 for all.
    pub tgid: u32,
    /// Join a path syscall only this long after it entered.
    pub dir_max_age_ns: u64,
    /// Canonical cache names to trace (`--cache`), NUL padded.
    pub names: [[u8; CACHE_NAME_LEN]; MAX_FILTER],
    /// Classic kmem:kmem_cache_alloc field offsets (tracefs format); `name` is the
    /// `__data_loc` word, ABSENT when the kernel's format has no name.
    pub tp_alloc_call_site: u32,
    pub tp_alloc_ptr: u32,
    pub tp_alloc_name: u32,
    pub tp_alloc_bytes_alloc: u32,
    /// Classic kmem:kmem_cache_free field offsets.
    pub tp_free_call_site: u32,
    pub tp_free_ptr: u32,
    pub tp_free_name: u32,
    pub _pad: u32,
    /// syscalls:sys_enter_* offsets of `filename` and `dfd` (ABSENT: no dfd, i.e. AT_FDCWD).
    pub sys_filename: [u32; NSYS],
    pub sys_dfd: [u32; NSYS],
    /// [`DIRS_REGS`]: per syscall number below [`SYS_TABLE_LEN`], 0 for a syscall without a
    /// path, else (1 + index of the path argument) | (1 + index of the dirfd argument) << 4
    /// (high nibble 0: relative to the current directory).
    pub sys_table: [u8; SYS_TABLE_LEN],
}

pub const DIRS_OFF: u32 = 0;
/// At a dentry allocation, read the running syscall's path argument through its saved
/// registers (`bpf_task_pt_regs`): no hook on the syscalls, nothing stale.
pub const DIRS_REGS: u32 = 1;
/// Remember the path at `syscalls:sys_enter_*` per thread and join it at the dentry
/// allocation (architectures whose syscall table memtrace does not know).
pub const DIRS_SYSCALLS: u32 = 2;
/// Syscall numbers covered by [`SlabConfig::sys_table`].
pub const SYS_TABLE_LEN: usize = 512;

impl SlabConfig {
    pub const DEFAULT: SlabConfig = SlabConfig {
        nfilter: 0,
        live: 0,
        dirs: 0,
        tgid: 0,
        dir_max_age_ns: 250_000_000,
        names: [[0; CACHE_NAME_LEN]; MAX_FILTER],
        tp_alloc_call_site: 8,
        tp_alloc_ptr: 16,
        tp_alloc_name: crate::layout::ABSENT,
        tp_alloc_bytes_alloc: 32,
        tp_free_call_site: 8,
        tp_free_ptr: 16,
        tp_free_name: 24,
        _pad: 0,
        sys_filename: [24; NSYS],
        sys_dfd: [16; NSYS],
        sys_table: [0; SYS_TABLE_LEN],
    };
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SlabConfig {}
