//! `SLAB_CONFIG`: `--cache` names, `--live`, `-p`, the directory join and classic-tracepoint
//! offsets, set by the agent at load.

use memtrace_common::slab::SlabConfig;

#[unsafe(no_mangle)]
static SLAB_CONFIG: SlabConfig = SlabConfig::DEFAULT;

/// The config; read its members with `shared::emit::get` (volatile), or the compiler
/// folds the defaults in.
#[inline(always)]
pub fn cfg() -> &'static SlabConfig {
    // SAFETY: a static the loader rewrites before load; never written at run time.
    unsafe { &*core::ptr::addr_of!(SLAB_CONFIG) }
}
