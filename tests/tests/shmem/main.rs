//! The shmem family's integration tests, one binary: the host cases (host.rs: whatever
//! strategy this kernel offers, forced fallbacks, filters, text mode and its replay), the
//! VM-only cases (vm.rs: the exact fexit/kprobe strategies on Debian 6.1 and 6.12), and
//! what both share (scenario.rs: helpers and the tmpfs scenario).

mod host;
mod scenario;
mod vm;
