//! The shmem family's BPF global (`SHMEM_CONFIG`: NR_SHMEM, classic tracepoint offsets,
//! the pagemap flag bits) and its map sizes.

use memtrace_common::{layout::ABSENT, shmem::ShmemConfig};

use crate::{
    engine::{family::smallest, loader::Global},
    kernel::{Kernel, checks::enum_value, tracefs::Format},
};

/// BPF global `SHMEM_CONFIG`: classic tracepoint offsets (tracefs formats) and NR_SHMEM.
pub fn globals(kernel: &Kernel) -> Vec<Global> {
    vec![Global::of("SHMEM_CONFIG", &config(kernel))]
}

fn config(kernel: &Kernel) -> ShmemConfig {
    let mut c = ShmemConfig::DEFAULT;
    c.nr_shmem_item = enum_value(kernel, "node_stat_item", "NR_SHMEM")
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(ABSENT);
    let off = |f: &Option<Format>, name: &str| f.as_ref().and_then(|f| f.offset(name));
    let lru = kernel.format("pagemap", "mm_lru_insertion");
    c.lru_folio_off = off(&lru, "folio").or(off(&lru, "page")).unwrap_or(c.lru_folio_off);
    c.lru_flags_off = off(&lru, "flags").unwrap_or(c.lru_flags_off);
    let bits = lru_flag_bits(lru.as_ref().map_or("", |f| f.print_fmt.as_str()));
    c.lru_flag_anon = bits.anon.unwrap_or(c.lru_flag_anon);
    c.lru_flag_swapcache = bits.swapcache.unwrap_or(c.lru_flag_swapcache);
    c.lru_flag_swapbacked = bits.swapbacked.unwrap_or(c.lru_flag_swapbacked);
    let del = kernel.format("filemap", "mm_filemap_delete_from_page_cache");
    c.del_dev_off = off(&del, "s_dev").unwrap_or(c.del_dev_off);
    c.del_ino_off = off(&del, "i_ino").unwrap_or(c.del_ino_off);
    c.del_order_off = if del.is_some() { off(&del, "order").unwrap_or(ABSENT) } else { ABSENT };
    let memcg = kernel.format("memcg", "mod_memcg_lruvec_state");
    c.memcg_id_off = off(&memcg, "id").unwrap_or(c.memcg_id_off);
    c.memcg_item_off = off(&memcg, "item").unwrap_or(c.memcg_item_off);
    c.memcg_val_off = off(&memcg, "val").unwrap_or(c.memcg_val_off);
    c
}

/// The pagemap flag bits as mm_lru_insertion's print format tests them:
/// `REC->flags & 0x0002u ? "a" : "f"` (anonymous), `0x0008u ? "s"` (swap cache),
/// `0x0010u ? "b"` (swap-backed).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LruFlagBits {
    pub anon: Option<u32>,
    pub swapcache: Option<u32>,
    pub swapbacked: Option<u32>,
}

/// From the `print fmt` of mm_lru_insertion.
pub fn lru_flag_bits(print_fmt: &str) -> LruFlagBits {
    let mut out = LruFlagBits::default();
    for part in print_fmt.split("REC->flags & ").skip(1) {
        // "0x0002u ? \"a\" : \"f\", ..."
        let Some((num, rest)) = part.split_once(" ? \"") else { continue };
        let num = num.trim().trim_end_matches(['u', 'U', 'l', 'L']);
        let Some(v) = num.strip_prefix("0x").and_then(|h| u32::from_str_radix(h, 16).ok()) else {
            continue;
        };
        match rest.chars().next() {
            Some('a') => out.anon = Some(v),
            Some('s') => out.swapcache = Some(v),
            Some('b') => out.swapbacked = Some(v),
            _ => {}
        }
    }
    out
}

/// The shmem maps are preallocated (allocation in the tracing context can fail under a
/// burst otherwise): one entry each when shmem is not traced.
pub fn map_sizes(traced: bool) -> Vec<(&'static str, u32)> {
    if traced { Vec::new() } else { smallest(memtrace_common::shmem::MAP_NAMES) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LRU_FORMAT: &str = "name: mm_lru_insertion
ID: 621
format:
\tfield:struct folio * folio;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long flags;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"folio=%p pfn=0x%lx lru=%d flags=%s%s%s%s%s%s\", REC->folio, REC->pfn, REC->lru, REC->flags & 0x0001u ? \"M\" : \" \", REC->flags & 0x0002u ? \"a\" : \"f\", REC->flags & 0x0008u ? \"s\" : \" \", REC->flags & 0x0010u ? \"b\" : \" \", REC->flags & 0x0020u ? \"d\" : \" \", REC->flags & 0x0040u ? \"B\" : \" \"
";

    #[test]
    fn reads_pagemap_flag_bits_from_the_format() {
        let b = lru_flag_bits(&Format::parse(LRU_FORMAT).print_fmt);
        assert_eq!(b, LruFlagBits { anon: Some(2), swapcache: Some(8), swapbacked: Some(0x10) });
        assert_eq!(lru_flag_bits("no format"), LruFlagBits::default());
    }

    #[test]
    fn this_kernels_tracepoints_agree() {
        let Some(k) = crate::kernel::tests::running_kernel() else { return };
        let f = k.format("pagemap", "mm_lru_insertion").expect("mm_lru_insertion");
        let b = lru_flag_bits(&f.print_fmt);
        assert_eq!(b, LruFlagBits { anon: Some(2), swapcache: Some(8), swapbacked: Some(0x10) });
    }
}
