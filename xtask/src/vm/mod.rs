//! `cargo xtask vm-test`: boots Debian's cloud kernels (the 6.1 and 6.12 series) in qemu
//! and runs memtrace's integration tests inside them as root, where global OOM and global
//! reclaim are safe to cause.
//!
//! - Kernels: the versioned package behind `linux-image-cloud-amd64` of the series' Debian
//!   release, resolved and downloaded by apt-get under a private configuration (its own
//!   sources, lists and cache; the host's apt state is never touched), unpacked with
//!   `dpkg-deb -x`. Cached in target/vm-cache: a second run uses no network unless
//!   `--refresh-kernels` asks for it.
//! - Guest binaries: static (musl) memtrace with its embedded BPF object, mt-stress, and
//!   every test executable of memtrace-tests (from cargo's `--message-format=json`).
//! - Initramfs: busybox-static with its applet links, the binaries, and an /init that
//!   mounts what memtrace needs, runs `memtrace doctor` and every test binary with
//!   `--include-ignored --skip host_only --test-threads=1` (tests named host_only need the
//!   host), prints `init: success|failure`, powers off.
//! - Boot: qemu with TCG (KVM guests hang on this machine kind). Two serial ports: the
//!   kernel's console on ttyS0 (qemu's stdout, watched for panics), and init's and the
//!   tests' output on ttyS1 (a file qemu writes, followed as it grows), so no kernel message
//!   can land inside a test's result line. Both stream to the terminal and to
//!   target/vm-logs/<series>.log; qemu is killed on timeout or kernel panic.
//! - Verdict: every kernel runs before anything fails; a summary table lists each test
//!   case per kernel, and the command fails if a kernel failed, timed out, panicked or ran
//!   no tests.

use std::{
    fmt, fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use self::{console::Console, qemu::End};
use crate::{setup::MUSL, util::workspace_root};

mod console;
mod initramfs;
mod kernels;
mod qemu;

/// How long qemu may take to power off after init printed its verdict.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

#[derive(Args, Debug, PartialEq, Eq)]
pub struct Options {
    /// Kernel series to boot (repeat or separate with commas). Default: all of them.
    #[arg(
        long = "kernel",
        value_name = "SERIES",
        value_enum,
        num_args = 1..,
        value_delimiter = ','
    )]
    pub kernels: Vec<Series>,
    /// Seconds one kernel may run (boot, tests, power off) before qemu is killed: a hang
    /// guard, 2.5 times what one kernel takes on a quiet two-core host (about 10 minutes).
    #[arg(long, value_name = "SECS", default_value_t = 1500)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: u32,
    /// Ask apt for the current kernel packages even when a kernel is cached.
    #[arg(long)]
    pub refresh_kernels: bool,
    /// Only these test binaries (by name, e.g. `slab` for tests/tests/slab; repeat or
    /// separate with commas). Default: all of them.
    #[arg(long = "test", value_name = "BINARY", value_delimiter = ',')]
    pub tests: Vec<String>,
    /// Where kernels and private apt state are kept. Default: target/vm-cache.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Boot the kernels side by side instead of one after the other.
    #[arg(long)]
    pub parallel: bool,
}

impl Default for Options {
    /// The same as `cargo xtask vm-test` with no arguments.
    fn default() -> Self {
        Options {
            kernels: Vec::new(),
            timeout: 1500,
            memory: 1024,
            refresh_kernels: false,
            tests: Vec::new(),
            cache_dir: None,
            parallel: false,
        }
    }
}

impl Options {
    /// The selected series, each once, in the order given; all of them by default.
    fn series(&self) -> Vec<Series> {
        let mut v: Vec<Series> = Vec::new();
        for s in if self.kernels.is_empty() {
            &Series::ALL[..]
        } else {
            &self.kernels
        } {
            if !v.contains(s) {
                v.push(*s);
            }
        }
        v
    }
}

