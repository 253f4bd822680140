//! OOM-kill records (`oom:mark_victim`).

use crate::{CgroupPath, EventHeader, TASK_COMM_LEN};

/// Global `OOM_CONFIG` for the oom programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomConfig {
    /// Byte offset of `pid` in the classic tracepoint record (tracefs format), used only by
    /// the classic-tracepoint fallback.
    pub tp_pid_offset: u32,
    pub _pad: u32,
}

/// Bits of [`OomKillEvent::flags`].
pub const OOM_HAVE_TASK: u32 = 1 << 0;
pub const OOM_HAVE_MM: u32 = 1 << 1;
/// The victim had no mm (already exiting): rss fields are zero.
pub const OOM_NO_MM: u32 = 1 << 2;

/// One `oom:mark_victim` hit, read at kill time.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OomKillEvent {
    pub header: EventHeader,
    pub flags: u32,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_uid: u32,
    pub victim_oom_score_adj: i32,
    pub trigger_pid: u32,
    pub trigger_tgid: u32,
    pub _pad: u32,
    /// Pages (RSS counters of the victim's mm, as the kernel's get_mm_counter reads them).
    pub rss_anon: i64,
    pub rss_file: i64,
    pub rss_shmem: i64,
    pub swap_ents: i64,
    pub pgtables_bytes: i64,
    pub total_vm_pages: u64,
    pub victim_comm: [u8; TASK_COMM_LEN],
    pub trigger_comm: [u8; TASK_COMM_LEN],
    pub victim_cgroup: CgroupPath,
    pub trigger_cgroup: CgroupPath,
}
