//! `cargo xtask bench reclaim`: what tracing reclaim stalls costs under a sustained memcg
//! reclaim storm: processes that touch and MADV_FREE more memory than their cgroup's limit
//! (CPU-bound, `--workload churn`, the default) or read files larger than it
//! (`--workload read`, bound by the disk).
//!
//! - Kernel side: `kernel.bpf_stats_enabled=1`, then run_time_ns / run_cnt of each of
//!   memtrace's BPF programs (from /proc/<memtrace>/fdinfo, names from the kernel's
//!   program info), and their sum per traced stall.
//! - Agent side: memtrace's user+system CPU time (/proc/<pid>/stat) over the storm.
//! - The storm's rate (limit hits per second) without and with memtrace.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::util::{build_memtrace, exec, workspace_root};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Churn,
    Read,
}

#[derive(Args)]
pub struct Options {
    /// What presses the cgroup.
    #[arg(long, value_enum, default_value_t = Workload::Churn)]
    pub workload: Workload,
    /// Seconds of storm, per phase (without and with memtrace).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Processes in the cgroup.
    #[arg(long, default_value_t = 2)]
    pub readers: u32,
    /// Memory limit of the cgroup, MiB.
    #[arg(long, default_value_t = 64)]
    pub limit_mb: u64,
    /// Memory each process touches (churn) or file each reads (read), MiB.
    #[arg(long, default_value_t = 256)]
    pub file_mb: u64,
    /// Directory on a disk-backed filesystem for the files.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
}

