//! The slab family's integration tests, one binary: host cases (`host`, `strategies`,
//! `text`) run on any kernel, the host's and the VM's; VM-only cases (`vm`) press global
//! memory or need the VM kernels' tracepoint layouts (`cargo xtask vm-test --test slab`).
//! What they share (the storm, a directory that keeps negative dentries, record readers) is
//! in `common`.

mod common;
mod host;
mod strategies;
mod text;
mod vm;
