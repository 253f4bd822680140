//! `cargo xtask bench slab`: what tracing slab allocations costs the traced workload.
//!
//! The workload is a loop of stat() on a path that does not exist: each call allocates and
//! frees one names_cache object (getname/putname), and nothing else once the negative dentry
//! is cached. The loop runs, in every round, without tracing, under `memtrace slab`, under
//! `memtrace slab --cache dentry` (names_cache filtered out in the kernel) and under the
//! bpftrace one-liner `tracepoint:kmem:kmem_cache_alloc { @[str(args->name)] = count(); }`.
//! Reported: median ns per call, added ns per allocation (allocations per call counted by
//! memtrace itself), and memtrace's added cost as a fraction of bpftrace's. A separate pass
//! with kernel.bpf_stats_enabled reads the kernel-side run time per program invocation.
//! Root only (BPF). Nothing is asserted: these are measurements.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::util::{build_memtrace, workspace_root};

const BPFTRACE_PROG: &str = "tracepoint:kmem:kmem_cache_alloc { @[str(args->name)] = count(); }";

#[derive(Args)]
pub struct Options {
    /// Rounds (each runs every mode once); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// stat() calls per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub iterations: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Baseline,
    Memtrace,
    MemtraceOtherCache,
    Bpftrace,
}

impl Mode {
    const ALL: [Mode; 4] =
        [Mode::Baseline, Mode::Memtrace, Mode::MemtraceOtherCache, Mode::Bpftrace];

    fn label(self) -> &'static str {
        match self {
            Mode::Baseline => "no tracing",
            Mode::Memtrace => "memtrace slab",
            Mode::MemtraceOtherCache => "memtrace slab --cache dentry",
            Mode::Bpftrace => "bpftrace kmem_cache_alloc one-liner",
        }
    }
}

/// A tracer running in the background, stopped with SIGINT.
struct Tracer {
    child: Child,
    lines: Receiver<String>,
}

impl Tracer {
    fn start(mut cmd: Command, ready: impl Fn(&str) -> bool) -> Result<Tracer> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if ready(&l) => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    bail!("{cmd:?} did not become ready");
                }
            }
        }
        Ok(Tracer { child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT (again every few seconds: a tracer may miss one while it sets up; SIGKILL
    /// after 30 s), wait, and the remaining stdout lines.
    fn stop(mut self) -> Result<Vec<String>> {
        let pid = self.child.id().to_string();
        let started = Instant::now();
        let mut last_int: Option<Instant> = None;
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                self.child.kill()?;
            } else if last_int.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
                Command::new("kill").args(["-INT", &pid]).status()?;
                last_int = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self
            .lines
            .try_iter()
            .chain(std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_millis(500)).ok()))
            .collect())
    }
}

fn start_tracer(mode: Mode, memtrace: &Path) -> Result<Option<Tracer>> {
    let mt = |extra: &[&str]| {
        let mut c = Command::new(memtrace);
        c.args(["slab", "--json", "3600", "--top", "1000"]).args(extra);
        Tracer::start(c, |l| l.contains("\"type\":\"ready\""))
    };
    Ok(match mode {
        Mode::Baseline => None,
        Mode::Memtrace => Some(mt(&[])?),
        Mode::MemtraceOtherCache => Some(mt(&["--cache", "dentry"])?),
        Mode::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE_PROG]);
            Some(Tracer::start(c, |l| l.starts_with("Attaching"))?)
        }
    })
}

