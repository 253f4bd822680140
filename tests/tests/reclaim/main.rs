//! The reclaim family's tests, one binary: host cases (host.rs; they run in the VM too),
//! VM-only cases that press global memory (vm.rs), the recording replayed into the same
//! text (replay.rs), and the helpers they share (common.rs).

mod common;
mod host;
mod replay;
mod vm;
