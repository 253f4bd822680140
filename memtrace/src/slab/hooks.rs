//! The slab family's hooks. kmem_cache_alloc/free pass `struct kmem_cache *` as argument 2
//! since 6.1 (5.x passed sizes and, for free, the name string). The classic
//! kmem_cache_free record has the cache name since 5.12; the classic kmem_cache_alloc
//! record has it on 6.18 but not on 6.1/6.12. Path syscalls give the directories of dentry
//! allocations where the syscall's registers cannot be read.

use memtrace_common::{layout::ABSENT, slab::NSYS};

use super::{args::Options, config::dirs_via_syscall_hooks};
use crate::{
    engine::hook::{Candidate, Hook, Strategy},
    kernel::{checks::Check, layout::Resolved},
    tracepoints,
};

/// kmem_cache members the slab programs read by pointer.
fn slab_layout(l: &Resolved) -> Result<(), String> {
    let l = &l.layout;
    if [l.kmem_cache_name, l.kmem_cache_size, l.kmem_cache_object_size].contains(&ABSENT) {
        return Err("struct kmem_cache has no name/size/object_size in BTF (not SLUB?)".into());
    }
    Ok(())
}

const LAYOUT: Check = Check::Layout(slab_layout);

/// Path syscalls joined with dentry allocations: (hook, program).
const PATH_HOOKS: [(&str, &str); NSYS] = [
    ("syscalls:sys_enter_newfstatat", "slab_path_newfstatat"),
    ("syscalls:sys_enter_statx", "slab_path_statx"),
    ("syscalls:sys_enter_openat", "slab_path_openat"),
    ("syscalls:sys_enter_openat2", "slab_path_openat2"),
    ("syscalls:sys_enter_faccessat", "slab_path_faccessat"),
    ("syscalls:sys_enter_faccessat2", "slab_path_faccessat2"),
    ("syscalls:sys_enter_access", "slab_path_access"),
    ("syscalls:sys_enter_newstat", "slab_path_newstat"),
    ("syscalls:sys_enter_newlstat", "slab_path_newlstat"),
    ("syscalls:sys_enter_open", "slab_path_open"),
];

pub fn hooks(o: &Options) -> Vec<Hook> {
    let mut alloc = tracepoints!("slab_alloc", "kmem", "kmem_cache_alloc",
        TpArg(2, "struct kmem_cache *"), ["call_site", "ptr", "bytes_alloc"], [LAYOUT]);
    // The classic record: named (6.18), else grouped by object size. A test forces the
    // second with MEMTRACE_DISABLE=slab_alloc_tp:named (config.rs then ignores the name).
    let mut noname = alloc.pop().expect("three candidates");
    noname.requires.pop(); // the kmem_cache layout is not read through a record
    noname.limits = "this kernel's kmem_cache_alloc record names no cache: allocations are \
        grouped by object size (size-N), --cache cannot select them and net growth per cache \
        is unavailable";
    let named = Candidate::new(Strategy::Tracepoint, "slab_alloc_tp", "kmem:kmem_cache_alloc")
        .variant("named")
        .requires([Check::Fields("kmem:kmem_cache_alloc", &["call_site", "ptr", "name"])]);
    alloc.push(named);
    alloc.push(noname.variant("noname"));
    let mut free = tracepoints!("slab_free", "kmem", "kmem_cache_free",
        TpArg(2, "struct kmem_cache *"), ["call_site", "ptr", "name"], [LAYOUT]);
    free[2].requires.pop();
    let mut v = vec![Hook::new("kmem:kmem_cache_alloc", alloc), Hook::new("kmem:kmem_cache_free", free)];
    // Only where the path cannot be read from the syscall's registers at the allocation.
    let dirs = dirs_via_syscall_hooks(o);
    for (hook, program) in PATH_HOOKS {
        v.push(
            Hook::new(hook, vec![
                Candidate::new(Strategy::Tracepoint, program, hook)
                    .requires([Check::Fields(hook, &["filename"])]),
            ])
            .needed(dirs),
        );
    }
    v
}
