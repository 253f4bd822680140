//! Slab growth on the VM's kernels (Debian 6.1 and 6.12, `cargo xtask vm-test`): their
//! classic kmem_cache_alloc record has no cache name (6.18's has), so the classic fallback
//! groups allocations by object size there; and global reclaim, which only the VM may
//! cause, frees dentries that --live attributes to the process that allocated them.
//! The host cases of tests/slab.rs run in the VM too (tp_btf, drop_caches, filters).

use std::{path::PathBuf, time::Duration};

use memtrace_tests::{Memtrace, Stress, Value, require_vm, run_memtrace};

/// Negative dentries need a filesystem that keeps them: the VM's /tmp is the initramfs
/// (ramfs deletes them at once), its cgroup2 hierarchy is kernfs (which keeps them).
struct CgDir(PathBuf);

impl CgDir {
    fn new(name: &str) -> CgDir {
        let p = PathBuf::from(format!("/sys/fs/cgroup/mt-vmslab-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&p);
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        CgDir(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for CgDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string()
}

/// Runs `stat-missing` over `n` paths in `dir` and checks they were all missing.
fn stat_storm(n: u64, dir: &str, comm: &str) -> u32 {
    let count = n.to_string();
    let mut s = Stress::spawn(&["stat-missing", "--count", &count, "--dir", dir, "--comm", comm]);
    let done: u64 = s.wait_line("done", Duration::from_secs(600)).parse().unwrap();
    assert_eq!(done, n);
    s.pid()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn objsize(cache: &str) -> u64 {
    let t = std::fs::read_to_string("/proc/slabinfo").unwrap();
    t.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&cache)).then(|| f[3].parse().unwrap())
        })
        .unwrap()
}

/// 6.1/6.12: tp_btf is chosen (kmem_cache_alloc passes `struct kmem_cache *` as argument 2
/// there as on 6.18); forced to the classic tracepoint, allocations without a cache name in
/// the record are grouped by object size with their callers, and frees (whose record has
/// the name) count per cache.
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn vm_tracepoint_layouts_of_this_kernel() {
    require_vm();
    let (code, out, err) = run_memtrace(&["doctor", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doctor: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let chosen = |hook: &str| {
        doctor["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hook"] == hook)
            .and_then(|h| h["chosen"]["strategy"].as_str())
            .unwrap_or_else(|| panic!("{hook} has no strategy: {doctor}"))
            .to_string()
    };
    assert_eq!(chosen("kmem:kmem_cache_alloc"), "tp_btf", "{doctor}");
    assert_eq!(chosen("kmem:kmem_cache_free"), "tp_btf", "{doctor}");

    let format =
        std::fs::read_to_string("/sys/kernel/tracing/events/kmem/kmem_cache_alloc/format").unwrap();
    let r = release();
    if r.starts_with("6.1.") || r.starts_with("6.12.") {
        assert!(!format.contains(" name;"), "{r}: kmem_cache_alloc has no name field\n{format}");
    }

    const N: u64 = 30_000;
    let dir = CgDir::new("classic");
    // SAFETY: the tests of this binary run on one thread (--test-threads=1).
    unsafe { std::env::set_var("MEMTRACE_DISABLE", "tp_btf,raw_tp") };
    let mut mt = Memtrace::start(&["slab", "--json", "1", "--top", "50"]);
    unsafe { std::env::remove_var("MEMTRACE_DISABLE") };
    let ready = mt.seen.iter().find(|v| v["type"] == "ready").unwrap().clone();
    let pid = stat_storm(N, dir.path(), "mt-vmslab-tp");
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    mt.wait_for(Duration::from_secs(3), |_| false);
    let lines = mt.stop();

    let probe = |hook: &str| {
        ready["probes"].as_array().unwrap().iter().find(|p| p["hook"] == hook).cloned()
    };
    let alloc = probe("kmem:kmem_cache_alloc").expect("alloc hook attached");
    assert_eq!(alloc["strategy"], "tracepoint");
    let named = format.contains(" name;");
    let want_cache =
        if named { "dentry".to_string() } else { format!("size-{}", objsize("dentry")) };
    if !named {
        assert!(alloc["limits"].as_str().is_some_and(|l| l.contains("names no cache")), "{alloc}");
    }
    assert_eq!(probe("kmem:kmem_cache_free").unwrap()["strategy"], "tracepoint");
    let rows: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "slab_growth" && v["scope"] == "total" && v["tgid"] == pid)
        .filter(|v| v["call_site"].as_str().is_some_and(|c| c.contains("d_alloc")))
        .collect();
    let allocs: u64 = rows.iter().map(|r| u(&r["allocs"])).sum();
    assert!(allocs >= N * 9 / 10, "{allocs} of {N}: {rows:?}");
    assert!(rows.iter().all(|r| r["cache"] == want_cache.as_str()), "{rows:?}");
    assert_eq!(rows[0]["comm"], "mt-vmslab-tp");
    let dentry = lines
        .iter()
        .find(|v| v["type"] == "slab_cache" && v["scope"] == "total" && v["cache"] == "dentry")
        .expect("dentry frees counted per cache");
    assert!(u(&dentry["frees"]) >= N * 9 / 10, "drop_caches frees: {dentry}");
}

/// Global memory pressure (VM only): a process grows the dcache with negative dentries, a
/// hog then takes most of memory, and reclaim shrinks the dcache; with --live the frees
/// count against the process that allocated the dentries.
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn vm_global_reclaim_frees_count_against_the_allocator() {
    require_vm();
    const N: u64 = 200_000;
    let dir = CgDir::new("reclaim");
    let mut mt = Memtrace::start(&[
        "slab",
        "--json",
        "--cache",
        "dentry",
        "--live",
        "1",
        "--top",
        "1000",
    ]);
    // Keep memtrace out of the OOM killer's way; the hog volunteers.
    std::fs::write(format!("/proc/{}/oom_score_adj", mt.pid()), "-1000").unwrap();
    let pid = stat_storm(N, dir.path(), "mt-vmslab-grow");
    mt.wait_for(Duration::from_secs(2), |_| false);

    let avail_mb = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        / 1024;
    // More than is available: reclaim has to shrink the dcache (or the OOM killer takes
    // the hog, which volunteers).
    let mb = (avail_mb + 64).to_string();
    let mut hog = Stress::spawn(&["hog", "--mb", &mb, "--comm", "mt-vmslab-hog", "--adj", "1000"]);
    // Either it got its memory (and reclaim made room) or the OOM killer took it.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if hog.child.try_wait().unwrap().is_some() {
            break;
        }
        mt.wait_for(Duration::from_millis(500), |_| false);
        let touched = std::fs::read_to_string(format!("/proc/{}/status", hog.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        if touched / 1024 + 8 >= mb.parse::<u64>().unwrap() || std::time::Instant::now() > deadline
        {
            break;
        }
    }
    drop(hog);
    mt.wait_for(Duration::from_secs(2), |_| false);
    let lines = mt.stop();
    let row = lines
        .iter()
        .find(|v| v["type"] == "slab_growth" && v["scope"] == "total" && v["tgid"] == pid)
        .expect("the grower's row");
    assert!(u(&row["allocs"]) >= N * 9 / 10, "{row}");
    assert!(u(&row["frees"]) > 0, "reclaim freed some of its dentries: {row}");
    let s = lines.iter().find(|v| v["type"] == "slab_summary").unwrap();
    assert!(u(&s["live"]["hits"]) >= u(&row["frees"]), "{s}");
    println!("global reclaim freed {} of {} dentries of pid {pid}", row["frees"], row["allocs"]);
}