/// CPU time of this thread (user + system, where the BPF programs run), in ns.
fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// CPU ns (and wall ns) per stat() of a missing path over `n` calls. CPU time leaves out
/// the time other processes on this shared machine run instead of the loop.
fn stat_loop(path: &Path, n: u64) -> (f64, f64) {
    let (t, c) = (Instant::now(), thread_cpu_ns());
    for _ in 0..n {
        let _ = std::hint::black_box(std::fs::symlink_metadata(std::hint::black_box(path)));
    }
    let cpu = (thread_cpu_ns() - c) as f64 / n as f64;
    (cpu, t.elapsed().as_nanos() as f64 / n as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Allocations this process made while memtrace watched, from memtrace's totals.
fn own_allocs(lines: &[String]) -> u64 {
    let me = std::process::id();
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "slab_growth" && v["scope"] == "total" && v["tgid"] == me)
        .filter_map(|v| v["allocs"].as_u64())
        .sum()
}

/// Kernel-side cost per program run, from /proc/PID/fdinfo of the tracer's BPF programs
/// (kernel.bpf_stats_enabled=1): (program id, runs, ns per run).
fn prog_stats(pid: u32) -> Vec<(u64, u64, f64)> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().parse::<u64>().unwrap_or(0)))
                .unwrap_or(0)
        };
        let (id, cnt, ns) = (field("prog_id:"), field("run_cnt:"), field("run_time_ns:"));
        if cnt > 0 {
            out.push((id, cnt, ns as f64 / cnt as f64));
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.1));
    out
}

/// A BPF program's name by id (BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD; root).
fn prog_name(id: u64) -> String {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// Offset of `name` in struct bpf_prog_info (include/uapi/linux/bpf.h).
    const NAME_OFF: usize = 64;
    #[repr(C)]
    struct ById {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    #[repr(C)]
    struct InfoByFd {
        fd: u32,
        info_len: u32,
        info: u64,
    }
    let by_id = ById { id: id as u32, next_id: 0, open_flags: 0 };
    // SAFETY: bpf(2) with a correctly sized attribute; the fd is closed below.
    let fd =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, &by_id, size_of::<ById>()) };
    if fd < 0 {
        return format!("prog {id}");
    }
    let mut info = [0u8; 256];
    let attr =
        InfoByFd { fd: fd as u32, info_len: info.len() as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, size_of::<InfoByFd>())
    };
    // SAFETY: our fd.
    unsafe { libc::close(fd as i32) };
    let name = &info[NAME_OFF..NAME_OFF + 16];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    if rc < 0 || end == 0 {
        return format!("prog {id}");
    }
    String::from_utf8_lossy(&name[..end]).into_owned()
}

