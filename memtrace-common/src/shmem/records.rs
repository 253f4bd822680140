//! The shmem family's one ring-buffer record.

use crate::{CgroupPath, EventHeader, Family, TASK_COMM_LEN, event_kind};

/// Record kind (`EventHeader::kind`) of [`ShmemTaskEvent`].
pub const KIND_TASK: u32 = event_kind(Family::Shmem, 1);

/// Ring-buffer record: a task seen adding shmem pages for the first time, with its memory
/// cgroup path read in BPF (the cgroup may be gone by the time the agent looks).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ShmemTaskEvent {
    pub header: EventHeader,
    pub tgid: u32,
    pub pid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
    pub cgroup: CgroupPath,
}
