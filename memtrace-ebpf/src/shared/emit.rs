//! Filling records: the time, the header every record starts with, and reading the globals
//! the loader sets (`LAYOUT`, each family's `<FAM>_CONFIG`).

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns};
use memtrace_common::{EventHeader, SelfFilter};

/// memtrace's own process (`memtrace_common::SELF_FILTER`), set by the loader.
#[unsafe(no_mangle)]
static MEMTRACE_SELF: SelfFilter = SelfFilter::NONE;

/// Whether `tgid` is memtrace's own process, whose events are dropped (unless the session
/// runs with --include-self: the loader then leaves tgid 0).
#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    // SAFETY: a static the loader rewrites before load; never written at run time.
    let me = get(unsafe { &(*core::ptr::addr_of!(MEMTRACE_SELF)).tgid });
    me != 0 && me == tgid
}

/// A loader-set global (or a member of one), read volatile so the compiler cannot fold
/// the compiled-in default into the code. Every family reads its globals through this.
#[inline(always)]
pub fn get<T: Copy>(v: &T) -> T {
    // SAFETY: a reference to one of our own statics; the loader rewrites them before load
    // and nothing writes them at run time.
    unsafe { core::ptr::read_volatile(v) }
}

/// `bpf_ktime_get_boot_ns()`: the clock of every record's `boot_ns`.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Fills a record's header: its kind (`memtrace_common::event_kind`), this CPU, the time.
#[inline(always)]
pub fn header(h: &mut EventHeader, kind: u32) {
    h.kind = kind;
    // SAFETY: plain helper.
    h.cpu = unsafe { bpf_get_smp_processor_id() };
    h.boot_ns = now();
}