pub fn run(opts: Options) -> Result<()> {
    // SAFETY-free check for root: BPF needs it.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().nth(1).unwrap_or("").to_string())
            })
        })
        .unwrap_or_default();
    if uid != "0" {
        bail!("cargo xtask bench slab needs root (BPF)");
    }
    if Command::new("bpftrace").arg("--version").output().is_err() {
        bail!("bpftrace is not installed (apt-get install bpftrace): it is the comparison");
    }
    let memtrace = build_memtrace(true, None)?;
    let missing: PathBuf = workspace_root().join("target/bench-slab-missing-path");
    let _ = std::fs::remove_file(&missing);
    let n = opts.iterations;
    eprintln!(
        "bench slab: {} rounds x {} modes x {n} stat() calls of a missing path",
        opts.rounds,
        Mode::ALL.len()
    );
    // Warm up: the negative dentry, the page cache of the binaries.
    stat_loop(&missing, n / 4);

    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    let mut added: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    let mut allocs_per_call = Vec::new();
    for round in 0..opts.rounds {
        let mut round_ns = Vec::new();
        for (i, mode) in Mode::ALL.iter().enumerate() {
            let tracer = start_tracer(*mode, &memtrace)?;
            std::thread::sleep(Duration::from_millis(300));
            let (t, w) = stat_loop(&missing, n);
            if let Some(tr) = tracer {
                let lines = tr.stop()?;
                if *mode == Mode::Memtrace {
                    allocs_per_call.push(own_allocs(&lines) as f64 / n as f64);
                }
            }
            round_ns.push(t);
            ns[i].push(t);
            wall[i].push(w);
            eprintln!(
                "  round {}: {:<38} {t:8.1} CPU ns/call ({w:.1} wall)",
                round + 1,
                mode.label()
            );
        }
        // The baseline again at the end of the round: the added cost of each mode is
        // against the mean of both, so drift within a round cancels.
        let (again, _) = stat_loop(&missing, n);
        eprintln!("  round {}: {:<38} {again:8.1} CPU ns/call", round + 1, "no tracing (again)");
        let base = (round_ns[0] + again) / 2.0;
        for (i, t) in round_ns.iter().enumerate() {
            added[i].push(if i == 0 { 0.0 } else { t - base });
        }
    }

    // Kernel-side time per program run.
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    let mut kernel_side = Vec::new();
    for mode in [Mode::Memtrace, Mode::MemtraceOtherCache, Mode::Bpftrace] {
        let tr = start_tracer(mode, &memtrace)?.expect("a tracer");
        stat_loop(&missing, n / 2);
        // Names while the programs are loaded.
        let progs: Vec<_> =
            prog_stats(tr.pid()).into_iter().map(|(id, c, p)| (prog_name(id), c, p)).collect();
        tr.stop()?;
        for (name, cnt, per) in progs {
            kernel_side.push(
                json!({"mode": mode.label(), "program": name, "runs": cnt, "ns_per_run": per}),
            );
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());

    let apc = median(&mut allocs_per_call.clone());
    let med: Vec<f64> = ns.iter_mut().map(|v| median(v)).collect();
    let med_wall: Vec<f64> = wall.iter_mut().map(|v| median(v)).collect();
    let add: Vec<f64> = added.iter_mut().map(|v| median(v)).collect();
    let bt = add[3];
    println!(
        "\nslab tracing overhead: stat() of a missing path, {n} calls, median of {} rounds \
         (CPU time of the calling thread; wall time in parentheses)",
        opts.rounds
    );
    println!("allocations per call (names_cache alloc; memtrace also handles its free): {apc:.3}");
    println!(
        "{:<38} {:>10} {:>10} {:>12} {:>14} {:>12}",
        "mode", "ns/call", "(wall)", "added ns", "added ns/alloc", "vs bpftrace"
    );
    for (i, mode) in Mode::ALL.iter().enumerate() {
        let per_alloc = if apc > 0.0 { add[i] / apc } else { f64::NAN };
        let ratio = if *mode == Mode::Baseline || bt <= 0.0 {
            "-".to_string()
        } else {
            format!("{:.2}", add[i] / bt)
        };
        println!(
            "{:<38} {:>10.1} {:>10.1} {:>12.1} {:>14.1} {:>12}",
            mode.label(),
            med[i],
            med_wall[i],
            add[i],
            per_alloc,
            ratio
        );
    }
    println!("\nkernel-side time per program run (kernel.bpf_stats_enabled=1, separate pass):");
    for k in &kernel_side {
        println!(
            "  {:<38} {:<24} {:>9} runs {:>8.1} ns/run",
            k["mode"].as_str().unwrap_or(""),
            k["program"].as_str().unwrap_or(""),
            k["runs"],
            k["ns_per_run"].as_f64().unwrap_or(0.0)
        );
    }
    let target = add[1] <= bt / 2.0;
    println!(
        "\ntarget (memtrace adds at most half of what bpftrace adds): {} ({:.0} vs {:.0} ns/call)",
        if target { "met" } else { "NOT met" },
        add[1],
        bt
    );
    let report = json!({
        "iterations": n,
        "rounds": opts.rounds,
        "allocs_per_call": apc,
        "modes": Mode::ALL.iter().enumerate().map(|(i, m)| json!({
            "mode": m.label(), "cpu_ns_per_call": med[i], "wall_ns_per_call": med_wall[i],
            "added_cpu_ns_per_call": add[i], "added_cpu_ns_per_alloc": add[i] / apc.max(1e-9),
            "rounds_cpu_ns": ns[i], "rounds_wall_ns": wall[i],
        })).collect::<Vec<_>>(),
        "ratio_to_bpftrace": add[1] / bt,
        "kernel_side": kernel_side,
    });
    let out = workspace_root().join("target/bench-slab.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("written {}", out.display());
    Ok(())
}
