//! `cargo xtask bench oom`: the kernel-side cost of the oom family's programs, from the
//! kernel's own BPF statistics (kernel.bpf_stats_enabled: run_time_ns / run_cnt per
//! program, read from memtrace's program fds in /proc and named through /proc/kallsyms).
//!
//! Two loads, both real:
//! - process exits (`/bin/true` run N times): every exit in the system runs the victim-exit
//!   filter, the family's only hot path;
//! - OOM decisions: a memory cgroup holding P small processes, then K growers killed one
//!   after the other; each kill runs mark_victim's oom_control scan and candidate walk.
//!
//! Press memory only inside the cgroup (never the host's global memory).

use std::{
    collections::HashMap,
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

#[derive(Args, Debug)]
pub struct Options {
    /// Short-lived processes to run for the exit hot path.
    #[arg(long, default_value_t = 5000)]
    pub exits: u32,
    /// Small processes in the OOM memcg (candidates of every decision).
    #[arg(long, default_value_t = 100)]
    pub procs: u32,
    /// OOM kills to cause.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// run_time_ns and run_cnt of one program.
#[derive(Clone, Copy, Default, Debug)]
struct ProgStats {
    ns: u64,
    cnt: u64,
}

/// Programs of `pid` by name: fdinfo gives tag and counters, kallsyms maps tag to name.
fn prog_stats(pid: u32) -> Result<HashMap<String, ProgStats>> {
    let syms = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let mut names = HashMap::new();
    for l in syms.lines() {
        let Some(sym) = l.split_whitespace().nth(2) else { continue };
        if let Some(rest) = sym.strip_prefix("bpf_prog_") {
            if let Some((tag, name)) = rest.split_once('_') {
                names.insert(tag.to_string(), name.to_string());
            }
        }
    }
    let mut out: HashMap<String, ProgStats> = HashMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let link = std::fs::read_link(e.path()).unwrap_or_default();
        if link.to_string_lossy() != "anon_inode:bpf-prog" {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |k: &str| {
            info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string())
        };
        let (Some(tag), Some(ns), Some(cnt)) =
            (field("prog_tag:"), field("run_time_ns:"), field("run_cnt:"))
        else {
            continue;
        };
        let name = names.get(&tag).cloned().unwrap_or(tag);
        let s = out.entry(name).or_default();
        s.ns += ns.parse::<u64>().unwrap_or(0);
        s.cnt += cnt.parse::<u64>().unwrap_or(0);
    }
    Ok(out)
}

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            for p in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn_hog(stress: &Path, mb: u32, comm: &str, cg: &Path) -> Result<Child> {
    let mut c = Command::new(stress)
        .args(["hog", "--mb", &mb.to_string(), "--comm", comm, "--cgroup"])
        .arg(cg)
        .stdout(Stdio::piped())
        .spawn()?;
    let out = c.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok(c)
}

pub fn run(opts: Options) -> Result<()> {
    let root = workspace_root();
    let memtrace = build_memtrace(true, None)?;
    exec(Command::new("cargo").current_dir(&root).args([
        "build", "--release", "--package", "memtrace-tests", "--bin", "mt-stress",
    ]))?;
    let stress = root.join("target/release/mt-stress");
    let was = std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".into());
    std::fs::write(STATS, "1").context("enabling kernel.bpf_stats_enabled (root needed)")?;
    let r = measure(&memtrace, &stress, &opts);
    let _ = std::fs::write(STATS, was.trim());
    r
}

fn measure(memtrace: &Path, stress: &Path, opts: &Options) -> Result<()> {
    let mut mt = Command::new(memtrace)
        .args(["oom", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (tx, rx) = mpsc::channel::<Value>();
    let out = mt.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                let _ = tx.send(v);
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60)).context("memtrace never got ready")?;
    if ready["type"] != "ready" {
        bail!("unexpected first line {ready}");
    }
    let pid = mt.id();
    let strategies: Vec<String> = ready["probes"]
        .as_array()
        .map(|p| p.iter().map(|p| format!("{} via {}", p["hook"], p["strategy"])).collect())
        .unwrap_or_default();
    eprintln!("bench oom: {}", strategies.join(", "));

    // Exits.
    let before = prog_stats(pid)?;
    let t = Instant::now();
    for _ in 0..opts.exits {
        Command::new("/bin/true").status()?;
    }
    let exit_wall = t.elapsed();
    let after_exits = prog_stats(pid)?;

    // OOM decisions.
    let (mount, v2) = crate::util::memory_hierarchy()?;
    let dir = mount.join(format!("memtrace-bench-oom-{}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    std::fs::create_dir(&dir)?;
    let cg = Cgroup(dir.clone());
    let limit = (u64::from(opts.procs) * 4 + 96) * 1024 * 1024;
    std::fs::write(
        dir.join(if v2 { "memory.max" } else { "memory.limit_in_bytes" }),
        limit.to_string(),
    )?;
    let mut small = Vec::new();
    for i in 0..opts.procs {
        small.push(spawn_hog(stress, 1, &format!("bench-small-{i}"), &dir)?);
    }
    let mut kills = Vec::new();
    for i in 0..opts.kills {
        let mut g = Command::new(stress)
            .args(["hog", "--mb", "2048", "--comm", &format!("bench-grow-{i}"), "--cgroup"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()?;
        g.wait()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(v) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if v["type"] == "oom_kill" {
                kills.push(v);
                break;
            }
        }
    }
    let after_ooms = prog_stats(pid)?;
    drop(small);
    drop(cg);
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    let _ = mt.wait();
    let mut stats = None;
    while let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
        if v["type"] == "oom_kill" {
            kills.push(v);
        } else if v["type"] == "stats" {
            stats = Some(v);
        }
    }

    let delta = |a: &HashMap<String, ProgStats>, b: &HashMap<String, ProgStats>, name: &str| {
        let x = a.get(name).copied().unwrap_or_default();
        let y = b.get(name).copied().unwrap_or_default();
        ProgStats { ns: y.ns.saturating_sub(x.ns), cnt: y.cnt.saturating_sub(x.cnt) }
    };
    let mut names: Vec<&String> = after_ooms.keys().collect();
    names.sort();
    println!("phase      program            runs   total µs   ns/run");
    for (phase, a, b) in [("exits", &before, &after_exits), ("ooms", &after_exits, &after_ooms)] {
        for n in &names {
            let d = delta(a, b, n);
            if d.cnt == 0 {
                continue;
            }
            println!(
                "{phase:<10} {n:<16} {:>8} {:>10.1} {:>8}",
                d.cnt,
                d.ns as f64 / 1000.0,
                d.ns / d.cnt
            );
        }
    }
    println!(
        "exits: {} processes in {:.2} s ({:.0} µs each, wall)",
        opts.exits,
        exit_wall.as_secs_f64(),
        exit_wall.as_secs_f64() * 1e6 / f64::from(opts.exits.max(1))
    );
    for k in &kills {
        println!(
            "kill: victim {} ({}), {} candidates ({}), reaper: {}",
            k["victim"]["pid"],
            k["victim"]["comm"],
            k["candidates"].as_array().map_or(0, Vec::len),
            k["candidates_method"]["method"],
            k["reaper"]["summary"]
        );
    }
    if let Some(s) = stats {
        println!("memtrace stats: {}", s["families"]["oom"]);
    }
    Ok(())
}
