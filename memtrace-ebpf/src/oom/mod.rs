//! OOM family: `oom:mark_victim` read at kill time, and the decision behind each kill.
//!
//! - Exact (kernels with fentry or kprobes): out_of_memory() entry remembers the task and
//!   its `struct oom_control *`; every oom_badness() return while that task is inside
//!   out_of_memory() is a candidate record with the kernel's own score (/proc/PID/oom_score
//!   reads call oom_badness() too, from unflagged tasks, and are ignored).
//! - Tracepoints only: at oom:mark_victim the `oom_control` is found on the OOM-invoking
//!   task's kernel stack (its `chosen` member is the victim; the rest is validated), and
//!   the OOM domain's processes are walked (task list, bpf_loop) recomputing the kernel's
//!   formula for each.
//!
//! Candidates are streamed as separate records tied to the kill by a decision id, on their
//! own ring buffer (`OOM_CANDIDATES`); the kill record follows them on another
//! (`OOM_KILLS`, with the reaper and exit records), saying how many were sent, lost to a
//! full ring, and (walk) past the walk's limit; the agent assembles them. Counters: EVENTS
//! counts mark_victim hits, every record sent a SENT, every lost record a RINGBUF_DROPS,
//! every failed kernel read a READ_ERRORS, every failed map update MAP_FULL.
//!
//! Files: hooks.rs (the programs), decision.rs (the kill record and its decision), walk.rs
//! (the stack scan, the candidate walk and the candidate record), model.rs (the exact
//! strategies, the reaper and exit records, the retries), maps.rs, config.rs.

mod config;
mod decision;
mod hooks;
mod maps;
mod model;
mod walk;
