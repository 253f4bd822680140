//! The shmem family's maps, their per-CPU counters and runtime bits, and the atomic add
//! for map values shared between CPUs. Names are listed in `memtrace_common::shmem`
//! (maps.rs) for the agent.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use memtrace_common::shmem::{
    CpuRuns, DevStats, InodeKey, InodeStats, SHMEM_MAX_DEVS, SHMEM_MAX_FOLIOS, SHMEM_MAX_INODES,
    SHMEM_MAX_TASKS, SHMEM_MAX_WRITERS, TaskStats, WriterKey, WriterStats, counter,
};

use crate::shared::maps::percpu_add;

#[map(name = "SHMEM_INODES")]
pub(super) static SHMEM_INODES: HashMap<InodeKey, InodeStats> = HashMap::with_max_entries(SHMEM_MAX_INODES, 0);

#[map(name = "SHMEM_WRITERS")]
pub(super) static SHMEM_WRITERS: HashMap<WriterKey, WriterStats> =
    HashMap::with_max_entries(SHMEM_MAX_WRITERS, 0);

#[map(name = "SHMEM_TASKS")]
pub(super) static SHMEM_TASKS: HashMap<u32, TaskStats> = HashMap::with_max_entries(SHMEM_MAX_TASKS, 0);

/// Per superblock; the agent also inserts every tmpfs it knows (the classic free
/// tracepoint has no folio, so it recognises shmem by superblock).
#[map(name = "SHMEM_DEVS")]
pub(super) static SHMEM_DEVS: HashMap<u32, DevStats> = HashMap::with_max_entries(SHMEM_MAX_DEVS, 0);

#[map(name = "SHMEM_CPU")]
pub(super) static SHMEM_CPU: PerCpuArray<CpuRuns> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SHMEM_COUNTERS")]
pub(super) static SHMEM_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Word 0: `RT_*` bits, set by the programs when they first run.
#[map(name = "SHMEM_RUNTIME")]
pub(super) static SHMEM_RUNTIME: Array<u32> = Array::with_max_entries(1, 0);

/// Without NR_SHMEM runs (drain-task attribution), the folios already counted: an LRU
/// insertion of one of them is a put-back after isolation (compaction, migration, DAMON),
/// not an allocation. Entries leave at the folio's free.
#[map(name = "SHMEM_FOLIOS")]
pub(super) static SHMEM_FOLIOS: HashMap<u64, u8> = HashMap::with_max_entries(SHMEM_MAX_FOLIOS, 0);

/// Scratch for a new inode entry (too big for comfort on the BPF stack).
#[map(name = "SHMEM_SCRATCH")]
pub(super) static SHMEM_SCRATCH: PerCpuArray<InodeStats> = PerCpuArray::with_max_entries(1, 0);

/// Adds `n` to this CPU's accounting counter `idx` (`counter::*`).
#[inline(always)]
pub(super) fn bump(idx: u32, n: u64) {
    percpu_add(&SHMEM_COUNTERS, idx, n);
}

/// Atomic `*p += n` (BPF_XADD): map values are shared between CPUs. The bpfel target has
/// no core atomics, hence the assembly.
#[inline(always)]
pub(super) fn add(p: *mut u64, n: u64) {
    // SAFETY: `p` points into a map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {n}",
            p = in(reg) p,
            n = in(reg) n,
        );
    }
}

#[inline(always)]
pub(super) fn runtime() -> u32 {
    match SHMEM_RUNTIME.get_ptr(0) {
        // SAFETY: array slot 0 exists.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

#[inline(always)]
pub(super) fn set_runtime(bit: u32) {
    if let Some(p) = SHMEM_RUNTIME.get_ptr_mut(0) {
        // SAFETY: array slot 0. Checked first so the line is written once per bit; two
        // CPUs setting different bits at once may lose one, which the next event sets again.
        unsafe {
            let v = core::ptr::read_volatile(p);
            if v & bit == 0 {
                core::ptr::write_volatile(p, v | bit);
            }
        }
    }
}
