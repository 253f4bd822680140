//! Harness for memtrace's integration tests: real kernel events, run as root, on the host
//! (cgroup v1 or v2) and inside the VM (`cargo xtask vm-test`).
//!
//! - [`Memtrace`] runs the memtrace binary with `--json` and collects its lines.
//! - [`MemCgroup`] makes a memory cgroup with a small limit, so memory is only ever pressed
//!   inside it (never the host's global memory).
//! - [`Stress`] runs the `mt-stress` workload binary with a distinctive comm.

mod tools;

pub use tools::{TempDir, free_port, http_get, rss_kib, url_encode};

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

pub use serde_json::Value;

pub mod bpf;
pub mod btf;

/// Path of the memtrace binary: $MEMTRACE_BIN, else target/debug/memtrace.
pub fn memtrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MEMTRACE_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/memtrace");
    assert!(
        p.exists(),
        "{} not found: build it (cargo build -p memtrace) or run `cargo xtask test`",
        p.display()
    );
    p
}

/// Path of the mt-stress binary: $MT_STRESS_BIN, else next to the test executable's
/// directory (target/<profile>/mt-stress).
pub fn stress_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MT_STRESS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let p = exe.parent().and_then(Path::parent).expect("target dir").join("mt-stress");
    assert!(p.exists(), "{} not found: cargo build -p memtrace-tests", p.display());
    p
}

/// Inside the test VM (set by the VM's /init).
pub fn in_vm() -> bool {
    std::env::var_os("MEMTRACE_VM").is_some()
}

/// The tests need root (BPF, cgroups). They fail, never skip, without it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "memtrace integration tests need root (BPF and cgroups); run them as root");
}

/// For tests that press global memory: refuse to run outside the VM.
pub fn require_vm() {
    require_root();
    assert!(
        in_vm(),
        "this test exhausts global memory and only runs inside the VM (cargo xtask vm-test)"
    );
}

/// Reads `r` line by line on a thread; with `echo`, also copies each line to stderr
/// behind that prefix (shown by libtest when a test fails).
fn line_reader(r: impl std::io::Read + Send + 'static, echo: Option<&'static str>) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if let Some(prefix) = echo {
                eprintln!("{prefix} {line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn json(line: &str) -> Value {
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("memtrace printed a non-JSON line {line:?}: {e}"))
}

/// A running `memtrace ... --json`.
pub struct Memtrace {
    child: Child,
    lines: Receiver<String>,
    /// Every line received so far.
    pub seen: Vec<Value>,
    stderr: Receiver<String>,
}

impl Memtrace {
    /// Starts memtrace with `args` (which should include --json) and waits for "ready".
    pub fn start(args: &[&str]) -> Memtrace {
        Memtrace::start_with_env(args, &[])
    }

    /// [`Memtrace::start`] with extra environment variables (e.g. MEMTRACE_DISABLE).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Memtrace {
        let mut child = Command::new(memtrace_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let lines = line_reader(child.stdout.take().expect("stdout"), None);
        let stderr = line_reader(child.stderr.take().expect("stderr"), Some("[memtrace]"));
        let mut m = Memtrace { child, lines, seen: Vec::new(), stderr };
        let ready = m
            .wait_for(Duration::from_secs(60), |v| v["type"] == "ready")
            .unwrap_or_else(|| panic!("memtrace {args:?} never printed ready"));
        assert!(ready["probes"].as_array().is_some_and(|p| !p.is_empty()), "{ready}");
        m
    }

    /// The memtrace process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line matching `pred` arrives; returns it.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left).map(|l| json(&l)) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits until a line matching `pred` arrives whose `"time"` is later than `mark` (a
    /// [`now_ms`] taken before): a record that describes the state after that moment, never
    /// a snapshot taken before it. Panics after `timeout`, naming `what`.
    pub fn wait_after(
        &mut self,
        mark: u64,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(timeout, |v| time_ms(v).is_some_and(|t| t > mark) && pred(v))
            .unwrap_or_else(|| {
                panic!(
                    "waited {timeout:?} for {what} (time after {mark} ms), it never came; seen: {:?}",
                    self.seen
                )
            })
    }

