//! Command line: parsing (clap) and validation into a run configuration.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{cgroup, error::Error, system::DEFAULT_BTF};

const EXAMPLES: &str = "\
EXAMPLES:
    memtrace watch                      # every family, text, until Ctrl-C
    memtrace oom --json | jq .          # one JSON object per OOM kill
    memtrace oom -c /system.slice       # kills in or under a memory cgroup
    memtrace reclaim 1                  # reclaim stalls: a table every second
    memtrace reclaim -H -m 5 3          # 3 x 5 s, distributions in ms
    memtrace reclaim --min-latency 10ms -c /system.slice --json
    memtrace slab                       # top caches by net growth, with who grows them
    memtrace slab --cache dentry --live # dentry growth per caller, frees matched to allocs
    memtrace watch --duration 60 --json > trace.jsonl
    memtrace shmem 10                   # shmem/tmpfs: live bytes per mount, file, writer
    memtrace shmem --json --interval 5 --top 50 | jq 'select(.type == \"shmem_mount\")'
    memtrace doctor                     # which hooks this kernel offers, and the gaps";

#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    about = "Trace where Linux memory goes: OOM kills, reclaim stalls, slab and shmem growth",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// More logs on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Kernel BTF to resolve struct layouts from.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF, global = true)]
    pub btf: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace every family this kernel supports.
    Watch(TraceArgs),
    /// OOM kills and the decision behind each: constraint and domain, the trigger, the
    /// victim's score breakdown, every candidate's score, the reaper, and plain notes.
    Oom(OomArgs),
    /// Reclaim stalls: how long tasks wait in direct, memcg and node reclaim, reclaim
    /// throttling, direct compaction and memory.high, per process and cgroup (HDR
    /// percentiles), with slow stalls listed and vmstat / PSI / watermark context.
    Reclaim(ReclaimArgs),
    /// Shmem and tmpfs: live bytes per mount and per file (tmpfs, /dev/shm, memfd, SysV shm,
    /// shared anonymous memory), who allocated them (even if gone), and how /proc/meminfo
    /// Shmem and `df` reconcile with that. Reports every INTERVAL seconds and at the end.
    Shmem(ShmemArgs),
    /// Slab growth: per cache allocations, frees and net growth, with the kernel call
    /// sites, processes and cgroups that grow them (dentry: negative dentries and directories).
    Slab(crate::slab::SlabArgs),
    /// Report the kernel, BTF, tracefs, privileges, memory cgroups, and for every hook the
    /// chosen strategy or the gap and why.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
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
}

#[derive(Debug, Args)]
pub struct OomArgs {
    #[command(flatten)]
    pub trace: TraceArgs,

    /// Text mode: list every candidate of each OOM decision (default: the top 10).
    #[arg(long)]
    pub all_candidates: bool,
}

#[derive(Debug, Args)]
pub struct ReclaimArgs {
    #[command(flatten)]
    pub common: TraceArgs,

    /// Print a summary every INTERVAL seconds (else only at the end).
    #[arg(value_name = "INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Stop after COUNT intervals.
    #[arg(value_name = "COUNT", value_parser = parse_count)]
    pub count: Option<u64>,

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

impl ReclaimArgs {
    pub fn validate(&self) -> Result<(TraceConfig, crate::reclaim::Options), Error> {
        if self.count.is_some() && self.interval.is_none() {
            return Err(Error::Usage("COUNT needs an INTERVAL".into()));
        }
        let opts = crate::reclaim::Options {
            histogram: self.histogram,
            ms: self.milliseconds,
            min_latency: self.min_latency,
            top: self.top as usize,
            interval: self.interval,
            count: self.count,
        };
        Ok((self.common.validate()?, opts))
    }
}

#[derive(Debug, Args)]
pub struct ShmemArgs {
    #[command(flatten)]
    pub trace: TraceArgs,

    /// Report every INTERVAL seconds (same as --interval).
    #[arg(value_name = "INTERVAL", value_parser = parse_duration)]
    pub interval_pos: Option<Duration>,

    /// Stop after COUNT reports.
    #[arg(value_name = "COUNT", value_parser = parse_count)]
    pub count: Option<u64>,

    /// Report every SECS seconds (without it: one report at the end).
    #[arg(long = "interval", value_name = "SECS", value_parser = parse_duration,
          conflicts_with = "interval_pos")]
    pub interval: Option<Duration>,

    /// Files and writers reported per mount (largest first).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = parse_top)]
    pub top: usize,
}

impl ShmemArgs {
    /// The report interval, from the positional INTERVAL or --interval.
    pub fn every(&self) -> Option<Duration> {
        self.interval_pos.or(self.interval)
    }

    pub fn validate_shmem(&self) -> Result<(), Error> {
        if self.count.is_some() && self.every().is_none() {
            return Err(Error::Usage("COUNT needs an INTERVAL".into()));
        }
        Ok(())
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive count")),
    }
}

fn parse_top(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("`{s}`: --top takes a number from 1 to 100000")),
    }
}

