//! The shmem programs' BPF global `SHMEM_CONFIG`, set by the agent at load.

/// Name of the BPF global holding a [`ShmemConfig`].
pub const SHMEM_CONFIG: &str = "SHMEM_CONFIG";

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

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ShmemConfig {}