    /// Collects lines until `cond` holds over every line seen so far; panics after
    /// `timeout`, naming `what`.
    pub fn collect_until(&mut self, timeout: Duration, what: &str, cond: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(&self.seen) {
            assert!(Instant::now() < deadline, "waited {timeout:?} for {what}, it never happened");
            self.wait_for(Duration::from_millis(100), |_| false);
        }
    }

    /// Sends `signal`, waits for exit (asserting status 0) and returns every line.
    pub fn stop_with(self, signal: i32) -> Vec<Value> {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.finish()
    }

    /// SIGINT, then [`Memtrace::stop_with`].
    pub fn stop(self) -> Vec<Value> {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for memtrace to exit by itself (e.g. --duration, at most 60 s from now plus
    /// its final report on a loaded machine), asserting status 0.
    pub fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait memtrace") {
                break s;
            }
            assert!(Instant::now() < deadline, "memtrace did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(json(&l));
        }
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "memtrace exited with {status}; stderr: {stderr:?}");
        assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Memtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wall-clock milliseconds since the epoch, truncated: a mark for [`Memtrace::wait_after`].
/// A record stamped in a later millisecond was taken after this call returned.
pub fn now_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    d.as_millis() as u64
}

/// A record's `"time"` (RFC 3339 UTC with milliseconds, as memtrace prints it) in
/// milliseconds since the epoch; None when it has none or it does not parse.
pub fn time_ms(v: &Value) -> Option<u64> {
    let t = v["time"].as_str()?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Polls `cond` every 50 ms until it returns Some, for at most `timeout`; panics naming
/// `what` when it never does.
pub fn wait_until<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}, it never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `stats` line's counters for a family.
pub fn stats_of<'a>(lines: &'a [Value], family: &str) -> &'a Value {
    let stats = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "stats")
        .unwrap_or_else(|| panic!("no stats line in {lines:?}"));
    &stats["families"][family]
}

/// A memory cgroup (v2 when the unified hierarchy has the memory controller, else v1)
/// with a limit. Removed, with any process left in it killed, on drop.
pub struct MemCgroup {
    pub dir: PathBuf,
    /// Path relative to the hierarchy root, as memtrace reports it ("/name").
    pub rel: String,
    pub v2: bool,
}

fn memory_hierarchy() -> (PathBuf, bool) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let mut v1 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        if f[2] == "cgroup2" {
            let ctl = std::fs::read_to_string(Path::new(f[1]).join("cgroup.controllers"))
                .unwrap_or_default();
            if ctl.split_whitespace().any(|c| c == "memory") {
                return (PathBuf::from(f[1]), true);
            }
        }
        if f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory") {
            v1 = Some(PathBuf::from(f[1]));
        }
    }
    (v1.expect("no memory cgroup hierarchy mounted"), false)
}

