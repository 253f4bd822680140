//! `memtrace reclaim` arguments beyond the shared ones, validated into [`Options`].

use std::time::Duration;

use crate::error::Error;

#[derive(Debug, clap::Args, Clone)]
pub struct Args {
    /// Show the latency distribution of each kind as log2 bars.
    #[arg(short = 'H', long)]
    pub histogram: bool,

    /// Milliseconds instead of microseconds in text output.
    #[arg(short = 'm', long)]
    pub milliseconds: bool,

    /// List every stall at least this long (e.g. 500us, 1ms, 0.2s; a bare number is ms;
    /// 0 lists all).
    #[arg(long, value_name = "TIME", default_value = "1ms", value_parser = parse_latency)]
    pub min_latency: Duration,

    /// Rows per table in text output.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub top: u32,
}

/// Validated options of the reclaim family.
#[derive(Debug, Clone)]
pub struct Options {
    /// -H: log2 bars per kind.
    pub histogram: bool,
    /// -m: milliseconds instead of microseconds in text.
    pub ms: bool,
    /// Stream stalls at least this long.
    pub min_latency: Duration,
    /// Rows per table in text mode.
    pub top: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            histogram: false,
            ms: false,
            min_latency: Duration::from_millis(1),
            top: 10,
        }
    }
}

impl Args {
    pub fn validate(&self) -> Result<Options, Error> {
        Ok(Options {
            histogram: self.histogram,
            ms: self.milliseconds,
            min_latency: self.min_latency,
            top: self.top as usize,
        })
    }
}

/// "1ms", "500us", "250ns", "0.5s", or a bare number of milliseconds.
pub fn parse_latency(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(suf, sc)| t.strip_suffix(suf).map(|n| (n, *sc)))
        .unwrap_or((t, 1e-3));
    let v: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a time (e.g. 1ms, 500us)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 3600.0 {
        return Err(format!("`{s}`: the latency must be between 0 and 1 hour"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latencies() {
        for (arg, want) in [("2", 2_000_000), ("0", 0), ("250ns", 250), ("0.5s", 500_000_000), ("1.5ms", 1_500_000)] {
            assert_eq!(parse_latency(arg).unwrap().as_nanos(), want, "{arg}");
        }
        for bad in ["fast", "-1ms", "2h"] {
            assert!(parse_latency(bad).is_err(), "{bad}");
        }
    }
}
