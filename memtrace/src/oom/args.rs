//! `memtrace oom` arguments beyond the shared ones, validated into [`Options`].

use crate::error::Error;

#[derive(Debug, clap::Args, Clone, Default)]
pub struct Args {
    /// Text mode: list every candidate of each OOM decision (default: the top 10).
    #[arg(long)]
    pub all_candidates: bool,
}

/// Validated options of the oom family.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Text mode: every candidate instead of the top 10.
    pub all_candidates: bool,
}

/// Candidates shown per OOM in text mode without --all-candidates.
pub const TOP_CANDIDATES: usize = 10;

impl Args {
    pub fn validate(&self) -> Result<Options, Error> {
        Ok(Options { all_candidates: self.all_candidates })
    }
}
