//! OOM family: kills read at `oom:mark_victim`, the decision behind each (the OOM domain's
//! `oom_control`, every candidate's score), the reaper and the retries before the OOM.

mod config;
mod maps;
mod records;

pub use config::*;
pub use maps::*;
pub use records::*;
