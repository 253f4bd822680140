//! `OOM_CONFIG`: kernel constants and classic-tracepoint offsets, set by the agent at load.

use memtrace_common::oom::OomConfig;

#[unsafe(no_mangle)]
static OOM_CONFIG: OomConfig = OomConfig::DEFAULT;

/// The config; read its members with `shared::emit::get` (volatile), or the compiler
/// folds the defaults in.
#[inline(always)]
pub fn cfg() -> &'static OomConfig {
    // SAFETY: a static that the loader rewrites before load; never written at run time.
    unsafe { &*core::ptr::addr_of!(OOM_CONFIG) }
}
