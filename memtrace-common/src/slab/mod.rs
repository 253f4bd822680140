//! Slab family: kmem_cache_alloc / kmem_cache_free aggregated in the kernel, per cache and
//! per cache x call site x process x memory cgroup. Nothing is streamed per allocation; the
//! agent reads these maps every second (its collection), whatever the output interval.
//!
//! A *cache key* identifies a cache in the maps. With the BTF/raw tracepoints it is the
//! `struct kmem_cache *` itself; the classic tracepoint passes only the name, so its keys
//! are a hash of the name with [`KEY_NAME_HASH`] set (or, on kernels whose classic
//! kmem_cache_alloc has no name at all, the object size with [`KEY_SIZE_ONLY`]). The agent
//! merges keys by cache name.

mod config;
mod maps;
mod records;

pub use config::*;
pub use maps::*;
#[expect(unused_imports, reason = "the slab family has no records (yet): records.rs is empty")]
pub use records::*;
