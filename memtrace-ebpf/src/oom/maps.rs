//! The oom family's maps, their private values and the per-CPU scratch of a mark_victim.
//! Names are listed in `memtrace_common::oom` (maps.rs) for the agent.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use memtrace_common::oom::{OomKillEvent, OomRetry};

/// Bytes of kernel stack read per bpf_loop step of the oom_control scan.
pub(super) const SCAN_CHUNK: u32 = 512;
pub(super) const SCAN_WORDS: usize = (SCAN_CHUNK / 8) as usize;
const _: () = assert!(SCAN_WORDS.is_power_of_two());

/// A task inside out_of_memory() (exact strategies).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Active {
    pub(super) oc: u64,
    pub(super) decision: u64,
    pub(super) calls: u32,
    pub(super) emitted: u32,
    pub(super) dropped: u32,
    pub(super) method: u32,
}

/// The last decision taken by a task (tracepoint strategy), for memory.oom.group members.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Last {
    pub(super) decision: u64,
    pub(super) victim: u64,
    pub(super) oc: u64,
    pub(super) ns: u64,
    pub(super) dflags: u32,
    pub(super) method: u32,
}

/// The kill records, and what follows them (reaper, victim exit, end of a selection): a
/// channel of their own, so that candidates can never crowd a kill out. Sized by the agent
/// at load (the size here is a placeholder).
#[map(name = "OOM_KILLS")]
pub(super) static OOM_KILLS: RingBuf = RingBuf::with_byte_size(1 << 12, 0);

/// The candidate records, sized by the agent at load from the host's task count.
#[map(name = "OOM_CANDIDATES")]
pub(super) static OOM_CANDIDATES: RingBuf = RingBuf::with_byte_size(1 << 12, 0);

#[map(name = "OOM_ACTIVE")]
pub(super) static OOM_ACTIVE: HashMap<u32, Active> = HashMap::with_max_entries(1024, 0);

/// oom_badness() arguments between kprobe and kretprobe: (task, totalpages).
#[map(name = "OOM_BADNESS_ARGS")]
pub(super) static OOM_BADNESS_ARGS: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(1024, 0);

#[map(name = "OOM_LAST")]
pub(super) static OOM_LAST: LruHashMap<u32, Last> = LruHashMap::with_max_entries(1024, 0);

/// Allocation retries per task (oom:reclaim_retry_zone, oom:compact_retry).
#[map(name = "OOM_RETRY")]
pub(super) static OOM_RETRY: LruHashMap<u32, OomRetry> = LruHashMap::with_max_entries(4096, 0);

/// Victim pid -> decision, to report its exit and the reaper.
#[map(name = "OOM_VICTIMS")]
pub(super) static OOM_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// One chunk of kernel stack for the oom_control scan.
#[map(name = "OOM_SCRATCH")]
pub(super) static OOM_SCRATCH: PerCpuArray<[u64; SCAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// What the kill record says about the decision; filled before the record is sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Decision {
    pub(super) decision: u64,
    pub(super) oc: u64,
    pub(super) dflags: u32,
    pub(super) method: u32,
    pub(super) emitted: u32,
    pub(super) dropped: u32,
    pub(super) visited: u32,
    /// Walk only: processes of the domain past `max_walk`, counted without a record.
    pub(super) unwalked: u32,
    /// Without an oom_control: the inferred OOM memcg (0: global) and domain size.
    pub(super) inferred_memcg: u64,
    pub(super) inferred_totalpages: u64,
    /// The OOM memcg's page counter, read as early as possible (the victim's memory
    /// starts going as soon as it has its SIGKILL); `memcg_read` 1 when read.
    pub(super) memcg_usage: u64,
    pub(super) memcg_max: u64,
    pub(super) memcg_read: u64,
}

/// One mark_victim in progress: per-CPU scratch (OOM kills are serialised by the
/// kernel's oom_lock, and the record is too big for the BPF stack).
#[repr(C)]
pub(super) struct Mark {
    pub(super) ev: OomKillEvent,
    pub(super) d: Decision,
    /// The victim's task_struct, 0 for the pid-only tracepoint.
    pub(super) task: u64,
    pub(super) t: u64,
    pub(super) tid: u32,
    pub(super) pid_only: u32,
    pub(super) work: u32,
    pub(super) _pad: u32,
}

#[map(name = "OOM_MARK")]
pub(super) static OOM_MARK: PerCpuArray<Mark> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(super) fn mark() -> Option<&'static mut Mark> {
    // SAFETY: this CPU's scratch; one mark_victim at a time (oom_lock).
    OOM_MARK.get_ptr_mut(0).map(|m| unsafe { &mut *m })
}
