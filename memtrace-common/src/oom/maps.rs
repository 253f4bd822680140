//! Names of the oom family's BPF maps (the agent opens them by name). Their keys and
//! values are private to the BPF programs, except [`super::OomRetry`] (records.rs), which
//! the kill record carries.
//!
//! The BPF side's `#[map(name = "...")]` attributes cannot take a const: they repeat these
//! literals, and a unit test (lib.rs) checks the two lists against each other.

pub const OOM_ACTIVE: &str = "OOM_ACTIVE";
pub const OOM_BADNESS_ARGS: &str = "OOM_BADNESS_ARGS";
pub const OOM_LAST: &str = "OOM_LAST";
pub const OOM_RETRY: &str = "OOM_RETRY";
pub const OOM_VICTIMS: &str = "OOM_VICTIMS";
pub const OOM_SCRATCH: &str = "OOM_SCRATCH";
pub const OOM_MARK: &str = "OOM_MARK";
/// The family's ring buffers (sized by the agent at load): the kill records and what
/// follows them (reaper, victim exit, end of a selection), never crowded out by
/// candidates; and the candidate records.
pub const OOM_KILLS: &str = "OOM_KILLS";
pub const OOM_CANDIDATES: &str = "OOM_CANDIDATES";

/// Every map of the family.
pub const MAP_NAMES: &[&str] = &[
    OOM_ACTIVE,
    OOM_BADNESS_ARGS,
    OOM_LAST,
    OOM_RETRY,
    OOM_VICTIMS,
    OOM_SCRATCH,
    OOM_MARK,
    OOM_KILLS,
    OOM_CANDIDATES,
];
