//! `memtrace watch`: every family at once, live. While workloads press each family, every
//! output interval carries each family's summaries, not just the end of the run.

use std::{collections::BTreeSet, time::Duration};

use memtrace_tests::{MemCgroup, Memtrace, Stress, TmpfsMount, Value, stats_of};

const MIB: u64 = 1024 * 1024;
/// Intervals that must each carry every family's summaries.
const TICKS: usize = 4;

/// Distinct "time" stamps of the records of `ty` that pass `pred`: one per interval in
/// which the family emitted them (a report stamps all its records with one time).
fn intervals(lines: &[Value], ty: &str, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|v| v["type"] == ty && pred(v))
        .filter_map(|v| v["time"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_interval_carries_every_family_while_workloads_run() {
    let cg = MemCgroup::new("watch", 32 * MIB);
    let fs = TmpfsMount::new("watch", 64 * MIB);
    let mut mt = Memtrace::start(&["watch", "1", "--json"]);
    // Reclaim: a CPU-bound memcg reclaim storm (MADV_FREE memory touched again and again in
    // a cgroup half its size; no swap needed).
    let mut storm = Stress::spawn(&[
        "lazyfree", "--mb", "64", "--churn", "--comm", "mt-watch-rc", "--cgroup", cg.dir_str(),
    ]);
    storm.wait_line("ready", Duration::from_secs(60));
    // Slab: unique missing paths stat-ed without end (on tmpfs the negative dentries are
    // freed at once, so the cache churns without growing).
    let dir = fs.path("dentries");
    let mut stats = Stress::spawn(&[
        "stat-missing", "--count", "1000000000", "--dir", dir.to_str().unwrap(), "--comm", "mt-watch-slab",
    ]);
    stats.wait_line("ready", Duration::from_secs(60));
    // Shmem: a file that stays on the tmpfs.
    let mut w = Stress::spawn(&[
        "tmpfs-write", "--path", fs.path("data").to_str().unwrap(), "--mb", "8", "--comm", "mt-watch-shm",
    ]);
    w.wait_line("ready", Duration::from_secs(60));
    let mount = fs.dir_str().to_string();
    mt.collect_until(Duration::from_secs(120), "every family's records in as many intervals", |l| {
        intervals(l, "reclaim_summary", |v| v["final"] == false && v["comm"] == "mt-watch-rc").len() >= TICKS
            && intervals(l, "slab_cache", |v| v["scope"] == "interval" && v["cache"] == "dentry").len() >= TICKS
            && intervals(l, "shmem_mount", |v| v["final"] == false && v["mount"] == mount.as_str()).len() >= TICKS
    });
    drop(stats);
    drop(storm);
    let lines = mt.stop();
    // The last interval's rows and the whole run's: the run's summaries come at the end too.
    assert!(lines.iter().any(|v| v["type"] == "reclaim_summary" && v["final"] == true), "final reclaim");
    assert!(lines.iter().any(|v| v["type"] == "slab_cache" && v["scope"] == "total"), "slab totals");
    assert!(lines.iter().any(|v| v["type"] == "shmem_mount" && v["final"] == true), "final shmem");
    for family in ["oom", "reclaim", "slab", "shmem"] {
        let s = stats_of(&lines, family);
        assert_eq!(s["ringbuf_drops"], 0, "{family}: {s}");
        assert_eq!(s["undecodable"], 0, "{family}: {s}");
    }
}