/// A kernel series and the Debian release whose cloud kernel meta package points at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    /// bookworm (+ updates, security)
    #[value(name = "6.1")]
    V6_1,
    /// trixie (+ updates, security)
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    fn release(self) -> &'static str {
        match self {
            Series::V6_1 => "bookworm",
            Series::V6_12 => "trixie",
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub fn run(opts: Options) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let target = root.join("target");
    let cache = opts
        .cache_dir
        .clone()
        .unwrap_or_else(|| target.join("vm-cache"));
    let series = opts.series();

    eprintln!("== vm-test: building static guest binaries ({MUSL})");
    let mut guest = initramfs::build_guest(&root)?;
    guest.keep_tests(&opts.tests)?;
    let initrd = initramfs::initramfs(&target.join("vm"), &guest)?;
    let logs = target.join("vm-logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    // Kernels are fetched one after the other (apt), then booted one after the other, or
    // side by side with --parallel (about 40% faster on two cores, but each guest then gets
    // half the host: timing-bound cases have failed that way).
    let kernels: Vec<_> =
        series.iter().map(|&s| (s, kernels::kernel(s, &cache, opts.refresh_kernels))).collect();
    let boot = |(s, k): (Series, Result<kernels::Kernel>)| {
        k.and_then(|k| qemu::boot(&k, &initrd, &opts, &logs))
            .unwrap_or_else(|e| KernelRun::error(s, e))
    };
    let runs: Vec<KernelRun> = if !opts.parallel {
        kernels.into_iter().map(boot).collect()
    } else {
        std::thread::scope(|scope| {
            let started: Vec<_> = kernels.into_iter().map(|sk| scope.spawn(|| boot(sk))).collect();
            started.into_iter().map(|h| h.join().expect("a vm-test thread panicked")).collect()
        })
    };
    print_summary(&runs);
    eprintln!("vm-test: {:.1} s in all", started.elapsed().as_secs_f64());
    // A plain closing count over every kernel (a test without a result line counts as
    // failed), so CI's reader sees how many guest tests ran.
    let results = runs.iter().flat_map(|r| &r.console.results);
    let passed = results.clone().filter(|(_, res)| res == "ok").count();
    let failed = results
        .filter(|(_, res)| res != "ok" && !console::is_not_run(res))
        .count()
        + runs.iter().filter(|r| r.console.pending.is_some()).count();
    let skipped: usize = runs.iter().map(|r| r.console.skipped()).sum();
    println!("vm-test: {passed} passed, {failed} failed, {skipped} skipped (host only)");
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r.problem().is_some())
        .map(|r| r.series.name())
        .collect();
    if !failed.is_empty() {
        bail!("vm-test failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

/// One kernel's result.
struct KernelRun {
    series: Series,
    kernel: String,
    console: Console,
    end: Option<End>,
    /// Something failed before or around qemu (resolving the kernel, spawning qemu).
    error: Option<String>,
    boot: Option<Duration>,
    total: Duration,
    log: Option<PathBuf>,
}

impl KernelRun {
    fn error(series: Series, e: anyhow::Error) -> KernelRun {
        eprintln!("vm-test: [{series}] {e:#}");
        KernelRun {
            series,
            kernel: String::new(),
            console: Console::default(),
            end: None,
            error: Some(format!("{e:#}")),
            boot: None,
            total: Duration::ZERO,
            log: None,
        }
    }

    /// Why this kernel counts as failed, or None when it passed.
    fn problem(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        match self.end {
            Some(End::TimedOut) => return Some("timed out".into()),
            Some(End::Panicked) => return Some("kernel panic".into()),
            _ => {}
        }
        let qemu = match &self.end {
            Some(End::Exited(Some(code))) => format!("qemu exited with {code}"),
            _ => "qemu ended".to_string(),
        };
        match self.console.verdict {
            None if self.console.started.is_none() => Some(format!("{qemu} before init ran")),
            None => Some(format!("{qemu} without an `init: success|failure` line")),
            Some(false) => Some("init: failure".into()),
            Some(true) if self.console.executed() == 0 => Some("no tests ran".into()),
            Some(true) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Summary

fn print_summary(runs: &[KernelRun]) {
    println!();
    println!("== vm-test summary");
    let width = runs
        .iter()
        .flat_map(|r| r.console.results.iter().map(|(n, _)| n.len()))
        .max()
        .unwrap_or(0)
        .max(24);
    println!("{:<7} {:<width$}  result", "kernel", "test");
    for r in runs {
        for (name, result) in &r.console.results {
            println!("{:<7} {:<width$}  {result}", r.series.name(), name);
        }
        if let Some(p) = &r.console.pending {
            println!("{:<7} {:<width$}  no result", r.series.name(), p);
        }
    }
    println!();
    for r in runs {
        let verdict = r
            .problem()
            .map_or_else(|| "PASSED".to_string(), |p| format!("FAILED: {p}"));
        let passed = r
            .console
            .results
            .iter()
            .filter(|(_, res)| res == "ok")
            .count();
        println!(
            "kernel {:<5} {}  {}/{} ok, {} skipped (host only), userspace after {}, total {:.1} s{}  {}",
            r.series.name(),
            if r.kernel.is_empty() {
                "(no kernel)"
            } else {
                &r.kernel
            },
            passed,
            r.console.results.len() - r.console.skipped(),
            r.console.skipped(),
            r.boot
                .map_or("-".into(), |b| format!("{:.1} s", b.as_secs_f64())),
            r.total.as_secs_f64(),
            r.log
                .as_ref()
                .map_or(String::new(), |l| format!(", log {}", l.display())),
            verdict
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("vm-test").chain(args.iter().copied())).map(|c| c.opts)
    }

    #[test]
    fn default_matches_no_arguments() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
    }

    #[test]
    fn kernel_selection() {
        assert_eq!(parse(&["--kernel", "6.1"]).unwrap().kernels, [Series::V6_1]);
        assert_eq!(
            parse(&["--kernel", "6.12", "6.1"]).unwrap().kernels,
            [Series::V6_12, Series::V6_1]
        );
        assert_eq!(
            parse(&["--kernel", "6.1,6.12"]).unwrap().kernels,
            [Series::V6_1, Series::V6_12]
        );
        assert_eq!(
            parse(&["--kernel", "6.12,6.12"]).unwrap().series(),
            [Series::V6_12]
        );
        assert_eq!(parse(&[]).unwrap().series(), Series::ALL);
        assert!(parse(&["--kernel", "5.15"]).is_err());
        assert!(parse(&["--timeout", "soon"]).is_err());
    }
}
