//! The shmem programs: each reads its arguments and calls a body in model.rs, counting a
//! failed kernel read as READ_ERRORS. Program names are what the agent attaches by: never
//! rename one.

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use memtrace_common::{Family, shmem::counter, stats};

use super::{
    config::cfg,
    maps::bump,
    model::{
        free_classic, nr_shmem_item, read_failed, try_added, try_free_folio, try_lru, try_nr_shmem,
    },
};
use crate::shared::{
    emit::get,
    kernel::{layout, read_ptr},
    maps::count,
};

// ---------------------------------------------------------------------------------------
// Allocation, exact: shmem_add_to_page_cache(folio, mapping, index, ...) or the folio
// returned by shmem_alloc_and_add_folio.

/// Preferred: fexit, so only successful additions count.
#[fexit(function = "shmem_add_to_page_cache")]
pub fn shmem_add_fexit(ctx: FExitContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    let mapping: *const u8 = ctx.arg(1);
    let ret: i64 = match ctx.ret::<i32>() {
        Ok(r) => r as i64,
        Err(_) => -1,
    };
    if ret != 0 {
        bump(counter::ALLOC_FAILED, 1);
        return 0;
    }
    read_failed(try_added(folio, mapping));
    0
}

#[kprobe(function = "shmem_add_to_page_cache")]
pub fn shmem_add_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(folio), Some(mapping)) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1)) else {
        count(Family::Shmem, stats::READ_ERRORS);
        return 0;
    };
    read_failed(try_added(folio, mapping));
    0
}

/// shmem_alloc_and_add_folio returns the folio already in the page cache (or an ERR_PTR).
#[kretprobe(function = "shmem_alloc_and_add_folio")]
pub fn shmem_alloc_kretprobe(ctx: RetProbeContext) -> u32 {
    let folio: *const u8 = ctx.ret();
    if folio.is_null() || (folio as u64) > u64::MAX - 4095 {
        bump(counter::ALLOC_FAILED, 1);
        return 0;
    }
    let r = read_ptr(folio, get(&layout().folio_mapping)).and_then(|m| try_added(folio, m));
    read_failed(r);
    0
}

// ---------------------------------------------------------------------------------------
// Allocation, fallback: pagemap:mm_lru_insertion.

#[btf_tracepoint(function = "mm_lru_insertion")]
pub fn shmem_lru_btf(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_lru(folio));
    0
}

#[raw_tracepoint(tracepoint = "mm_lru_insertion")]
pub fn shmem_lru_raw(ctx: RawTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_lru(folio));
    0
}

#[tracepoint(category = "pagemap", name = "mm_lru_insertion")]
pub fn shmem_lru_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets from the tracepoint's format file.
    let flags = unsafe { ctx.read_at::<u64>(get(&c.lru_flags_off) as usize) }.unwrap_or(0);
    let swapbacked = get(&c.lru_flag_swapbacked) as u64;
    let skip = get(&c.lru_flag_anon) as u64 | get(&c.lru_flag_swapcache) as u64;
    if flags & swapbacked == 0 || flags & skip != 0 {
        return 0;
    }
    // SAFETY: as above.
    match unsafe { ctx.read_at::<u64>(get(&c.lru_folio_off) as usize) } {
        Ok(folio) => read_failed(try_lru(folio as *const u8)),
        Err(_) => count(Family::Shmem, stats::READ_ERRORS),
    }
    let _ = ctx.as_ptr();
    0
}

// ---------------------------------------------------------------------------------------
// Who and how much: memcg:mod_memcg_lruvec_state(memcg, item, val), item NR_SHMEM, in the
// context of the task adding (or removing) the pages.

#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn shmem_memcg_btf(ctx: BtfTracePointContext) -> i32 {
    let item: i32 = ctx.arg(1);
    if item as i64 != nr_shmem_item() {
        return 0;
    }
    let memcg: *const u8 = ctx.arg(0);
    let val: i32 = ctx.arg(2);
    try_nr_shmem(val, Some(memcg), 0);
    0
}

#[raw_tracepoint(tracepoint = "mod_memcg_lruvec_state")]
pub fn shmem_memcg_raw(ctx: RawTracePointContext) -> i32 {
    let item: i32 = ctx.arg(1);
    if item as i64 != nr_shmem_item() {
        return 0;
    }
    let memcg: *const u8 = ctx.arg(0);
    let val: i32 = ctx.arg(2);
    try_nr_shmem(val, Some(memcg), 0);
    0
}

#[tracepoint(category = "memcg", name = "mod_memcg_lruvec_state")]
pub fn shmem_memcg_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets from the tracepoint's format file.
    let item = unsafe { ctx.read_at::<i32>(get(&c.memcg_item_off) as usize) }.unwrap_or(-1);
    if item as i64 != nr_shmem_item() {
        return 0;
    }
    // SAFETY: as above.
    let val = unsafe { ctx.read_at::<i32>(get(&c.memcg_val_off) as usize) }.unwrap_or(0);
    // SAFETY: as above. The id is the memcg's cgroup id; its path is read from the current
    // task's memcg, which is the charged one except for remote charges.
    let id = unsafe { ctx.read_at::<u64>(get(&c.memcg_id_off) as usize) }.unwrap_or(0);
    try_nr_shmem(val, None, id);
    0
}

// ---------------------------------------------------------------------------------------
// Frees: filemap:mm_filemap_delete_from_page_cache, fired before the folio leaves the page
// cache (its mapping is still set).

#[btf_tracepoint(function = "mm_filemap_delete_from_page_cache")]
pub fn shmem_free_btf(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_free_folio(folio));
    0
}

#[raw_tracepoint(tracepoint = "mm_filemap_delete_from_page_cache")]
pub fn shmem_free_raw(ctx: RawTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    read_failed(try_free_folio(folio));
    0
}

/// Classic tracepoint: (s_dev, i_ino, order), no folio; shmem is recognised by its
/// superblock being in SHMEM_DEVS (tmpfs mounts, the internal shm mount, or seen
/// allocating).
#[tracepoint(category = "filemap", name = "mm_filemap_delete_from_page_cache")]
pub fn shmem_free_tp(ctx: TracePointContext) -> u32 {
    free_classic(&ctx);
    0
}
