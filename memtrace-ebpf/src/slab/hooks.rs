//! The slab programs: each reads its arguments (the cache key, call site and object
//! pointer) and calls a body in model.rs or dirs.rs. Program names are what the agent
//! attaches by: never rename one.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use memtrace_common::{
    layout::ABSENT,
    slab::{
        CACHE_NAME_LEN, KEY_SIZE_ONLY, SYS_ACCESS, SYS_FACCESSAT, SYS_FACCESSAT2, SYS_NEWFSTATAT,
        SYS_NEWLSTAT, SYS_NEWSTAT, SYS_OPEN, SYS_OPENAT, SYS_OPENAT2, SYS_STATX, name_hash,
    },
};

use super::{
    config::cfg,
    dirs::on_path,
    maps::KEY_SCRATCH,
    model::{Src, on_alloc, on_free},
};
use crate::shared::emit::get;

// ---------------------------------------------------------------- programs: allocations

/// `kmem_cache_alloc(call_site, ptr, struct kmem_cache *s, gfp_flags, node)` (6.1+).
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn slab_alloc_btf(ctx: BtfTracePointContext) -> i32 {
    let call_site: u64 = ctx.arg(0);
    let s = btf_arg_bits(&ctx, 2);
    on_alloc(s, Src::Cache(s as *const u8), call_site, || btf_void_arg(&ctx, 1));
    0
}

/// A `void *` argument: kernels before 6.18 refuse to load it from the context ("type
/// UNKNOWN is not a struct"), so it is read with a probe read, and only when needed.
#[inline(always)]
fn btf_void_arg(ctx: &BtfTracePointContext, n: usize) -> u64 {
    let slot = (ctx.as_ptr() as *const u64).wrapping_add(n);
    // SAFETY: the context is an array of u64 arguments; the helper tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(slot) }.unwrap_or(0)
}

/// A typed (BTF) pointer argument as plain bits: the verifier forbids hashing or shifting
/// the typed pointer itself, which the cache key needs. A round trip through map memory
/// (which the verifier does not type) is cheaper than a probe read.
#[inline(always)]
fn btf_arg_bits(ctx: &BtfTracePointContext, n: usize) -> u64 {
    let arg: *const u8 = ctx.arg(n);
    let Some(p) = KEY_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch word.
    unsafe {
        write_volatile(p as *mut *const u8, arg);
        read_volatile(p)
    }
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn slab_alloc_raw(ctx: RawTracePointContext) -> i32 {
    let call_site: u64 = ctx.arg(0);
    let ptr: u64 = ctx.arg(1);
    let s: *const u8 = ctx.arg(2);
    on_alloc(s as u64, Src::Cache(s), call_site, || ptr);
    0
}

/// Classic `kmem:kmem_cache_alloc`: keyed by the name when the format has one (6.18),
/// else by the object size (6.1/6.12 formats carry no cache identity).
#[tracepoint(category = "kmem", name = "kmem_cache_alloc")]
pub fn slab_alloc_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets come from the tracepoint's format file.
    let call_site = unsafe { ctx.read_at::<u64>(get(&c.tp_alloc_call_site) as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let ptr = || unsafe { ctx.read_at::<u64>(get(&c.tp_alloc_ptr) as usize) }.unwrap_or(0);
    let size = unsafe { ctx.read_at::<u64>(get(&c.tp_alloc_bytes_alloc) as usize) }.unwrap_or(0);
    let loc = get(&c.tp_alloc_name);
    if loc != ABSENT {
        let mut name = [0u8; CACHE_NAME_LEN];
        classic_name(&ctx, loc, &mut name);
        on_alloc(name_hash(&name), Src::Classic(Some(&name), size as u32), call_site, ptr);
    } else {
        on_alloc(
            KEY_SIZE_ONLY | (size & 0xffff_ffff),
            Src::Classic(None, size as u32),
            call_site,
            ptr,
        );
    }
    0
}

// ---------------------------------------------------------------------- programs: frees

/// `kmem_cache_free(call_site, ptr, const struct kmem_cache *s)` (6.1+); frees are
/// attributed per cache, and with `--live` to the allocating caller: the call site is unused.
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn slab_free_btf(ctx: BtfTracePointContext) -> i32 {
    let s = btf_arg_bits(&ctx, 2);
    on_free(s, Src::Cache(s as *const u8), || btf_void_arg(&ctx, 1));
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn slab_free_raw(ctx: RawTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    let s: *const u8 = ctx.arg(2);
    on_free(s as u64, Src::Cache(s), || ptr);
    0
}

/// Classic `kmem:kmem_cache_free`, which has the cache name since 5.12.
#[tracepoint(category = "kmem", name = "kmem_cache_free")]
pub fn slab_free_tp(ctx: TracePointContext) -> u32 {
    let c = cfg();
    // SAFETY: offsets come from the tracepoint's format file.
    let ptr = || unsafe { ctx.read_at::<u64>(get(&c.tp_free_ptr) as usize) }.unwrap_or(0);
    let mut name = [0u8; CACHE_NAME_LEN];
    classic_name(&ctx, get(&c.tp_free_name), &mut name);
    on_free(name_hash(&name), Src::Classic(Some(&name), 0), ptr);
    0
}

/// Reads a `__data_loc char[]` field (low 16 bits: offset in the record).
#[inline(always)]
fn classic_name(ctx: &TracePointContext, loc_off: u32, out: &mut [u8; CACHE_NAME_LEN]) {
    // SAFETY: offset from the format file.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(loc_off as usize) }) else {
        return;
    };
    let src = (ctx.as_ptr() as usize + (loc & 0xffff) as usize) as *const u8;
    // SAFETY: bpf_probe_read_kernel_str_bytes tolerates any address.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, out) };
}

// ---------------------------------------------------------- programs: path syscalls

#[tracepoint(category = "syscalls", name = "sys_enter_newfstatat")]
pub fn slab_path_newfstatat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_NEWFSTATAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_statx")]
pub fn slab_path_statx(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_STATX);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn slab_path_openat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_OPENAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn slab_path_openat2(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_OPENAT2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_faccessat")]
pub fn slab_path_faccessat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_FACCESSAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_faccessat2")]
pub fn slab_path_faccessat2(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_FACCESSAT2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_access")]
pub fn slab_path_access(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_ACCESS);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_newstat")]
pub fn slab_path_newstat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_NEWSTAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_newlstat")]
pub fn slab_path_newlstat(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_NEWLSTAT);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn slab_path_open(ctx: TracePointContext) -> u32 {
    on_path(&ctx, SYS_OPEN);
    0
}
