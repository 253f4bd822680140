//! `RECLAIM_CONFIG`: filters, the streaming threshold and classic-tracepoint offsets, set
//! by the agent at load.

use memtrace_common::reclaim::ReclaimConfig;

#[unsafe(no_mangle)]
static RECLAIM_CONFIG: ReclaimConfig = ReclaimConfig::DEFAULT;

/// The config; read its members with `shared::emit::get` (volatile), or the compiler
/// folds the defaults in.
#[inline(always)]
pub fn cfg() -> &'static ReclaimConfig {
    // SAFETY: a static the loader rewrites before load.
    unsafe { &*core::ptr::addr_of!(RECLAIM_CONFIG) }
}
