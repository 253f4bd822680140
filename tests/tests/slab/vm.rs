//! Slab growth on the VM's kernels (Debian 6.1 and 6.12, `cargo xtask vm-test`): their
//! classic kmem_cache_alloc record has no cache name (6.18's has), so the classic fallback
//! groups allocations by object size there; and global reclaim, which only the VM may
//! cause, frees dentries that --live attributes to the process that allocated them.
//! The host cases of this binary run in the VM too (tp_btf, drop_caches, filters).

use std::time::Duration;

use memtrace_tests::{Memtrace, Stress, Value, require_vm, run_memtrace};

use crate::common::{
    LIVE_DENTRY, TempDir, cache_line, dentry_rows, probe, slabinfo_objsize, stat_storm, summary, u,
};

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string()
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
    let dir = TempDir::new("vm-classic");
    let mut mt = Memtrace::start_with_env(
        &["slab", "--json", "1", "--top", "50"],
        &[("MEMTRACE_DISABLE", "tp_btf,raw_tp")],
    );
    let ready = mt.seen.iter().find(|v| v["type"] == "ready").unwrap().clone();
    let pid = stat_storm(&dir, "classic", N, "mt-vmslab-tp");
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    mt.wait_for(Duration::from_secs(3), |_| false);
    let lines = mt.stop();

    let alloc = probe(&ready, "kmem:kmem_cache_alloc").expect("alloc hook attached");
    assert_eq!(alloc["strategy"], "tracepoint");
    let named = format.contains(" name;");
    let want_cache =
        if named { "dentry".to_string() } else { format!("size-{}", slabinfo_objsize("dentry")) };
    if !named {
        assert!(alloc["limits"].as_str().is_some_and(|l| l.contains("names no cache")), "{alloc}");
    }
    assert_eq!(probe(&ready, "kmem:kmem_cache_free").unwrap()["strategy"], "tracepoint");
    let rows = dentry_rows(&lines, pid);
    let allocs: u64 = rows.iter().map(|r| u(&r["allocs"])).sum();
    assert!(allocs >= N * 9 / 10, "{allocs} of {N}: {rows:?}");
    assert!(rows.iter().all(|r| r["cache"] == want_cache.as_str()), "{rows:?}");
    assert_eq!(rows[0]["comm"], "mt-vmslab-tp");
    let dentry = cache_line(&lines, "total", "dentry").expect("dentry frees counted per cache");
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
    let dir = TempDir::new("vm-reclaim");
    let mut mt = Memtrace::start(LIVE_DENTRY);
    // Keep memtrace out of the OOM killer's way; the hog volunteers.
    std::fs::write(format!("/proc/{}/oom_score_adj", mt.pid()), "-1000").unwrap();
    let pid = stat_storm(&dir, "grow", N, "mt-vmslab-grow");
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
    let s = summary(&lines);
    assert!(u(&s["live"]["hits"]) >= u(&row["frees"]), "{s}");
    println!("global reclaim freed {} of {} dentries of pid {pid}", row["frees"], row["allocs"]);
}
