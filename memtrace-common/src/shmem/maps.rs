//! The shmem family's maps: per inode, per (inode, writer), per task and per superblock,
//! the per-CPU allocator runs and accounting counters, and the maps' names.

use crate::TASK_COMM_LEN;

// Map names (the agent opens them by name). The BPF side's `#[map(name = "...")]` repeats
// these literals; a unit test (lib.rs) checks the two lists against each other.
pub const SHMEM_INODES: &str = "SHMEM_INODES";
pub const SHMEM_WRITERS: &str = "SHMEM_WRITERS";
pub const SHMEM_TASKS: &str = "SHMEM_TASKS";
pub const SHMEM_DEVS: &str = "SHMEM_DEVS";
pub const SHMEM_CPU: &str = "SHMEM_CPU";
pub const SHMEM_COUNTERS: &str = "SHMEM_COUNTERS";
pub const SHMEM_RUNTIME: &str = "SHMEM_RUNTIME";
pub const SHMEM_FOLIOS: &str = "SHMEM_FOLIOS";
pub const SHMEM_SCRATCH: &str = "SHMEM_SCRATCH";

/// Every map of the family.
pub const MAP_NAMES: &[&str] = &[
    SHMEM_INODES,
    SHMEM_WRITERS,
    SHMEM_TASKS,
    SHMEM_DEVS,
    SHMEM_CPU,
    SHMEM_COUNTERS,
    SHMEM_RUNTIME,
    SHMEM_FOLIOS,
    SHMEM_SCRATCH,
];

/// Bytes of the inode's dentry name kept per inode (memfd:NAME, SYSV0000abcd, dev/zero, or
/// the file's last path component).
pub const SHMEM_NAME_LEN: usize = 64;

/// Entries of the per-inode map.
pub const SHMEM_MAX_INODES: u32 = 16_384;
/// Entries of the per-(inode, writer) map.
pub const SHMEM_MAX_WRITERS: u32 = 32_768;
/// Entries of the per-task (writer) map.
pub const SHMEM_MAX_TASKS: u32 = 8_192;
/// Folios remembered as counted when no NR_SHMEM runs tell new folios from put-back ones.
pub const SHMEM_MAX_FOLIOS: u32 = 65_536;
/// Entries of the per-superblock map.
pub const SHMEM_MAX_DEVS: u32 = 1_024;

/// Per-CPU queue of (task, pages) runs awaiting their LRU insertion.
pub const SHMEM_CPU_RUNS: usize = 8;
/// A run never holds more than this many pages (a drained batch holds at most 31 folios).
pub const SHMEM_RUN_CAP: u32 = 1 << 16;

/// Key of the per-inode map: the superblock's device (kernel `dev_t`: major << 20 | minor)
/// and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for InodeKey {}

/// Per inode: pages the kernel added to and removed from its page cache while traced.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InodeStats {
    pub alloc_pages: u64,
    pub freed_pages: u64,
    /// `bpf_ktime_get_boot_ns()` of the first allocation seen, and of the last event.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The inode's dentry name when first seen (NUL-terminated, may be empty).
    pub name: [u8; SHMEM_NAME_LEN],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for InodeStats {}

/// Key of the per-(inode, writer) map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriterKey {
    pub dev: u32,
    pub tgid: u32,
    pub ino: u64,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WriterKey {}

/// How a writer was identified (`WriterStats::how`).
pub const HOW_EXACT: u32 = 1;
/// The task that queued NR_SHMEM pages on this CPU, matched in order at LRU insertion.
pub const HOW_CPU_RUN: u32 = 2;
/// The task running when the per-CPU LRU batch was drained.
pub const HOW_DRAIN_TASK: u32 = 3;

/// Pages one task allocated into one inode.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriterStats {
    pub alloc_pages: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Memory cgroup id (kernfs node id) of the writer when first seen.
    pub cgroup_id: u64,
    pub pid: u32,
    /// One of `HOW_*` (the weakest seen for this writer).
    pub how: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WriterStats {}

/// Per task (tgid): shmem pages added (and removed) in its context. Filled from the memcg
/// NR_SHMEM tracepoint when present, else by the allocation hook.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskStats {
    pub added_pages: u64,
    pub removed_pages: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    /// `TASK_FROM_*`.
    pub source: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TaskStats {}

pub const TASK_FROM_NR_SHMEM: u32 = 1;
pub const TASK_FROM_ALLOC_HOOK: u32 = 2;

/// Per superblock (kernel dev_t). Allocated and freed totals are the sums over its inodes
/// (computed by the agent: one map update less per page).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevStats {
    /// Pages freed from inodes memtrace never saw allocating: allocated before it started.
    pub unseen_freed_pages: u64,
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DevStats {}

/// One allocator run waiting for its folios to reach the LRU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuRun {
    pub tgid: u32,
    pub pid: u32,
    pub pages: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CpuRuns {
    pub head: u32,
    pub len: u32,
    pub runs: [CpuRun; SHMEM_CPU_RUNS],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CpuRuns {}

/// Indexes of the per-CPU `SHMEM_COUNTERS` array (accuracy bookkeeping).
pub mod counter {
    /// Folios counted as allocations.
    pub const ALLOC_FOLIOS: u32 = 0;
    /// LRU insertions of shmem folios that are not new: no pending NR_SHMEM run on that CPU
    /// (put back after isolation or migration, or allocated on another CPU), or, without
    /// NR_SHMEM, a folio already counted.
    pub const LRU_REINSERTED: u32 = 1;
    /// Folios that reached the LRU after being truncated (already counted at the free).
    pub const LRU_TRUNCATED: u32 = 2;
    /// Folios deleted before their LRU insertion: counted as allocated at the free.
    pub const FREED_BEFORE_LRU: u32 = 3;
    /// Pages freed from inodes never seen allocating (pre-existing).
    pub const UNSEEN_FREED_PAGES: u32 = 4;
    /// NR_SHMEM updates seen.
    pub const NR_SHMEM_EVENTS: u32 = 5;
    /// Allocation hook returned an error (fexit): not counted.
    pub const ALLOC_FAILED: u32 = 6;
    /// Allocations attributed to the draining task (no NR_SHMEM hook).
    pub const DRAIN_ATTRIBUTED: u32 = 7;
    /// Allocations attributed through a per-CPU NR_SHMEM run.
    pub const RUN_ATTRIBUTED: u32 = 8;
    /// Runs merged into the newest one because the per-CPU queue was full.
    pub const RUNS_MERGED: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Bits of the `SHMEM_RUNTIME[0]` word: set by the agent from the attached programs, and by
/// the programs themselves when they first run.
pub const RT_NR_SHMEM_SEEN: u32 = 1;
pub const RT_ALLOC_EXACT_SEEN: u32 = 2;
