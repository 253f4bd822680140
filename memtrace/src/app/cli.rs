//! Command line: the commands, each the shared tracing arguments plus its family's own.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{dump::DumpArgs, outputs::OutputArgs, replay::ReplayArgs};
use crate::{
    engine::args::{IntervalArgs, TraceArgs},
    kernel::DEFAULT_BTF,
    oom, reclaim, shmem, slab,
};

const EXAMPLES: &str = "\
EXAMPLES:
    memtrace watch                      # every family, text, a summary every 5 s
    memtrace watch 10 6 --json          # every family, 6 x 10 s, JSON lines
    memtrace oom --json | jq .          # one JSON object per OOM kill
    memtrace oom -c /system.slice       # kills in or under a memory cgroup
    memtrace reclaim 1                  # reclaim stalls: a table every second
    memtrace reclaim -H -m 5 3          # 3 x 5 s, distributions in ms
    memtrace reclaim --min-latency 10ms -c /system.slice --json
    memtrace slab                       # top caches by net growth, with who grows them
    memtrace slab --cache dentry --live 2  # dentry growth per caller every 2 s, frees matched
    memtrace watch --duration 60 --json > trace.jsonl
    memtrace shmem 10                   # shmem/tmpfs: live bytes per mount, file, writer
    memtrace shmem 5 --json --top 50 | jq 'select(.type == \"shmem_mount\")'
    memtrace doctor                     # which hooks this kernel offers, and the gaps
    memtrace watch --quiet --metrics 127.0.0.1:9435 --record /var/lib/memtrace   # always on
    memtrace replay /var/lib/memtrace oom --from 2026-11-22T02:00:00Z   # the OOM kills since 02:00
    memtrace replay /var/lib/memtrace --from -1h --json | jq .   # the last hour's records
    memtrace dump /var/lib/memtrace --format openmetrics > m.om   # for promtool tsdb create-blocks-from";

#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    long_version = super::generate::LONG_VERSION,
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
    /// Trace every family this kernel supports; summaries every INTERVAL seconds (default 5).
    Watch(WatchCmd),
    /// OOM kills and the decision behind each: constraint and domain, the trigger, the
    /// victim's score breakdown, every candidate's score, the reaper, and plain notes.
    Oom(OomCmd),
    /// Reclaim stalls: how long tasks wait in direct, memcg and node reclaim, reclaim
    /// throttling, direct compaction and memory.high, per process and cgroup (HDR
    /// percentiles), with slow stalls listed and vmstat / PSI / watermark context.
    Reclaim(ReclaimCmd),
    /// Shmem and tmpfs: live bytes per mount and per file (tmpfs, /dev/shm, memfd, SysV shm,
    /// shared anonymous memory), who allocated them (even if gone), and how /proc/meminfo
    /// Shmem and `df` reconcile with that. Reports every INTERVAL seconds and at the end.
    Shmem(ShmemCmd),
    /// Slab growth: per cache allocations, frees and net growth, with the kernel call
    /// sites, processes and cgroups that grow them (dentry: negative dentries and
    /// directories). Every INTERVAL seconds (default 5) and at the end.
    Slab(SlabCmd),
    /// Report the kernel, BTF, tracefs, privileges, memory cgroups, and for every hook the
    /// chosen strategy or the gap and why.
    Doctor(DoctorArgs),
    /// Print the text views (or, with --json, the records) of a recording (--record DIR) or
    /// a file of JSON records (--json-file, --json), as the live run printed them.
    Replay(ReplayArgs),
    /// A recording as data: its records as JSON lines, or its metrics over time as
    /// OpenMetrics text with timestamps (for `promtool tsdb create-blocks-from openmetrics`).
    Dump(DumpArgs),
    /// Man pages and shell completions from this command line (for packaging).
    #[command(hide = true)]
    Generate(super::generate::GenerateArgs),
}

