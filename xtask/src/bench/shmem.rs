//! `cargo xtask bench shmem [--mb N] [--rounds R]`: what tracing shmem costs.
//!
//! A writer (`dd`, inside a memory cgroup with room to spare) fills a fresh tmpfs with N MiB,
//! R times, first untraced, then under `memtrace shmem`. With `kernel.bpf_stats_enabled=1`
//! the kernel times every BPF program run: the table gives runs, total and mean ns per run
//! of each shmem program (read with bpftool), and the writer's wall time both ways. Runs as
//! root on the host; restores bpf_stats_enabled, unmounts and removes what it made.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::util::{build_memtrace, exec, output};

#[derive(Args, Debug)]
pub struct Options {
    /// MiB written per round.
    #[arg(long, default_value_t = 256)]
    mb: u64,
    /// Rounds per configuration.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

struct Cleanup {
    mount: PathBuf,
    cgroup: Option<PathBuf>,
    stats_before: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS, &self.stats_before);
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// A memory cgroup for the writer: v2 when the unified hierarchy has the memory
/// controller, else v1.
fn memory_cgroup(limit: u64) -> Result<PathBuf> {
    let (root, v2) = crate::util::memory_hierarchy()?;
    let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
    let dir = root.join(format!("memtrace-bench-shmem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    std::fs::write(dir.join(file), limit.to_string())?;
    Ok(dir)
}

/// One round: dd writes `mb` MiB into `file` from inside the cgroup; returns its wall time.
fn write_round(cgroup: &Path, file: &Path, mb: u64) -> Result<Duration> {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={} bs=1M count={mb} status=none",
        cgroup.display(),
        file.display()
    );
    let t = Instant::now();
    exec(Command::new("sh").args(["-c", &script]))?;
    let d = t.elapsed();
    std::fs::remove_file(file)?;
    Ok(d)
}

/// (name, run_cnt, run_time_ns) of the loaded shmem programs.
fn prog_stats() -> Result<Vec<(String, u64, u64)>> {
    let out = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let v: Value = serde_json::from_str(&out)?;
    let mut rows = Vec::new();
    for p in v.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        if name.starts_with("shmem_") {
            rows.push((
                name.to_string(),
                p["run_cnt"].as_u64().unwrap_or(0),
                p["run_time_ns"].as_u64().unwrap_or(0),
            ));
        }
    }
    rows.sort();
    Ok(rows)
}

fn mean(v: &[Duration]) -> f64 {
    v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
}

pub fn run(o: Options) -> Result<()> {
    if std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        != Some("0")
    {
        bail!("bench shmem needs root (BPF, mounts, cgroups)");
    }
    let bin = build_memtrace(true, None)?;
    let mount = std::env::temp_dir().join(format!("memtrace-bench-shmem-{}", std::process::id()));
    std::fs::create_dir_all(&mount)?;
    let mut cleanup = Cleanup {
        mount: mount.clone(),
        cgroup: None,
        stats_before: std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".into()),
    };
    exec(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={}m", o.mb + 64)])
            .arg("tmpfs")
            .arg(&mount),
    )?;
    let cg = memory_cgroup((o.mb + 256) * 1024 * 1024)?;
    cleanup.cgroup = Some(cg.clone());
    let file = mount.join("bench.dat");

    let mut base = Vec::new();
    for _ in 0..o.rounds {
        base.push(write_round(&cg, &file, o.mb)?);
    }

    std::fs::write(STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
    let mut mt = Command::new(&bin)
        .args(["shmem", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(mt.stdout.take().expect("stdout")).lines();
    let ready = lines.next().context("memtrace printed nothing")??;
    let ready: Value = serde_json::from_str(&ready)?;
    if ready["type"] != "ready" {
        bail!("memtrace did not start: {ready}");
    }
    let before = prog_stats()?;
    let mut traced = Vec::new();
    for _ in 0..o.rounds {
        traced.push(write_round(&cg, &file, o.mb)?);
    }
    let after = prog_stats()?;
    let _ = Command::new("kill").args(["-INT", &mt.id().to_string()]).status();
    let rest: Vec<Value> =
        lines.map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect();
    mt.wait()?;

    println!("memtrace shmem: {} rounds of {} MiB written into a tmpfs by dd", o.rounds, o.mb);
    for p in ready["probes"].as_array().into_iter().flatten() {
        println!("  {} via {} ({})", p["hook"], p["strategy"], p["program"]);
    }
    println!("\n  {:<22} {:>12} {:>14} {:>10}", "PROGRAM", "RUNS", "RUN TIME ns", "ns/RUN");
    for (name, cnt, ns) in &after {
        let (c0, n0) =
            before.iter().find(|(n, ..)| n == name).map(|(_, c, n)| (*c, *n)).unwrap_or((0, 0));
        let (c, n) = (cnt - c0, ns - n0);
        let per = if c > 0 { n as f64 / c as f64 } else { 0.0 };
        println!("  {name:<22} {c:>12} {n:>14} {per:>10.1}");
    }
    let (b, t) = (mean(&base), mean(&traced));
    println!(
        "\n  dd wall time per round: untraced {:.1} ms, traced {:.1} ms ({:+.1}%)",
        b * 1e3,
        t * 1e3,
        (t / b - 1.0) * 100.0
    );
    if let Some(w) = rest.iter().find(|v| v["type"] == "shmem_writer" && v["comm"] == "dd") {
        println!("  writer totals at the end: {w}");
    }
    if let Some(a) = rest.iter().find(|v| v["type"] == "shmem_accuracy") {
        println!("  accuracy counters: {a}");
    }
    if let Some(s) = rest.iter().find(|v| v["type"] == "stats") {
        println!("  stats: {}", s["families"]["shmem"]);
    }
    drop(cleanup);
    Ok(())
}
