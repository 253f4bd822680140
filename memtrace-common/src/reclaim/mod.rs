//! Reclaim family: how long tasks stall in reclaim, compaction, throttling and memory.high
//! enforcement, aggregated in per-CPU log-linear histograms, the slow stalls streamed.

mod config;
mod maps;
mod records;

pub use config::*;
pub use maps::*;
pub use records::*;
