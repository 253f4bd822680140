//! The slab family's BPF global (`SLAB_CONFIG`: the cache filter, --live, how dentry
//! allocations get their directory, classic tracepoint offsets) and its map sizes.

use memtrace_common::{
    layout::ABSENT,
    slab::{CACHE_NAME_LEN, DIRS_OFF, DIRS_REGS, DIRS_SYSCALLS, MAX_FILTER, NSYS, SYS_NAMES, SlabConfig},
};

use super::args::Options;
use crate::{
    engine::{family::Filter, loader::Global, select::disabled},
    kernel::{Kernel, syscalls, tracefs::Format},
};

/// `MEMTRACE_DISABLE=slab_dirs_regs`: directories from the syscall hooks even where the
/// registers serve (to test that fallback).
pub const DISABLE_DIRS_REGS: &str = "slab_dirs_regs";
/// `MEMTRACE_DISABLE=slab_alloc_tp:named`: the classic kmem_cache_alloc as if its record
/// had no cache name (as on 6.1/6.12), grouped by object size.
pub const DISABLE_ALLOC_NAME: &str = "slab_alloc_tp:named";

/// Whether dentry directories come from `syscalls:sys_enter_*` hooks: only on
/// architectures whose syscall table memtrace lacks (elsewhere the path is read from the
/// syscall's registers at the dentry allocation, which costs the syscalls nothing), or when
/// a test disables the register read.
pub fn dirs_via_syscall_hooks(o: &Options) -> bool {
    o.dirs && (syscalls::path_syscalls().is_empty() || disabled(DISABLE_DIRS_REGS))
}

/// How this kernel gives dentry allocations their directory.
fn dirs_mode(kernel: &Kernel, o: &Options) -> u32 {
    let l = &kernel.layout.layout;
    if !o.dirs {
        DIRS_OFF
    } else if dirs_via_syscall_hooks(o) {
        DIRS_SYSCALLS
    } else if kernel.btf.enum_value("BPF_FUNC_task_pt_regs").is_some()
        && l.pt_regs_syscall_nr != ABSENT
        && l.pt_regs_args.iter().all(|&a| a != ABSENT)
    {
        DIRS_REGS
    } else {
        log::warn!("dentry directories unavailable: no bpf_task_pt_regs or pt_regs layout");
        DIRS_OFF
    }
}

/// The `SLAB_CONFIG` global: filter, options and classic tracepoint offsets.
pub fn config(kernel: &Kernel, cfg: &Filter, o: &Options) -> SlabConfig {
    let mut c = SlabConfig::DEFAULT;
    c.nfilter = o.caches.len() as u32;
    for (i, name) in o.caches.iter().take(MAX_FILTER).enumerate() {
        let b = name.as_bytes();
        let n = b.len().min(CACHE_NAME_LEN - 1);
        c.names[i][..n].copy_from_slice(&b[..n]);
    }
    c.live = o.live as u32;
    c.dirs = dirs_mode(kernel, o);
    c.sys_table = syscalls::table();
    c.tgid = cfg.pid.unwrap_or(0);
    let off = |f: &Format, name: &str| f.offset(name).unwrap_or(ABSENT);
    if let Some(f) = kernel.format("kmem", "kmem_cache_alloc") {
        c.tp_alloc_call_site = off(&f, "call_site");
        c.tp_alloc_ptr = off(&f, "ptr");
        c.tp_alloc_name = if disabled(DISABLE_ALLOC_NAME) { ABSENT } else { off(&f, "name") };
        c.tp_alloc_bytes_alloc = off(&f, "bytes_alloc");
    }
    if let Some(f) = kernel.format("kmem", "kmem_cache_free") {
        c.tp_free_call_site = off(&f, "call_site");
        c.tp_free_ptr = off(&f, "ptr");
        c.tp_free_name = off(&f, "name");
    }
    for (i, sys) in SYS_NAMES.iter().enumerate().take(NSYS) {
        if let Some(f) = kernel.format("syscalls", &format!("sys_enter_{sys}")) {
            c.sys_filename[i] = off(&f, "filename");
            c.sys_dfd[i] = off(&f, "dfd");
        }
    }
    c
}

pub fn globals(kernel: &Kernel, cfg: &Filter, o: &Options) -> Vec<Global> {
    vec![Global::of("SLAB_CONFIG", &config(kernel, cfg, o))]
}

/// Caller rows the kernel keeps: bounded by memory, since every CPU has its own counters.
/// Tests lower it with MEMTRACE_SLAB_CALLERS_MAX to exercise the bound.
pub fn callers_max() -> u32 {
    let cpus = aya::util::nr_cpus().unwrap_or(64).max(1) as u64;
    let per_entry = 16 * cpus + 96;
    let by_memory = ((32u64 << 20) / per_entry).clamp(1024, 32_768);
    std::env::var("MEMTRACE_SLAB_CALLERS_MAX")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(by_memory, |v| v.clamp(1024, by_memory)) as u32
}

/// Map sizes chosen at load time.
pub fn map_sizes(o: &Options) -> Vec<(&'static str, u32)> {
    vec![("SLAB_LIVE", if o.live { o.live_max } else { 1024 }), ("SLAB_CALLERS", callers_max())]
}
