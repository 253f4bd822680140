//! Reclaim family: how long tasks stall in direct reclaim, memcg reclaim, node reclaim,
//! soft-limit reclaim, direct compaction, reclaim throttling and memory.high enforcement.
//!
//! Begin hooks store a per-thread timestamp (bounded hash `RECLAIM_START`); end hooks take
//! the duration and add it to a per-CPU log-linear histogram keyed by (kind, tgid, memory
//! cgroup id), so a reclaim storm costs a map update per stall and nothing on the ring
//! buffer. Stalls at or above `min_latency_ns` are also streamed with full context.
//!
//! The histograms are double-buffered: the agent flips `RECLAIM_SWITCH`, waits until
//! every CPU's `RECLAIM_INFLIGHT` count (programs between reading the index and finishing
//! their update) has been seen at zero, then reads and empties the map no longer written. Every program is a
//! thin wrapper around shared `try_*`/helper functions; failures are counted in `STATS`.
//!
//! Files: hooks.rs (the programs, tp_btf / raw_tp / classic per tracepoint), model.rs (the
//! bodies), maps.rs, config.rs.

mod config;
mod hooks;
mod maps;
mod model;