impl Command {
    /// A tracing command's output options and its interval arguments (None: not tracing).
    pub fn tracing(&self) -> Option<(&TraceArgs, &OutputArgs, Option<&IntervalArgs>)> {
        match self {
            Command::Watch(c) => Some((&c.trace, &c.out, Some(&c.interval))),
            Command::Oom(c) => Some((&c.trace, &c.out, None)),
            Command::Reclaim(c) => Some((&c.trace, &c.out, Some(&c.interval))),
            Command::Shmem(c) => Some((&c.trace, &c.out, Some(&c.interval))),
            Command::Slab(c) => Some((&c.trace, &c.out, Some(&c.interval))),
            Command::Doctor(_) | Command::Replay(_) | Command::Dump(_) | Command::Generate(_) => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct WatchCmd {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub interval: IntervalArgs,
}

#[derive(Debug, Args)]
pub struct OomCmd {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub args: oom::Args,
}

#[derive(Debug, Args)]
pub struct ReclaimCmd {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub interval: IntervalArgs,
    #[command(flatten)]
    pub args: reclaim::Args,
}

#[derive(Debug, Args)]
pub struct ShmemCmd {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub interval: IntervalArgs,
    #[command(flatten)]
    pub args: shmem::Args,
}

#[derive(Debug, Args)]
pub struct SlabCmd {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub interval: IntervalArgs,
    #[command(flatten)]
    pub args: slab::Args,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    pub fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
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
        let a = o.trace;
        assert!(a.json);
        assert_eq!(a.duration, Some(Duration::from_millis(1500)));
        assert_eq!(a.pid, Some(1));
        assert_eq!(a.cgroup.as_deref(), Some("/"));
        assert!(parse(&["-v", "doctor", "--json"]).is_ok());
    }

    #[test]
    fn every_tracing_command_takes_interval_and_count() {
        for cmd in ["watch", "reclaim", "slab", "shmem"] {
            let cli = parse(&[cmd, "2.5", "3", "--json"]).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            let (interval, trace) = match cli.command {
                Command::Watch(c) => (c.interval, c.trace),
                Command::Reclaim(c) => (c.interval, c.trace),
                Command::Slab(c) => (c.interval, c.trace),
                Command::Shmem(c) => (c.interval, c.trace),
                _ => panic!("{cmd}"),
            };
            assert_eq!(interval.interval, Some(Duration::from_millis(2500)), "{cmd}");
            assert_eq!(interval.count, Some(3), "{cmd}");
            assert!(trace.json);
            for bad in [&[cmd, "0"][..], &[cmd, "-1"], &[cmd, "1", "0"], &[cmd, "1", "x"], &[cmd, "1", "2", "3"]] {
                assert!(parse(bad).is_err(), "{bad:?} accepted");
            }
        }
        assert!(parse(&["oom", "5"]).is_err(), "oom has no interval");
    }

    #[test]
    fn always_on_options() {
        let cli = parse(&["watch", "--quiet", "--metrics", "127.0.0.1:9435", "--record", "/var/lib/memtrace"]).unwrap();
        let (trace, out, _) = cli.command.tracing().unwrap();
        assert!(out.quiet && !trace.json);
        assert_eq!(out.metrics.as_deref(), Some("127.0.0.1:9435"));
        assert_eq!(out.record.as_deref(), Some(std::path::Path::new("/var/lib/memtrace")));
        assert_eq!((out.retain, out.max_size, out.metrics_top), (Duration::from_secs(7 * 86_400), 1 << 30, 50));
        assert_eq!(out.default_interval(), Some(Duration::from_secs(5)));
        for cmd in ["oom", "reclaim", "slab", "shmem"] {
            let cli = parse(&[cmd, "--record", "/r", "--retain", "12h", "--max-size", "200M"]).unwrap();
            let (_, out, _) = cli.command.tracing().unwrap();
            assert_eq!((out.retain, out.max_size), (Duration::from_secs(12 * 3600), 200 << 20), "{cmd}");
        }
        let (trace, out, _) = parse(&["oom"]).unwrap().command.tracing().map(|(t, o, i)| (t.clone(), o.clone(), i.is_some())).unwrap();
        assert!(!trace.json && out.default_interval().is_none());
        let Command::Replay(r) = parse(&["replay", "/r", "oom", "--from", "-2h", "--to", "2026-11-22T02:00:00Z", "--json"]).unwrap().command
        else {
            panic!("not replay")
        };
        assert_eq!((r.view.as_deref(), r.json), (Some("oom"), true));
        assert!(r.sel.from.is_some() && r.sel.to == Some(1_795_312_800_000_000_000));
        assert!(matches!(parse(&["dump", "/r", "--format", "openmetrics"]).unwrap().command, Command::Dump(_)));
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
            &["watch", "--quiet", "--json"],
            &["watch", "--retain", "7y"],
            &["watch", "--max-size", "10"],
            &["watch", "--metrics-top", "0"],
            &["replay", "/r", "everything"],
            &["replay", "/r", "--from", "yesterday"],
            &["dump", "/r"],
            &["dump", "/r", "--format", "csv"],
            &["frobnicate"],
            &[],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} accepted"));
            assert_ne!(err.exit_code(), 0, "{bad:?}");
        }
    }
}
