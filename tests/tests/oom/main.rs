//! The oom family on the real kernel, one test binary: OOM kills inside small memory
//! cgroups on the host (`host`: the record, filters, text mode, replay; `decision`: every
//! candidate scored, the right victim, twice; `loss`: 10,000 processes in the domain and a
//! tiny ring buffer, every missing candidate counted), and VM-only cases that exhaust
//! global memory or need cgroup v2 and kprobes/fentry (`vm`, run by `cargo xtask vm-test`).

mod decision;
mod host;
mod loss;
mod vm;

use std::{path::PathBuf, time::Duration};

use memtrace_tests::{MemCgroup, Memtrace, Stress, Value, wait_until};

pub const MIB: u64 = 1024 * 1024;

/// `n` processes named `{prefix}-{i}` in `cg` that touched `mb` MiB each, once all ready.
pub fn hogs(cg: &MemCgroup, prefix: &str, n: usize, mb: u64, ready: Duration) -> Vec<Stress> {
    let mb = mb.to_string();
    (0..n)
        .map(|i| {
            let comm = format!("{prefix}-{i}");
            let args = ["hog", "--mb", &mb, "--comm", &comm, "--cgroup", cg.dir_str()];
            let mut s = Stress::spawn(&args);
            s.wait_line("ready", ready);
            s
        })
        .collect()
}

/// `mt-stress sleepers`: `n` small processes sleeping in `cg` (clones sharing one small
/// address space) and their parent, all named `comm`. On drop every sleeper still the
/// parent's child is killed by its pid, then the parent (the sleepers also die with it).
pub struct Sleepers {
    pub pids: Vec<u32>,
    parent: Stress,
}

impl Sleepers {
    pub fn spawn(cg: &MemCgroup, comm: &str, n: usize) -> Sleepers {
        let count = n.to_string();
        let args = ["sleepers", "--count", &count, "--comm", comm, "--cgroup", cg.dir_str()];
        let mut parent = Stress::spawn(&args);
        let pids: Vec<u32> = parent
            .wait_line("pids", Duration::from_secs(300))
            .split_whitespace()
            .map(|p| p.parse().expect("a pid"))
            .collect();
        parent.wait_line("ready", Duration::from_secs(60));
        assert_eq!(pids.len(), n);
        Sleepers { pids, parent }
    }

    pub fn parent_pid(&self) -> u32 {
        self.parent.pid()
    }
}

/// The parent pid of `pid` (/proc/PID/stat), None when it is gone.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the comm may hold spaces, not the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        let parent = self.parent.pid();
        for &pid in &self.pids {
            // Only a pid that is still ours: a sleeper that died was reaped by the parent,
            // and its pid may be another process's by now.
            if ppid(pid) == Some(parent) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        // Then `parent` drops: killed and waited for.
    }
}

/// A number of a record, or a panic naming it.
pub fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A candidate's or the victim's `points`.
pub fn points(v: &Value) -> i64 {
    v["points"].as_i64().unwrap_or_else(|| panic!("no points in {v}"))
}

/// The candidate row of `pid` in a kill record.
pub fn candidate(kill: &Value, pid: u32) -> Option<&Value> {
    kill["candidates"].as_array().expect("candidates").iter().find(|c| c["pid"] == pid)
}

/// The next `oom_kill` record that `pred` accepts; panics after `timeout`, naming `what`.
pub fn next_kill(
    mt: &mut Memtrace,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    mt.wait_for(timeout, |v| v["type"] == "oom_kill" && pred(v))
        .unwrap_or_else(|| panic!("no oom_kill record for {what} within {timeout:?}"))
}

/// Whether `hook` was attached (the `ready` record's probes).
pub fn attached(mt: &Memtrace, hook: &str) -> bool {
    let ready = mt.seen.iter().find(|v| v["type"] == "ready").expect("a ready record");
    ready["probes"].as_array().expect("probes").iter().any(|p| p["hook"] == hook)
}

/// A "Key:   123 kB" line's value in KiB (/proc/meminfo, /proc/PID/status).
pub fn kib_field(text: &str, key: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// A `--json-file` of a text-mode run, removed on drop.
pub struct Recording {
    pub path: PathBuf,
}

impl Recording {
    pub fn new(name: &str) -> Recording {
        let file = format!("memtrace-oom-{name}-{}.jsonl", std::process::id());
        Recording { path: std::env::temp_dir().join(file) }
    }

    /// `--json-file PATH`.
    pub fn args(&self) -> [&str; 2] {
        ["--json-file", self.path.to_str().expect("utf-8")]
    }

    /// The records written so far (whole lines only).
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    /// Waits until the run has written `n` `oom_kill` records: its text report of them is
    /// printed by then (every output gets a record at the same moment).
    pub fn wait_kills(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(timeout, &format!("{n} oom_kill records in {}", self.path.display()), || {
            let kills: Vec<Value> =
                self.records().into_iter().filter(|v| v["type"] == "oom_kill").collect();
            (kills.len() >= n).then_some(kills)
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
