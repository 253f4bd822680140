//! Types shared by the BPF programs (`memtrace-ebpf`) and the agent (`memtrace`).
//!
//! Everything here is `#[repr(C)]` and plain data: the BPF side writes these structs into
//! ring-buffer records and maps, the agent reads them back byte for byte. Kinds and
//! indices are stable numbers; never reorder them.
#![no_std]

pub mod layout;
pub mod oom;
pub mod reclaim;
pub mod shmem;
pub mod slab;
pub mod stats;

/// Length of `task_struct::comm`.
pub const TASK_COMM_LEN: usize = 16;
/// Cgroup path components recorded by BPF (leaf first). Deeper paths are truncated and
/// flagged.
pub const CGROUP_DEPTH: usize = 8;
/// Bytes per recorded cgroup path component (kernfs node name).
pub const CGROUP_NAME_LEN: usize = 96;

/// Probe families. The numeric value indexes the stats map.
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

/// Ring-buffer record kinds.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    OomKill = 1,
    OomCandidate = 2,
    OomReaper = 3,
    OomSelectDone = 4,
    /// A reclaim stall at or above --min-latency (`reclaim::ReclaimStallEvent`).
    ReclaimStall = 10,
    /// Shmem: a task seen adding shmem pages for the first time (`shmem::ShmemTaskEvent`).
    ShmemTask = 30,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(EventKind::OomKill),
            2 => Some(EventKind::OomCandidate),
            3 => Some(EventKind::OomReaper),
            4 => Some(EventKind::OomSelectDone),
            10 => Some(EventKind::ReclaimStall),
            30 => Some(EventKind::ShmemTask),
            _ => None,
        }
    }

    pub const fn family(self) -> Family {
        match self {
            EventKind::OomKill
            | EventKind::OomCandidate
            | EventKind::OomReaper
            | EventKind::OomSelectDone => Family::Oom,
            EventKind::ReclaimStall => Family::Reclaim,
            EventKind::ShmemTask => Family::Shmem,
        }
    }
}

/// TRANSITIONAL (replaced by the per-family kind encoding): the family of a record kind.
pub const fn event_family(kind: u32) -> Option<Family> {
    match EventKind::from_u32(kind) {
        Some(k) => Some(k.family()),
        None => None,
    }
}

/// First bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub boot_ns: u64,
}

/// A memory-cgroup path read in BPF by walking kernfs nodes up from the cgroup.
///
/// `names[0]` is the cgroup itself, `names[depth - 1]` the child of the hierarchy root.
/// A depth of 0 means the root cgroup. `id` is the kernfs node id (the cgroup id on v2,
/// the inode number of the cgroup directory).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupPath {
    pub id: u64,
    pub depth: u32,
    /// 1 when the walk stopped at [`CGROUP_DEPTH`] before reaching the root, 2 when a read
    /// failed, 0 when complete.
    pub status: u32,
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_DEPTH],
}

pub const CGROUP_COMPLETE: u32 = 0;
pub const CGROUP_TRUNCATED: u32 = 1;
pub const CGROUP_READ_FAILED: u32 = 2;
/// No layout was available to read the cgroup (coverage gap, reported by doctor).
pub const CGROUP_UNAVAILABLE: u32 = 3;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain data without padding-dependent invariants.
    unsafe impl aya::Pod for super::layout::KernelLayout {}
    unsafe impl aya::Pod for super::oom::OomConfig {}
    unsafe impl aya::Pod for super::reclaim::ReclaimConfig {}
    unsafe impl aya::Pod for super::reclaim::HistKey {}
    unsafe impl aya::Pod for super::reclaim::Hist {}
    unsafe impl aya::Pod for super::reclaim::KswapdNode {}
    unsafe impl aya::Pod for super::shmem::ShmemConfig {}
    unsafe impl aya::Pod for super::shmem::InodeKey {}
    unsafe impl aya::Pod for super::shmem::InodeStats {}
    unsafe impl aya::Pod for super::shmem::WriterKey {}
    unsafe impl aya::Pod for super::shmem::WriterStats {}
    unsafe impl aya::Pod for super::shmem::TaskStats {}
    unsafe impl aya::Pod for super::shmem::DevStats {}
    unsafe impl aya::Pod for super::shmem::CpuRuns {}
    unsafe impl aya::Pod for super::CgroupPath {}
    unsafe impl aya::Pod for super::slab::SlabConfig {}
    unsafe impl aya::Pod for super::slab::CacheInfo {}
    unsafe impl aya::Pod for super::slab::CacheCounters {}
    unsafe impl aya::Pod for super::slab::CallerKey {}
    unsafe impl aya::Pod for super::slab::CallerCounts {}
    unsafe impl aya::Pod for super::slab::PathArg {}
    unsafe impl aya::Pod for super::slab::DirKey {}
    unsafe impl aya::Pod for super::slab::FilterState {}
    unsafe impl aya::Pod for super::slab::CacheSlot {}
    unsafe impl aya::Pod for super::slab::CallerSlot {}
}
