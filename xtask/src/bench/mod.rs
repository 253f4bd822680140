//! `cargo xtask bench <family>`: each family's cost, measured on the real kernel (root).

pub mod oom;
pub mod reclaim;
pub mod shmem;
pub mod slab;