/// "1ms", "500us", "250ns", "0.5s", or a bare number of milliseconds.
fn parse_latency(s: &str) -> Result<Duration, String> {
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

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}`: the duration must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<i64>() {
        Ok(p) if p > 0 && p <= i64::from(i32::MAX) => Ok(p as u32),
        Ok(_) => Err(format!("`{s}` is not a valid PID (must be a positive integer)")),
        Err(_) => Err(format!("`{s}` is not a PID")),
    }
}

/// Validated filters and output choices for a tracing run.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    pub json: bool,
    pub duration: Option<Duration>,
    pub pid: Option<u32>,
    /// Memory cgroup path relative to its hierarchy ("/a/b").
    pub cgroup: Option<String>,
}

impl TraceArgs {
    pub fn validate(&self) -> Result<TraceConfig, Error> {
        if let Some(pid) = self.pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::Usage(format!("--pid {pid}: no such process")));
            }
        }
        let cgroup = match &self.cgroup {
            Some(c) => Some(cgroup::normalize(c)?),
            None => None,
        };
        Ok(TraceConfig { json: self.json, duration: self.duration, pid: self.pid, cgroup })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("memtrace").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn accepts_common_options() {
        let cli = parse(&["oom", "--json", "--duration", "1.5", "-p", "1", "-c", "/"]).unwrap();
        let Command::Oom(o) = cli.command else { panic!("not oom") };
        assert!(!o.all_candidates);
        let a = o.trace;
        assert!(a.json);
        assert_eq!(a.duration, Some(Duration::from_millis(1500)));
        assert_eq!(a.pid, Some(1));
        assert_eq!(a.cgroup.as_deref(), Some("/"));
        assert!(parse(&["-v", "doctor", "--json"]).is_ok());
        let Command::Oom(o) = parse(&["oom", "--all-candidates"]).unwrap().command else {
            panic!("not oom")
        };
        assert!(o.all_candidates);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["oom", "--duration", "0"][..],
            &["oom", "--duration", "-3"],
            &["oom", "--duration", "soon"],
            &["oom", "--duration", "NaN"],
            &["oom", "-p", "0"],
            &["oom", "-p", "-1"],
            &["oom", "-p", "abc"],
            &["oom", "-p", "99999999999"],
            &["oom", "--bogus"],
            &["frobnicate"],
            &[],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} accepted"));
            assert_ne!(err.exit_code(), 0, "{bad:?}");
        }
    }

    #[test]
    fn reclaim_arguments() {
        let cli = parse(&["reclaim", "2.5", "3", "-H", "-m", "--min-latency", "500us", "--json"]).unwrap();
        let Command::Reclaim(a) = cli.command else { panic!("not reclaim") };
        assert_eq!(a.interval, Some(Duration::from_millis(2500)));
        assert_eq!(a.count, Some(3));
        assert!(a.histogram && a.milliseconds && a.common.json);
        assert_eq!(a.min_latency, Duration::from_micros(500));
        let (_, o) = a.validate().unwrap();
        assert_eq!(o.interval, Some(Duration::from_millis(2500)));
        let Command::Reclaim(d) = parse(&["reclaim"]).unwrap().command else { panic!() };
        assert_eq!(d.min_latency, Duration::from_millis(1));
        assert_eq!(d.interval, None);
        for (arg, want) in [("2", 2_000_000), ("0", 0), ("250ns", 250), ("0.5s", 500_000_000), ("1.5ms", 1_500_000)] {
            assert_eq!(parse_latency(arg).unwrap().as_nanos(), want, "{arg}");
        }
        for bad in [
            &["reclaim", "0"][..],
            &["reclaim", "-1"],
            &["reclaim", "1", "0"],
            &["reclaim", "1", "x"],
            &["reclaim", "1", "2", "3"],
            &["reclaim", "--min-latency", "fast"],
            &["reclaim", "--min-latency", "-1ms"],
            &["reclaim", "--min-latency", "2h"],
            &["reclaim", "--top", "0"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} accepted"));
            assert_ne!(err.exit_code(), 0, "{bad:?}");
        }
    }

    #[test]
    fn shmem_interval_and_count() {
        let cli = parse(&["shmem", "2", "3", "--json", "--top", "5"]).unwrap();
        let Command::Shmem(a) = cli.command else { panic!("not shmem") };
        assert_eq!(a.every(), Some(Duration::from_secs(2)));
        assert_eq!(a.count, Some(3));
        assert_eq!(a.top, 5);
        assert!(a.trace.json);
        let cli = parse(&["shmem", "--interval", "0.5"]).unwrap();
        let Command::Shmem(a) = cli.command else { panic!("not shmem") };
        assert_eq!(a.every(), Some(Duration::from_millis(500)));
        assert!(a.validate_shmem().is_ok());
        let cli = parse(&["shmem"]).unwrap();
        let Command::Shmem(a) = cli.command else { panic!("not shmem") };
        assert_eq!(a.every(), None);
        for bad in [
            &["shmem", "0"][..],
            &["shmem", "x"],
            &["shmem", "1", "0"],
            &["shmem", "1", "-2"],
            &["shmem", "1", "--interval", "2"],
            &["shmem", "--top", "0"],
            &["shmem", "--top", "many"],
            &["shmem", "1", "2", "3"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} accepted"));
            assert_ne!(err.exit_code(), 0, "{bad:?}");
        }
    }

    #[test]
    fn validation_rejects_missing_pid() {
        let a = TraceArgs { json: false, duration: None, pid: Some(i32::MAX as u32), cgroup: None };
        let e = a.validate().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("no such process"), "{e}");
    }
}
