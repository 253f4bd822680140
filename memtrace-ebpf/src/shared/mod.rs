//! What every family uses: kernel struct reads through the BTF-resolved layout
//! (`kernel`), the ring buffer and the per-family counters (`maps`), record headers and
//! loader-set globals (`emit`).

pub mod emit;
pub mod kernel;
pub mod maps;
