//! Command-line arguments every tracing command shares, and the value parsers families
//! reuse: output and filters ([`TraceArgs`]), bcc-style `[INTERVAL] [COUNT]`
//! ([`IntervalArgs`]).

use std::time::Duration;

use clap::Args;

use super::family::Filter;
use crate::{error::Error, kernel::cgroup};

#[derive(Debug, Args, Clone, Default)]
pub struct TraceArgs {
    /// One JSON object per line on stdout, each with a "type".
    #[arg(long)]
    pub json: bool,

    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Only events of this process (by pid or tgid; for OOM kills: the victim or the trigger).
    #[arg(short = 'p', long, value_name = "PID", value_parser = parse_pid)]
    pub pid: Option<u32>,

    /// Only events in this memory cgroup or below it (path relative to the memory
    /// hierarchy, e.g. /system.slice, or the full /sys/fs/cgroup/... path).
    #[arg(short = 'c', long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Also trace memtrace's own process (its allocations, stalls and shmem writes are
    /// dropped in the kernel otherwise; OOM decisions always include it).
    #[arg(long)]
    pub include_self: bool,

    /// Also write every record as JSON lines to FILE (whatever stdout shows); `memtrace
    /// replay FILE` prints its text views again.
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<std::path::PathBuf>,
}

impl TraceArgs {
    /// The filters, checked against the running system (the process and the cgroup exist).
    pub fn filter(&self) -> Result<Filter, Error> {
        if let Some(pid) = self.pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::Usage(format!("--pid {pid}: no such process")));
            }
        }
        let cgroup = match &self.cgroup {
            Some(c) => Some(cgroup::normalize(c)?),
            None => None,
        };
        Ok(Filter { pid: self.pid, cgroup, include_self: self.include_self })
    }
}

/// bcc-style positional `[INTERVAL] [COUNT]`.
#[derive(Debug, Args, Clone, Default)]
pub struct IntervalArgs {
    /// Print summaries every INTERVAL seconds.
    #[arg(value_name = "INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Stop after COUNT intervals.
    #[arg(value_name = "COUNT", value_parser = parse_count)]
    pub count: Option<u64>,
}

impl IntervalArgs {
    /// (interval, count) with `default` when no INTERVAL is given; COUNT needs an interval.
    pub fn resolve(&self, default: Option<Duration>) -> Result<(Option<Duration>, Option<u64>), Error> {
        let interval = self.interval.or(default);
        if self.count.is_some() && interval.is_none() {
            return Err(Error::Usage("COUNT needs an INTERVAL".into()));
        }
        Ok((interval, self.count))
    }
}

/// Seconds, fractions allowed, positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}`: the duration must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<i64>() {
        Ok(p) if p > 0 && p <= i64::from(i32::MAX) => Ok(p as u32),
        Ok(_) => Err(format!("`{s}` is not a valid PID (must be a positive integer)")),
        Err(_) => Err(format!("`{s}` is not a PID")),
    }
}

pub fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive count")),
    }
}

/// A row count for text tables: 1 to 100000.
pub fn parse_top(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("`{s}`: --top takes a number from 1 to 100000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["0", "-3", "soon", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_pid("1").unwrap(), 1);
        for bad in ["0", "-1", "abc", "99999999999"] {
            assert!(parse_pid(bad).is_err(), "{bad}");
        }
        assert!(parse_count("0").is_err() && parse_count("x").is_err());
        assert_eq!(parse_top("5").unwrap(), 5);
        assert!(parse_top("0").is_err());
    }

    #[test]
    fn interval_defaults_and_count() {
        let a = IntervalArgs { interval: None, count: None };
        assert_eq!(a.resolve(None).unwrap(), (None, None));
        assert_eq!(a.resolve(Some(Duration::from_secs(5))).unwrap().0, Some(Duration::from_secs(5)));
        let c = IntervalArgs { interval: None, count: Some(3) };
        assert_eq!(c.resolve(None).unwrap_err().exit_code(), 2);
        assert!(c.resolve(Some(Duration::from_secs(1))).is_ok());
    }

    #[test]
    fn missing_pid_is_a_usage_error() {
        let a = TraceArgs { pid: Some(i32::MAX as u32), ..Default::default() };
        let e = a.filter().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("no such process"), "{e}");
    }
}
