//! Shmem / tmpfs attribution: kernel maps keyed by (superblock, inode) and by writer, plus
//! the records and configuration the shmem programs share with the agent.
//!
//! Where the numbers come from (strategies are chosen per kernel in the agent's hooks.rs):
//! - Allocation, exact: fexit/kprobe on `shmem_add_to_page_cache` (or kretprobe on
//!   `shmem_alloc_and_add_folio`), in the allocating task's context, with the folio and its
//!   mapping (hence inode and superblock).
//! - Allocation, fallback: `pagemap:mm_lru_insertion` for folios that are file-backed and
//!   swap-backed (shmem). The file is exact (folio->mapping->host); the task is not, because
//!   new folios wait in a per-CPU batch and reach the LRU when the batch is drained, by
//!   whichever task fills it (or a kworker). When `memcg:mod_memcg_lruvec_state` (item
//!   NR_SHMEM) is available, it runs in the allocator's context and queues (task, pages) runs
//!   per CPU; LRU insertions consume those runs in order, which names the allocator exactly
//!   as long as the batch is not shared with re-inserted folios (migration, isolation).
//! - Free: `filemap:mm_filemap_delete_from_page_cache`, in the freeing task's context.
//!
//! Known limits (stated in the reports' accuracy record and doctor's gap texts):
//! - Up to one per-CPU LRU batch (31 folios per CPU) can wait to be drained: with the LRU
//!   strategy those pages are attributed when the batch drains, or at their free.
//! - Swap is not modelled (the development machines have none): a shmem page written to
//!   swap leaves the page cache without a delete event, so it stays live here (it still
//!   belongs to the file) while /proc/meminfo Shmem drops; swapping it back in counts it
//!   again.
//! - khugepaged collapsing small shmem pages into a huge page replaces them without the
//!   events above; the huge page's eventual free is counted in full.

use crate::TASK_COMM_LEN;

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

/// Key of the per-(inode, writer) map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriterKey {
    pub dev: u32,
    pub tgid: u32,
    pub ino: u64,
}

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

/// Global `SHMEM_CONFIG`: classic-tracepoint field offsets (tracefs formats) and
/// kernel constants. `u32::MAX` where absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmemConfig {
    /// enum node_stat_item NR_SHMEM.
    pub nr_shmem_item: u32,
    /// pagemap:mm_lru_insertion: `folio` (or `page`) and `flags` offsets, and the flag bits
    /// the tracepoint uses for anonymous, swap-cache and swap-backed folios.
    pub lru_folio_off: u32,
    pub lru_flags_off: u32,
    pub lru_flag_anon: u32,
    pub lru_flag_swapcache: u32,
    pub lru_flag_swapbacked: u32,
    /// filemap:mm_filemap_delete_from_page_cache: `s_dev`, `i_ino`, `order` offsets.
    pub del_dev_off: u32,
    pub del_ino_off: u32,
    pub del_order_off: u32,
    /// memcg:mod_memcg_lruvec_state: `id`, `item`, `val` offsets.
    pub memcg_id_off: u32,
    pub memcg_item_off: u32,
    pub memcg_val_off: u32,
}

impl ShmemConfig {
    pub const DEFAULT: ShmemConfig = ShmemConfig {
        nr_shmem_item: u32::MAX,
        lru_folio_off: 8,
        lru_flags_off: 32,
        lru_flag_anon: 0x2,
        lru_flag_swapcache: 0x8,
        lru_flag_swapbacked: 0x10,
        del_dev_off: 32,
        del_ino_off: 16,
        del_order_off: 36,
        memcg_id_off: 8,
        memcg_item_off: 16,
        memcg_val_off: 20,
    };
}

/// Ring-buffer record: a task seen adding shmem pages for the first time, with its memory
/// cgroup path read in BPF (the cgroup may be gone by the time the agent looks).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ShmemTaskEvent {
    pub header: crate::EventHeader,
    pub tgid: u32,
    pub pid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
    pub cgroup: crate::CgroupPath,
}
