//! Per-family counters kept by BPF in the per-CPU array `STATS`, indexed by
//! `family * SLOTS + slot`. The agent sums the CPUs and reports them on exit.
//!
//! Every record a program writes to a ring buffer (the shared `EVENTS` or a family's
//! own) counts once in [`SENT`], and once more in [`RINGBUF_DROPS`] when it did not fit:
//! what the agent did not receive is `SENT - RINGBUF_DROPS - received`, zero at the end of
//! a session (the agent drains every ring buffer after detaching).

/// The per-CPU counter array and the ring buffer every family shares.
pub const STATS_MAP: &str = "STATS";
pub const EVENTS_MAP: &str = "EVENTS";

/// Counter slots per family.
pub const SLOTS: u32 = 5;
/// Events the hook saw (after filtering).
pub const EVENTS: u32 = 0;
/// Records lost because the ring buffer was full.
pub const RINGBUF_DROPS: u32 = 1;
/// Kernel memory reads that failed while building a record (the record is still sent,
/// with the affected fields flagged).
pub const READ_ERRORS: u32 = 2;
/// Aggregation map updates that failed (map full).
pub const MAP_FULL: u32 = 3;
/// Records the programs tried to write to a ring buffer (written or dropped).
pub const SENT: u32 = 4;

pub const fn index(family: crate::Family, slot: u32) -> u32 {
    family as u32 * SLOTS + slot
}

/// Total entries of the stats array.
pub const ENTRIES: u32 = 4 * SLOTS;
