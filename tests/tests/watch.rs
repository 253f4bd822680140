//! `memtrace watch`: every family at once, live. While workloads press each family, every
//! output interval carries each family's summaries, not just the end of the run. memtrace's
//! own process is dropped in the kernel unless `--include-self`; the ready record states
//! the BPF map memory the session holds.

use std::{collections::BTreeSet, time::Duration};

use memtrace_tests::{MemCgroup, Memtrace, Stress, TmpfsMount, Value, run_memtrace, stats_of};

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

/// Every process id a record names: any `pid`/`tgid` (or `*_pid`/`*_tgid`) member, at any
/// depth (slab callers and dentry directories, shmem writers and tasks, reclaim tasks).
fn pids_named(v: &Value, out: &mut BTreeSet<u64>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let is_pid = ["pid", "tgid"].iter().any(|p| k == p || k.ends_with(&format!("_{p}")));
                if let (true, Some(n)) = (is_pid, x.as_u64()) {
                    out.insert(n);
                }
                pids_named(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| pids_named(x, out)),
        _ => {}
    }
}

fn all_pids(lines: &[Value]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    lines.iter().for_each(|v| pids_named(v, &mut out));
    out
}

/// A 10 s `watch` while a child stats fresh missing names (a dentry storm): the child is
/// seen as a dentry caller, memtrace's own pid in no record at all (it reads /proc and
/// /sys and allocates dentries of its own, dropped in the kernel). With --include-self
/// memtrace's own pid appears (as a slab caller at least).
#[test]
fn own_process_is_dropped_unless_include_self() {
    let fs = TmpfsMount::new("self", 16 * MIB);
    let dir = fs.path("dentries");
    let run = |extra: &[&str]| {
        let mut args = vec!["watch", "--duration", "10", "--json"];
        args.extend_from_slice(extra);
        let mt = Memtrace::start(&args);
        let mut storm = Stress::spawn(&[
            "stat-missing", "--count", "20000", "--dir", dir.to_str().unwrap(), "--comm", "mt-self-slab",
        ]);
        storm.wait_line("done", Duration::from_secs(60));
        let (me, child) = (u64::from(mt.pid()), u64::from(storm.pid()));
        (mt.finish(), me, child)
    };

    let (lines, me, child) = run(&[]);
    let pids = all_pids(&lines);
    assert!(
        lines.iter().any(|v| v["type"] == "slab_growth" && v["cache"] == "dentry" && v["tgid"] == child),
        "the storm (pid {child}) is a dentry caller: {pids:?}"
    );
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|v| all_pids(std::slice::from_ref(*v)).contains(&me))
        .collect();
    assert!(mine.is_empty(), "memtrace's own pid {me} in records: {mine:?}");

    let (lines, me, child) = run(&["--include-self"]);
    let pids = all_pids(&lines);
    assert!(pids.contains(&child), "the storm (pid {child}): {pids:?}");
    assert!(pids.contains(&me), "--include-self: memtrace's own pid {me} in no record: {pids:?}");
}

fn ready_map_bytes(cmd: &str) -> (u64, u64) {
    let lines = Memtrace::start(&[cmd, "--duration", "1", "--json"]).finish();
    let ready = lines.iter().find(|v| v["type"] == "ready").expect("ready");
    let (bytes, maps) = (ready["bpf_map_bytes"].as_u64(), ready["bpf_maps"].as_u64());
    let (Some(bytes), Some(maps)) = (bytes, maps) else { panic!("{cmd}: {ready}") };
    assert!(bytes > 0 && maps > 0, "{cmd}: {ready}");
    (bytes, maps)
}

/// The ready record states the session's BPF map memory, and `doctor` that of a session
/// with every family. `memtrace oom` leaves the other families' maps at one entry each
/// (their ring buffers at one page): measured on the 2-CPU development host, watch held
/// 60.6 MB (reclaim's per-CPU histograms 31 MB of it, shmem's preallocated maps and
/// slab's callers most of the rest), oom 2.9 MB (EVENTS at its 1 MiB minimum, the oom
/// rings). oom's candidate ring grows with the host's task count, so the bound is a
/// quarter, not the measured twentieth.
#[test]
fn ready_and_doctor_state_the_bpf_map_memory() {
    let (watch, watch_maps) = ready_map_bytes("watch");
    let (oom, oom_maps) = ready_map_bytes("oom");
    eprintln!("bpf maps: watch {watch} bytes ({watch_maps} maps), oom {oom} bytes ({oom_maps} maps)");
    assert!(oom < watch / 4, "oom holds {oom} bytes of maps, watch {watch}");
    let (code, out, err) = run_memtrace(&["doctor", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doctor: Value = serde_json::from_str(out.trim()).expect("doctor JSON");
    assert!(doctor["bpf_map_bytes"].as_u64().is_some_and(|b| b > oom), "{doctor}");
    assert!(doctor["bpf_maps"].as_u64().is_some_and(|n| n > 0), "{doctor}");
}
