//! What every ring-buffer record starts with: the family it belongs to and its kind.

/// Probe families. The numeric value indexes the stats map and is the high part of every
/// record kind ([`event_kind`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Oom = 0,
    Reclaim = 1,
    Slab = 2,
    Shmem = 3,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Oom, Family::Reclaim, Family::Slab, Family::Shmem];

    pub const fn name(self) -> &'static str {
        match self {
            Family::Oom => "oom",
            Family::Reclaim => "reclaim",
            Family::Slab => "slab",
            Family::Shmem => "shmem",
        }
    }
}

/// The kind of record `n` of `family` (`EventHeader::kind`): the family in the bits above
/// the low 8, the family's own number below. Each family's `records.rs` names its kinds
/// (`oom::KIND_KILL`, ...); [`event_family`] gives the family back.
pub const fn event_kind(family: Family, n: u32) -> u32 {
    ((family as u32) << 8) | n
}

/// The family of a record kind; None for a family number this build does not know.
pub const fn event_family(kind: u32) -> Option<Family> {
    match kind >> 8 {
        0 => Some(Family::Oom),
        1 => Some(Family::Reclaim),
        2 => Some(Family::Slab),
        3 => Some(Family::Shmem),
        _ => None,
    }
}

/// First bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// A kind made by [`event_kind`].
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub boot_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{oom, reclaim, shmem};

    #[test]
    fn kinds_round_trip_to_their_family() {
        for f in Family::ALL {
            for n in [0, 1, 2, 200, 255] {
                assert_eq!(event_family(event_kind(f, n)), Some(f), "{f:?} {n}");
                assert_eq!(event_kind(f, n) & 0xff, n);
            }
        }
        let named = [
            (oom::KIND_KILL, Family::Oom),
            (oom::KIND_CANDIDATE, Family::Oom),
            (oom::KIND_REAPER, Family::Oom),
            (oom::KIND_SELECT_DONE, Family::Oom),
            (reclaim::KIND_STALL, Family::Reclaim),
            (shmem::KIND_TASK, Family::Shmem),
        ];
        for (i, (kind, family)) in named.iter().enumerate() {
            assert_eq!(event_family(*kind), Some(*family), "kind {kind}");
            for (other, _) in &named[i + 1..] {
                assert_ne!(kind, other, "two records share kind {kind}");
            }
        }
    }

    #[test]
    fn unknown_family_is_none() {
        assert_eq!(event_family(4 << 8), None);
        assert_eq!(event_family((4 << 8) | 1), None);
        assert_eq!(event_family(u32::MAX), None);
        assert_eq!(event_family(0xff << 8), None);
    }
}
