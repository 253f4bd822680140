//! `memtrace shmem` arguments beyond the shared ones, validated into [`Options`].

use crate::{engine::args::parse_top, error::Error};

#[derive(Debug, clap::Args, Clone)]
pub struct Args {
    /// Files and writers reported per mount (largest first).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse_top)]
    pub top: usize,

    /// Gone: the interval is the positional INTERVAL (`memtrace shmem 5`).
    #[arg(long = "interval", value_name = "SECS", hide = true)]
    pub old_interval: Option<String>,
}

/// Validated options of the shmem family.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files and writers reported per mount.
    pub top: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { top: 10 }
    }
}

impl Args {
    pub fn validate(&self) -> Result<Options, Error> {
        if self.old_interval.is_some() {
            return Err(Error::Usage(
                "shmem: --interval is gone; give the interval in seconds as the first \
                 positional argument: `memtrace shmem 5`"
                    .into(),
            ));
        }
        Ok(Options { top: self.top })
    }
}
