//! memtrace BPF programs. One folder per probe family, each with the same files: `hooks.rs`
//! (the programs: thin wrappers that read their arguments and call the family's bodies),
//! `model.rs` and its siblings (the bodies), `maps.rs` (the family's maps) and `config.rs`
//! (its loader-set global). `shared/` holds what every family uses: kernel reads through
//! the BTF-resolved layout, the ring buffer and counters, record headers. Failures are
//! counted in `STATS`, never lost silently.
#![no_std]
#![no_main]
// Inline assembly for atomic adds on shared map values (the bpf target has no core atomics).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod oom;
mod reclaim;
mod shared;
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