/// A memory cgroup (v2 if the unified hierarchy has the memory controller, else v1).
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Result<Cgroup> {
        let (root, v2) = crate::util::memory_hierarchy()?;
        let dir = root.join(name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        std::fs::write(dir.join(file), limit.to_string())?;
        Ok(Cgroup { dir, v2 })
    }

    /// v1 memory.failcnt, v2 memory.events "max".
    fn limit_hits(&self) -> u64 {
        if self.v2 {
            std::fs::read_to_string(self.dir.join("memory.events"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
                .unwrap_or(0)
        } else {
            std::fs::read_to_string(self.dir.join("memory.failcnt"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Children killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" of comm: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// (run_time_ns, run_cnt) per BPF program id held by `pid`.
fn prog_stats(pid: u32) -> BTreeMap<u32, (u64, u64)> {
    let mut m = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return m };
    for e in rd.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        let get = |k: &str| {
            text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(ns), Some(cnt)) = (get("prog_id:"), get("run_time_ns:"), get("run_cnt:")) {
            m.insert(id as u32, (ns, cnt));
        }
    }
    m
}

fn prog_names() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect()
}

fn spawn_readers(stress: &Path, file: &Path, cg: &Cgroup, o: &Options) -> Result<Procs> {
    let mut v = Vec::new();
    for i in 0..o.readers {
        let mut c = Command::new(stress);
        match o.workload {
            Workload::Read => c
                .args(["pagecache", "--path"])
                .arg(file.with_extension(format!("{i}")))
                .args(["--read-only", "--loop", "--comm", "mt-bench-read"]),
            Workload::Churn => c.args(["lazyfree", "--churn", "--mb", &o.file_mb.to_string(), "--comm", "mt-bench-churn"]),
        };
        v.push(c.arg("--cgroup").arg(&cg.dir).stdout(Stdio::null()).spawn()?);
    }
    Ok(Procs(v))
}

/// Limit hits per second over `secs` of storm.
fn storm(stress: &Path, file: &Path, cg: &Cgroup, o: &Options) -> Result<f64> {
    let readers = spawn_readers(stress, file, cg, o)?;
    std::thread::sleep(Duration::from_secs(1)); // warm up: the cgroup fills
    let (h0, t0) = (cg.limit_hits(), Instant::now());
    std::thread::sleep(Duration::from_secs(o.seconds));
    let rate = (cg.limit_hits() - h0) as f64 / t0.elapsed().as_secs_f64();
    drop(readers);
    Ok(rate)
}

pub fn run(o: Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the reclaim benchmark needs root (BPF, cgroups, kernel.bpf_stats_enabled)");
    }
    let root = workspace_root();
    let memtrace = build_memtrace(true, None)?;
    exec(Command::new("cargo").current_dir(&root).args([
        "build", "--release", "--package", "memtrace-tests", "--bin", "mt-stress",
    ]))?;
    let stress = root.join("target/release/mt-stress");

    let file = o.dir.join(format!("memtrace-bench-reclaim-{}", std::process::id()));
    for i in 0..if o.workload == Workload::Read { o.readers } else { 0 } {
        exec(Command::new(&stress)
            .args(["pagecache", "--path"])
            .arg(file.with_extension(format!("{i}")))
            .args(["--mb", &o.file_mb.to_string(), "--keep", "--drop", "--exit"])
            .stdout(Stdio::null()))?;
    }
    let cleanup = || {
        for i in 0..o.readers {
            let _ = std::fs::remove_file(file.with_extension(format!("{i}")));
        }
    };
    let r = bench(&o, &memtrace, &stress, &file);
    cleanup();
    r
}

fn bench(o: &Options, memtrace: &Path, stress: &Path, file: &Path) -> Result<()> {
    let cg = Cgroup::new(&format!("memtrace-bench-reclaim-{}", std::process::id()), o.limit_mb << 20)?;
    println!(
        "== bench reclaim: {} x {:?} of {} MiB in a {} MiB memory cgroup ({}), {} s per phase",
        o.readers,
        o.workload,
        o.file_mb,
        o.limit_mb,
        if cg.v2 { "v2" } else { "v1" },
        o.seconds
    );
    let base = storm(stress, file, &cg, o)?;
    println!("storm without memtrace: {base:.0} limit hits/s");

    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    std::fs::write(stats_path, "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = traced(o, memtrace, stress, file, &cg, base);
    let _ = std::fs::write(stats_path, old.trim());
    result?;
    let after = storm(stress, file, &cg, o)?;
    println!("storm without memtrace again: {after:.0} limit hits/s");
    Ok(())
}

fn traced(o: &Options, memtrace: &Path, stress: &Path, file: &Path, cg: &Cgroup, base: f64) -> Result<()> {
    let mut mt = Command::new(memtrace)
        .args(["reclaim", "--json", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = mt.id();
    let (tx, rx) = mpsc::channel::<Value>();
    let out = mt.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60)).context("memtrace never printed ready")?;
    if ready["type"] != "ready" {
        bail!("memtrace printed {ready} first");
    }
    let readers = spawn_readers(stress, file, cg, o)?;
    std::thread::sleep(Duration::from_secs(1));
    let (h0, c0, p0, t0) = (cg.limit_hits(), cpu_ticks(pid)?, prog_stats(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (h1, c1, p1, secs) = (cg.limit_hits(), cpu_ticks(pid)?, prog_stats(pid), t0.elapsed().as_secs_f64());
    let names = prog_names();
    drop(readers);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    mt.wait()?;
    let _ = reader.join();
    let lines: Vec<Value> = rx.try_iter().collect();
    let stats = lines.iter().rev().find(|l| l["type"] == "stats").context("no stats line")?;
    let fam = &stats["families"]["reclaim"];

    let rate = (h1 - h0) as f64 / secs;
    println!("storm with memtrace:    {rate:.0} limit hits/s ({:+.1}%)", (rate / base - 1.0) * 100.0);
    println!("\nkernel cost per program (bpf_stats, over {secs:.1} s):");
    println!("  {:<18} {:>6} {:>12} {:>10}", "program", "id", "runs", "ns/run");
    let mut total_ns = 0u64;
    let mut ends = 0u64;
    for (id, (ns1, n1)) in &p1 {
        let (ns0, n0) = p0.get(id).copied().unwrap_or((0, 0));
        let (ns, n) = (ns1 - ns0, n1 - n0);
        let name = names.get(id).cloned().unwrap_or_else(|| "?".into());
        if n == 0 {
            continue;
        }
        total_ns += ns;
        // Every finished stall runs one end program or one throttle program.
        if name.starts_with("rc_") && (name.contains("_e_") || name.starts_with("rc_throttle") || name == "rc_high_exit") {
            ends += n;
        }
        println!("  {name:<18} {id:>6} {n:>12} {:>10.0}", ns as f64 / n as f64);
    }
    println!(
        "  all programs: {:.3} s of CPU; {ends} stalls in the window (end + throttle runs): \
         {:.0} ns per stall",
        total_ns as f64 / 1e9,
        total_ns as f64 / ends.max(1) as f64
    );
    // The stalls' own length, for scale (final per-cgroup rows of the whole run).
    let (n, us) = lines
        .iter()
        .filter(|l| l["type"] == "reclaim_summary" && l["final"] == true && l.get("pid").is_none())
        .fold((0u64, 0f64), |(n, t), r| {
            (n + r["count"].as_u64().unwrap_or(0), t + r["total_us"].as_f64().unwrap_or(0.0))
        });
    if n > 0 {
        let mean_ns = us * 1000.0 / n as f64;
        println!(
            "  mean stall {mean_ns:.0} ns: tracing adds {:.1}% to the time spent stalled",
            total_ns as f64 / ends.max(1) as f64 / mean_ns * 100.0
        );
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (c1 - c0) as f64 / hz;
    println!(
        "\nagent CPU: {cpu:.2} s user+sys over {secs:.1} s = {:.2}% of one CPU; {:.0} ns per stall",
        cpu / secs * 100.0,
        cpu * 1e9 / ends.max(1) as f64
    );
    println!(
        "whole run: {} stalls counted in the kernel, {} streamed (>= 1 ms), {} ring-buffer drops, \
         {} map-full, {} read errors",
        fam["events"], fam["received"], fam["ringbuf_drops"], fam["map_full"], fam["read_errors"]
    );
    Ok(())
}
