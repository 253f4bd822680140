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

mod config;
mod maps;
mod records;

pub use config::*;
pub use maps::*;
pub use records::*;