impl MemCgroup {
    pub fn new(name: &str, limit: u64) -> MemCgroup {
        require_root();
        let (root, v2) = memory_hierarchy();
        let leaf = format!("memtrace-test-{name}-{}", std::process::id());
        let dir = root.join(&leaf);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = MemCgroup { dir, rel: format!("/{leaf}"), v2 };
        cg.set_limit(limit);
        if v2 {
            // No swap here, but make sure the limit is the whole story.
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        cg
    }

    /// Sets the memory limit (v2 memory.max, v1 memory.limit_in_bytes).
    pub fn set_limit(&self, limit: u64) {
        let file = if self.v2 { "memory.max" } else { "memory.limit_in_bytes" };
        self.write(file, &limit.to_string());
    }

    /// Memory charged to the cgroup now, kernel memory included (v2 memory.current, v1
    /// memory.usage_in_bytes).
    pub fn usage(&self) -> u64 {
        let file = if self.v2 { "memory.current" } else { "memory.usage_in_bytes" };
        self.read(file).trim().parse().expect("usage")
    }

    pub fn write(&self, file: &str, v: &str) {
        std::fs::write(self.dir.join(file), v)
            .unwrap_or_else(|e| panic!("write {v} to {}/{file}: {e}", self.dir.display()));
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_else(|e| panic!("read {}/{file}: {e}", self.dir.display()))
    }

    pub fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    /// Times the cgroup hit its limit: v1 memory.failcnt, v2 memory.events "max".
    pub fn limit_hits(&self) -> u64 {
        if self.v2 {
            key_value(&self.read("memory.events"), "max")
        } else {
            self.read("memory.failcnt").trim().parse().expect("failcnt")
        }
    }

    /// OOM kills in this cgroup: v1 memory.oom_control oom_kill, v2 memory.events oom_kill.
    pub fn oom_kills(&self) -> u64 {
        if self.v2 {
            key_value(&self.read("memory.events"), "oom_kill")
        } else {
            key_value(&self.read("memory.oom_control"), "oom_kill")
        }
    }

    /// The processes in the cgroup (cgroup.procs: thread group ids).
    pub fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

fn key_value(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let pids = self.procs();
            for p in &pids {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// A running mt-stress workload.
pub struct Stress {
    pub child: Child,
    out: Receiver<String>,
}

impl Stress {
    /// Spawns `mt-stress <args>`.
    pub fn spawn(args: &[&str]) -> Stress {
        let mut child = Command::new(stress_bin())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn mt-stress {args:?}: {e}"));
        let out = line_reader(child.stdout.take().expect("stdout"), None);
        Stress { child, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_string(),
                Ok(_) => {}
                Err(_) => panic!("mt-stress (pid {}) never printed {prefix:?}", self.pid()),
            }
        }
    }

    /// Waits for exit; returns the terminating signal, if any.
    pub fn wait_signal(&mut self, timeout: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt as _;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait mt-stress") {
                return s.signal();
            }
            assert!(Instant::now() < deadline, "mt-stress {} did not exit", self.pid());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs memtrace to completion with `args`; returns (exit code, stdout, stderr).
pub fn run_memtrace(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(memtrace_bin()).args(args).output().expect("run memtrace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh size-limited tmpfs mounted on a temporary directory; unmounted (lazily) and
/// removed on drop.
pub struct TmpfsMount {
    pub dir: PathBuf,
}

impl TmpfsMount {
    pub fn new(name: &str, size: u64) -> TmpfsMount {
        require_root();
        let dir = std::env::temp_dir().join(format!("memtrace-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let target = c(dir.to_str().expect("utf-8"));
        let opts = c(&format!("size={size},mode=0755"));
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs on {}: {}", dir.display(), std::io::Error::last_os_error());
        TmpfsMount { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn dir_str(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    /// `df` used bytes.
    pub fn used(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir_str()).expect("no NUL");
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
        (st.f_blocks - st.f_bfree) as u64 * st.f_bsize as u64
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.dir_str()) {
            // SAFETY: valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A running memtrace in text mode: stdout collected, stderr echoed and kept.
/// `start` returns once memtrace says it is tracing (its "Ctrl-C to stop." line).
pub struct TextMemtrace {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// stderr lines received so far.
    pub err_seen: Vec<String>,
}

impl TextMemtrace {
    pub fn start(args: &[&str]) -> TextMemtrace {
        let mut child = Command::new(memtrace_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memtrace");
        let stdout = line_reader(child.stdout.take().expect("stdout"), None);
        let stderr = line_reader(child.stderr.take().expect("stderr"), Some("[memtrace]"));
        let mut m = TextMemtrace { child, stdout, stderr, err_seen: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match m.stderr.recv_timeout(left) {
                Ok(l) => {
                    let ready = l.contains("Ctrl-C to stop");
                    m.err_seen.push(l);
                    if ready {
                        return m;
                    }
                }
                Err(_) => panic!("memtrace {args:?} never said it was tracing: {:?}", m.err_seen),
            }
        }
    }

    /// SIGINT, wait for a clean exit; returns (stdout, stderr).
    pub fn stop(mut self) -> (String, String) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait memtrace");
        let mut out = String::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            out.push_str(&l);
            out.push('\n');
        }
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            self.err_seen.push(l);
        }
        let err = self.err_seen.join("\n");
        assert!(status.success(), "memtrace exited with {status}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        (out, err)
    }
}

impl Drop for TextMemtrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_times_parse_as_memtrace_prints_them() {
        let v = serde_json::json!({"time": "2024-02-29T12:34:56.789Z"});
        assert_eq!(time_ms(&v), Some(1_709_210_096_789));
        assert_eq!(time_ms(&serde_json::json!({"time": "1970-01-01T00:00:00.000Z"})), Some(0));
        assert_eq!(time_ms(&serde_json::json!({"time": "soon"})), None);
        assert_eq!(time_ms(&serde_json::json!({})), None);
        let now = now_ms();
        assert!(now > 1_709_210_096_789);
    }
}
