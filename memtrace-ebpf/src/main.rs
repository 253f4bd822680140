//! memtrace BPF programs. One module per probe family; each program is a thin wrapper
//! around a `try_*` function whose failures are counted in `STATS`, never lost silently.
#![no_std]
#![no_main]
// Inline assembly for atomic adds on shared map values (the bpf target has no core atomics).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod kernel;
mod maps;
mod oom;
mod reclaim;
mod shmem;
mod slab;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
