//! The per-CPU queue of NR_SHMEM runs: (task, pages) queued by the memcg hook in the
//! allocator's context, consumed in order by the LRU insertions of the same CPU.

use memtrace_common::shmem::{CpuRun, SHMEM_CPU_RUNS, SHMEM_RUN_CAP, counter};

use super::{
    maps::{SHMEM_CPU, bump},
    model::Owner,
};


/// Consumes `nr` pages from the oldest pending run of this CPU.
#[inline(always)]
pub(super) fn pop_run(nr: u32) -> Option<CpuRun> {
    let c = SHMEM_CPU.get_ptr_mut(0)?;
    // SAFETY: per-CPU value.
    let c = unsafe { &mut *c };
    let len = c.len;
    if len == 0 || len as usize > SHMEM_CPU_RUNS {
        c.len = 0;
        return None;
    }
    let i = (c.head as usize) & (SHMEM_CPU_RUNS - 1);
    let r = c.runs[i];
    if r.pages > nr {
        c.runs[i].pages = r.pages - nr;
    } else {
        c.head = ((i + 1) & (SHMEM_CPU_RUNS - 1)) as u32;
        c.len = len - 1;
    }
    Some(r)
}

/// The newest pending run of this CPU if it is the current task's (a task deleting what it
/// just wrote), else the oldest one. Not consumed. (No loop: the 6.1 verifier gives up on
/// a data-dependent one here.)
#[inline(always)]
pub(super) fn peek_run(tgid: u32) -> Option<CpuRun> {
    let c = SHMEM_CPU.get_ptr(0)?;
    // SAFETY: per-CPU value.
    let c = unsafe { &*c };
    let len = c.len as usize;
    if len == 0 || len > SHMEM_CPU_RUNS {
        return None;
    }
    let head = c.head as usize;
    let newest = &c.runs[(head + len - 1) & (SHMEM_CPU_RUNS - 1)];
    if newest.tgid == tgid {
        return Some(*newest);
    }
    Some(c.runs[head & (SHMEM_CPU_RUNS - 1)])
}

/// Adds `pages` to the newest run of this CPU if it is task `pid`'s.
#[inline(always)]
pub(super) fn extend_run(pid: u32, pages: u32) -> bool {
    let Some(c) = SHMEM_CPU.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU value.
    let c = unsafe { &mut *c };
    let len = c.len as usize;
    if len == 0 || len > SHMEM_CPU_RUNS {
        return false;
    }
    let r = &mut c.runs[(c.head as usize + len - 1) & (SHMEM_CPU_RUNS - 1)];
    if r.pid != pid {
        return false;
    }
    r.pages = r.pages.saturating_add(pages).min(SHMEM_RUN_CAP);
    true
}

/// Queues a new run of `pages` allocated by `o` on this CPU (NR_SHMEM hook). When the queue
/// is full the pages join the newest run (counted, misattributed to its task).
#[inline(always)]
pub(super) fn push_run(o: &Owner, pages: u32) {
    let Some(c) = SHMEM_CPU.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU value.
    let c = unsafe { &mut *c };
    let mut len = c.len as usize;
    if len > SHMEM_CPU_RUNS {
        len = 0;
        c.len = 0;
    }
    let head = c.head as usize;
    if len == SHMEM_CPU_RUNS {
        bump(counter::RUNS_MERGED, 1);
        let r = &mut c.runs[(head + len - 1) & (SHMEM_CPU_RUNS - 1)];
        r.pages = r.pages.saturating_add(pages).min(SHMEM_RUN_CAP);
        return;
    }
    c.runs[(head + len) & (SHMEM_CPU_RUNS - 1)] = CpuRun {
        tgid: o.tgid,
        pid: o.pid,
        pages: pages.min(SHMEM_RUN_CAP),
        _pad: 0,
        cgroup_id: o.cgroup_id,
        comm: o.comm,
    };
    c.len = (len + 1) as u32;
}
