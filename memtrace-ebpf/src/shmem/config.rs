//! `SHMEM_CONFIG`: classic-tracepoint offsets and kernel constants, set by the agent at
//! load.

use memtrace_common::shmem::ShmemConfig;

#[unsafe(no_mangle)]
static SHMEM_CONFIG: ShmemConfig = ShmemConfig::DEFAULT;

/// The config; read its members with `shared::emit::get` (volatile), or the compiler
/// folds the defaults in.
#[inline(always)]
pub fn cfg() -> &'static ShmemConfig {
    // SAFETY: a static that the loader rewrites before load.
    unsafe { &*core::ptr::addr_of!(SHMEM_CONFIG) }
}
