//! Slab family: kmem_cache_alloc / kmem_cache_free counted in per-CPU maps keyed by the
//! cache (pointer from the BTF/raw tracepoint, name hash from the classic one) and by the
//! caller (call site, process, memory cgroup). Nothing is streamed per allocation.
//!
//! Extras: `--cache` filtering (a few compares for the other caches once the wanted caches
//! are found), `--live` (object pointer -> allocating caller, bounded LRU, so frees are
//! attributed to whoever allocated), and for dentries the directory of the thread's last
//! path syscall.
//!
//! Files: hooks.rs (the programs), model.rs (the counting: cache discovery and `--cache`
//! filter, per-CPU slots, caller rows, `--live`), dirs.rs (the directory of a dentry
//! allocation), maps.rs, config.rs.

mod config;
mod dirs;
mod hooks;
mod maps;
mod model;
