//! What the host and VM cases share: a directory that keeps negative dentries, the
//! stat-missing storm, and readers of memtrace's slab records.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use memtrace_tests::{Memtrace, Stress, Value};

/// A directory for a workload's missing paths, on a filesystem that keeps negative
/// dentries: the temp dir, unless it is tmpfs/ramfs (which delete them at once, as in the
/// VM's initramfs); then a directory in the cgroup2 hierarchy (kernfs caches negative
/// dentries). The go file lives in the temp dir. Removed on drop.
pub struct TempDir {
    dir: PathBuf,
    cgroup: bool,
    go: PathBuf,
}

fn fs_magic(p: &Path) -> i64 {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: valid path and out buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0, "statfs {}", p.display());
    st.f_type as i64
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const CGROUP2_MAGIC: i64 = 0x6367_7270;

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let leaf = format!("mt-slab-{name}-{}", std::process::id());
        let tmp = std::env::temp_dir();
        let go = tmp.join(format!("{leaf}.go"));
        let _ = std::fs::remove_file(&go);
        let cg = Path::new("/sys/fs/cgroup");
        let volatile = matches!(fs_magic(&tmp), TMPFS_MAGIC | RAMFS_MAGIC);
        let (dir, cgroup) = if volatile && fs_magic(cg) == CGROUP2_MAGIC {
            (cg.join(&leaf), true)
        } else {
            (tmp.join(&leaf), false)
        };
        assert!(
            !volatile || cgroup,
            "no filesystem that keeps negative dentries: {} is tmpfs and no cgroup2",
            tmp.display()
        );
        let t = TempDir { dir, cgroup, go };
        t.remove();
        std::fs::create_dir_all(&t.dir).unwrap();
        t
    }

    /// A subdirectory (created by the workload).
    pub fn sub(&self, s: &str) -> String {
        self.dir.join(s).to_str().unwrap().to_string()
    }

    /// A file for memtrace's --json-file, next to the directory (not in it: it may be a
    /// cgroup).
    pub fn json_file(&self) -> String {
        self.go.with_extension("json").to_str().unwrap().to_string()
    }

    pub fn go_file(&self) -> String {
        self.go.to_str().unwrap().to_string()
    }

    fn remove(&self) {
        if self.cgroup {
            // Cgroup directories go with rmdir, children first.
            if let Ok(rd) = std::fs::read_dir(&self.dir) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        self.remove();
        let _ = std::fs::remove_file(&self.go);
        let _ = std::fs::remove_file(self.go.with_extension("json"));
    }
}

/// Dentry growth every second with frees matched to the allocating caller, every caller
/// listed.
pub const LIVE_DENTRY: &[&str] =
    &["slab", "--json", "--cache", "dentry", "--live", "1", "--top", "1000"];

/// A stat-missing workload waiting for `go` to exist.
pub fn storm(count: u64, dir: &str, comm: &str, go: &str) -> Stress {
    let n = count.to_string();
    let mut s = Stress::spawn(&[
        "stat-missing",
        "--count",
        &n,
        "--dir",
        dir,
        "--comm",
        comm,
        "--go-file",
        go,
    ]);
    s.wait_line("ready", Duration::from_secs(30));
    s
}

/// Waits for `done <ENOENT count>` and checks every path was missing.
pub fn finish(s: &mut Stress, count: u64) {
    let n: u64 = s.wait_line("done", Duration::from_secs(600)).parse().unwrap();
    assert_eq!(n, count, "every stat() must have failed with ENOENT");
}

pub fn go(path: &str) {
    std::fs::write(path, "").unwrap();
}

/// Runs a storm of `count` missing paths in `d`'s subdirectory `sub` to its end; returns
/// the storm's pid.
pub fn stat_storm(d: &TempDir, sub: &str, count: u64, comm: &str) -> u32 {
    let gofile = d.go_file();
    let mut s = storm(count, &d.sub(sub), comm, &gofile);
    go(&gofile);
    finish(&mut s, count);
    s.pid()
}

/// slab_growth lines of `scope` for `cache`, in output (rank) order.
pub fn growth<'a>(lines: &'a [Value], scope: &str, cache: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "slab_growth" && v["scope"] == scope && v["cache"] == cache)
        .collect()
}

pub fn cache_line<'a>(lines: &'a [Value], scope: &str, cache: &str) -> Option<&'a Value> {
    lines.iter().find(|v| v["type"] == "slab_cache" && v["scope"] == scope && v["cache"] == cache)
}

/// The total slab_growth rows of process `pid` at a d_alloc call site.
pub fn dentry_rows(lines: &[Value], pid: u32) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "slab_growth" && v["scope"] == "total" && v["tgid"] == pid)
        .filter(|v| v["call_site"].as_str().is_some_and(|c| c.contains("d_alloc")))
        .collect()
}

pub fn summary(lines: &[Value]) -> &Value {
    lines.iter().find(|v| v["type"] == "slab_summary").expect("slab_summary")
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

pub fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// /proc/slabinfo's objsize of `cache`.
pub fn slabinfo_objsize(cache: &str) -> u64 {
    let t = std::fs::read_to_string("/proc/slabinfo").unwrap();
    t.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&cache)).then(|| f[3].parse().unwrap())
        })
        .unwrap()
}

/// The probe memtrace's ready line says it attached for `hook`.
pub fn probe(ready: &Value, hook: &str) -> Option<Value> {
    ready["probes"].as_array().unwrap().iter().find(|p| p["hook"] == hook).cloned()
}

/// The hooks memtrace says it attached for kmem_cache_alloc and kmem_cache_free.
pub fn kmem_strategies(mt: &Memtrace) -> (String, String) {
    let ready = mt.seen.iter().find(|v| v["type"] == "ready").expect("ready");
    let s = |hook: &str| {
        probe(ready, hook).unwrap_or_else(|| panic!("{hook} not attached: {ready}"))["strategy"]
            .as_str()
            .unwrap()
            .to_string()
    };
    (s("kmem:kmem_cache_alloc"), s("kmem:kmem_cache_free"))
}
