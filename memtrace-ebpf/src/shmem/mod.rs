//! Shmem family: who allocated shmem/tmpfs pages, into which file, and what was freed.
//! See memtrace_common::shmem for the strategies and their accuracy; hooks.rs picks one
//! per kernel. Every program is a thin wrapper around a shared `try_*` function.
//!
//! Accuracy by allocation strategy:
//! - fexit `shmem_add_to_page_cache`: exact (allocator's context, only successful adds).
//! - kprobe `shmem_add_to_page_cache`: exact context; an add that then fails (a racing
//!   allocator of the same page, a charge failure on kernels that charge inside) is counted.
//! - kretprobe `shmem_alloc_and_add_folio`: exact; misses pages re-added by swap-in.
//! - `pagemap:mm_lru_insertion`: the file is exact, the task is matched through per-CPU
//!   NR_SHMEM runs (or is the draining task without the memcg tracepoint): usually, not
//!   always, the allocator. Folios truncated before their LRU insertion are counted at the
//!   free (tp_btf free hook only).
//!
//! Files: hooks.rs (the programs), model.rs (inode, writer and task accounting; the
//! allocation, LRU, NR_SHMEM and free bodies), runs.rs (the per-CPU queue of NR_SHMEM
//! runs), maps.rs, config.rs.

mod config;
mod hooks;
mod maps;
mod model;
mod runs;
