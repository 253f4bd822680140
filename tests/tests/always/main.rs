//! Always on, one test binary: the recording (`record`: replay equals the live run, kill -9,
//! truncation, a flipped byte, rotation and retention, a full disk; they run in the VM
//! too), and what needs the host (`host_only`: a real Prometheus server scraping a live
//! memtrace, promtool, 500 cgroups churning; the VM has no Prometheus, and the churn of 500
//! cgroups with reclaim in each is too slow under emulation). The VM's /init skips the
//! tests whose names contain `host_only`.

mod host_only;
mod record;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use memtrace_tests::{MemCgroup, Stress, TempDir, TmpfsMount, Value, memtrace_bin, wait_until};

pub const MIB: u64 = 1024 * 1024;

/// A memtrace whose stdout and stderr go to files (the bytes exactly as printed).
pub struct Run {
    child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Run {
    /// Starts `memtrace args` and waits until it traces (its `ready` record, or in text
    /// mode its "Ctrl-C to stop." line).
    pub fn start(dir: &TempDir, tag: &str, args: &[&str]) -> Run {
        let (out, err) = (dir.join(&format!("{tag}.out")), dir.join(&format!("{tag}.err")));
        let child = Command::new(memtrace_bin())
            .args(args)
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn memtrace");
        let run = Run { child, out, err };
        wait_until(Duration::from_secs(120), &format!("memtrace {args:?} tracing"), || {
            let ready = run.stderr().contains("Ctrl-C to stop") || run.stdout().contains("{\"type\":\"ready\"");
            ready.then_some(())
        });
        run
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGINT; waits for a clean exit; returns (stdout, stderr).
    pub fn stop(mut self) -> (String, String) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_until(Duration::from_secs(60), "memtrace to stop", || self.child.try_wait().expect("wait memtrace"));
        let (out, err) = (self.stdout(), self.stderr());
        assert!(status.success(), "memtrace exited with {status}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        (out, err)
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `memtrace replay|dump ...`: (exit code, stdout, stderr).
pub fn memtrace(args: &[&str]) -> (i32, String, String) {
    memtrace_tests::run_memtrace(args)
}

/// JSON lines to values (whole lines only).
pub fn records(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The segments of a recording directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("recording dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("memtrace-") && n.ends_with(".jsonl.zst")))
        .collect();
    v.sort();
    v
}

/// What presses every family once: a memcg OOM, memcg reclaim, a dentry storm and a file
/// left behind on a tmpfs by a writer that exited. The cgroups and the tmpfs stay until
/// dropped.
pub struct Incidents {
    pub oom: MemCgroup,
    pub reclaim: MemCgroup,
    pub fs: TmpfsMount,
    pub dentries: TempDir,
}

impl Incidents {
    pub fn new(tag: &str) -> Incidents {
        Incidents {
            oom: MemCgroup::new(&format!("{tag}-oom"), 64 * MIB),
            reclaim: MemCgroup::new(&format!("{tag}-rc"), 64 * MIB),
            fs: TmpfsMount::new(&format!("{tag}-fs"), 64 * MIB),
            dentries: TempDir::new(&format!("{tag}-dentries")),
        }
    }

    /// Runs them all, one after the other; returns the OOM kills the cgroup counted.
    pub fn cause(&self) -> u64 {
        let mut hog = Stress::spawn(&["hog", "--mb", "256", "--comm", "mt-al-oom", "--cgroup", self.oom.dir_str()]);
        assert_eq!(hog.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL), "the hog was not OOM-killed");
        let mut lazy = Stress::spawn(&["lazyfree", "--mb", "32", "--cgroup", self.reclaim.dir_str()]);
        lazy.wait_line("ready", Duration::from_secs(60));
        let mut press =
            Stress::spawn(&["hog", "--mb", "48", "--exit", "--comm", "mt-al-rc", "--cgroup", self.reclaim.dir_str()]);
        assert_eq!(press.wait_signal(Duration::from_secs(60)), None, "the reclaim press was killed");
        drop(lazy);
        let mut stat = Stress::spawn(&["stat-missing", "--count", "20000", "--dir", self.dentries.str(), "--comm", "mt-al-slab"]);
        stat.wait_signal(Duration::from_secs(120));
        let orphan = self.fs.path("orphan.log");
        let mut w = Stress::spawn(&["tmpfs-write", "--path", orphan.to_str().unwrap(), "--mb", "8", "--comm", "mt-al-shm"]);
        w.wait_signal(Duration::from_secs(60));
        self.oom.oom_kills()
    }
}
