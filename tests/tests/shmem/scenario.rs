//! Shared by the host and VM cases: helpers and the tmpfs scenario.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Memtrace, Stress, TmpfsMount, Value, now_ms, stats_of};

pub const MIB: u64 = 1024 * 1024;
/// "Near zero": what may still wait in per-CPU LRU batches (31 pages per CPU) or be
/// allocated by unrelated tasks.
pub const NEAR_ZERO: u64 = MIB;
pub const WAIT: Duration = Duration::from_secs(30);

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

pub fn is(v: &Value, ty: &str) -> bool {
    v["type"] == ty
}

pub fn strategy<'a>(ready: &'a Value, hook: &str) -> Option<&'a str> {
    ready["probes"].as_array()?.iter().find(|p| p["hook"] == hook)?["strategy"].as_str()
}

/// Starts the mt-stress `workload` (with its own `args`) writing `mb` MiB under the name
/// `comm`, inside `cg` when given.
pub fn writer(
    workload: &str,
    args: &[&str],
    mb: u64,
    comm: &str,
    cg: Option<&MemCgroup>,
) -> Stress {
    let mb = mb.to_string();
    let mut all = vec![workload];
    all.extend_from_slice(args);
    all.extend(["--mb", &mb, "--comm", comm]);
    if let Some(cg) = cg {
        all.extend(["--cgroup", cg.dir_str()]);
    }
    Stress::spawn(&all)
}

/// Waits for the record of `comm`'s pages in inode `ino` with at least `bytes` freed;
/// almost nothing of them may be live then.
pub fn assert_freed(mt: &mut Memtrace, comm: &str, ino: u64, bytes: u64) {
    let rec = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_usage")
                && v["comm"] == comm
                && v["inode"] == ino
                && u(&v["freed_bytes"]) >= bytes
        })
        .unwrap_or_else(|| {
            panic!("{comm}: never {bytes} bytes freed from inode {ino}: {:?}", mt.seen)
        });
    assert!(u(&rec["live_bytes"]) <= NEAR_ZERO, "{rec}");
}

/// Clean stats for the shmem family.
pub fn assert_clean_stats(lines: &[Value]) {
    let s = stats_of(lines, "shmem");
    assert!(u(&s["events"]) > 0, "{s}");
    assert_eq!(s["ringbuf_drops"], 0, "{s}");
    assert_eq!(s["read_errors"], 0, "{s}");
    assert_eq!(s["map_full"], 0, "{s}");
    assert_eq!(s["undecodable"], 0, "{s}");
}

/// The tmpfs scenario of the issue: 64 MiB written into a fresh tmpfs by a process that
/// exits; then the file is deleted. Returns memtrace's lines. `env` selects strategies;
/// `attributions` are the acceptable ways the writer may have been identified.
pub fn tmpfs_scenario(tag: &str, env: &[(&str, &str)], attributions: &[&str]) -> Vec<Value> {
    let cg = MemCgroup::new(&format!("shmem-{tag}"), 256 * MIB);
    let fs = TmpfsMount::new(&format!("shmem-{tag}"), 128 * MIB);
    let mut mt = Memtrace::start_with_env(&["shmem", "1", "--json", "--top", "50"], env);
    let comm = format!("mt-{tag}");
    let file = fs.path("data");
    let mut w = writer("tmpfs-write", &["--path", file.to_str().unwrap()], 64, &comm, Some(&cg));
    let ino: u64 = w.wait_line("ready", WAIT).parse().expect("inode");
    assert_eq!(w.wait_signal(WAIT), None, "the writer exits by itself");
    // Every page is in the file now: records stamped later describe the finished file.
    let written = now_ms();
    let pid = w.pid();
    let mount = fs.dir_str();

    let rec = mt.wait_after(written, WAIT, &format!(">= 60 MiB attributed to {comm} on {mount}"), |v| {
        is(v, "shmem_usage")
            && v["mount"] == mount
            && v["comm"] == comm.as_str()
            && v["live_bytes"].as_u64().is_some_and(|b| b >= 60 * MIB)
            && v["writer_alive"] == false
    });
    assert_eq!(rec["kind"], "tmpfs", "{rec}");
    assert_eq!(rec["inode"], ino, "{rec}");
    assert_eq!(rec["path"], file.to_str().unwrap(), "{rec}");
    assert_eq!(rec["name"], "data", "{rec}");
    assert_eq!(rec["tgid"], pid, "{rec}");
    assert_eq!(rec["cgroup"], cg.rel.as_str(), "{rec}");
    assert!(u(&rec["allocated_bytes"]) <= 64 * MIB, "{rec}");
    assert_eq!(rec["freed_bytes"], 0, "{rec}");
    let how = rec["attribution"].as_str().unwrap().to_string();
    assert!(
        attributions.contains(&how.as_str()),
        "attribution {how}, expected one of {attributions:?}"
    );

    // The mount, as taken after the writer exited: df agrees, nothing pre-existing on a
    // fresh tmpfs.
    let m = mt.wait_after(written, WAIT, &format!("a shmem_mount record of {mount} with >= 60 MiB live"), |v| {
        is(v, "shmem_mount")
            && v["mount"] == mount
            && v["live_bytes"].as_u64().is_some_and(|b| b >= 60 * MIB)
    });
    assert_eq!(m["kind"], "tmpfs");
    assert_eq!(u(&m["df_used_bytes"]), fs.used(), "{m}");
    assert!(u(&m["df_used_bytes"]) >= 64 * MIB, "{m}");
    assert_eq!(m["preexisting_bytes"], 0, "{m}");
    let unexplained = m["unexplained_bytes"].as_i64().unwrap();
    assert!(unexplained.unsigned_abs() <= NEAR_ZERO, "{m}");
    let r = mt.wait_after(written, WAIT, "a shmem_reconcile record with >= 60 MiB attributed", |v| {
        is(v, "shmem_reconcile") && u(&v["attributed_live_bytes"]) >= 60 * MIB
    });
    assert!(u(&r["meminfo_shmem_bytes"]) >= 64 * MIB, "{r}");

    // Delete: the live bytes fall to near zero, freed bytes appear (records taken after the
    // unlink returned, so after the truncation).
    std::fs::remove_file(&file).unwrap();
    let deleted = now_ms();
    let rec = mt.wait_after(deleted, WAIT, "the file's shmem_usage record with >= 60 MiB freed", |v| {
        is(v, "shmem_usage")
            && v["inode"] == ino
            && v["mount"] == mount
            && v["tgid"] == pid
            && u(&v["freed_bytes"]) >= 60 * MIB
    });
    assert!(u(&rec["live_bytes"]) <= NEAR_ZERO, "{rec}");
    assert!(u(&rec["file_live_bytes"]) <= NEAR_ZERO, "{rec}");
    let m = mt.wait_after(deleted, WAIT, "the mount's record with >= 60 MiB freed", |v| {
        is(v, "shmem_mount") && v["mount"] == mount && u(&v["freed_bytes"]) >= 60 * MIB
    });
    assert!(u(&m["live_bytes"]) <= NEAR_ZERO, "{m}");
    assert!(u(&m["df_used_bytes"]) <= NEAR_ZERO, "{m}");
    let lines = mt.stop();
    assert_clean_stats(&lines);
    // The writer's own totals: all 64 MiB from NR_SHMEM or an exact allocation hook; the
    // draining task misses the last per-CPU batches.
    let wr = lines
        .iter()
        .rev()
        .find(|v| is(v, "shmem_writer") && v["tgid"] == pid)
        .unwrap_or_else(|| panic!("no shmem_writer for {pid}"));
    // A task's entry keeps the name and cgroup it had when first seen: with drain-task
    // attribution that can be before the writer renamed itself and joined its cgroup (it
    // drained someone else's batch at startup).
    if how != "drain_task" {
        assert_eq!(wr["comm"], comm.as_str(), "{wr}");
        assert_eq!(wr["cgroup"], cg.rel.as_str(), "{wr}");
    }
    let want = if how == "drain_task" { 60 * MIB } else { 64 * MIB };
    assert!(u(&wr["allocated_bytes"]) >= want, "{wr}");
    if attributions == ["exact"] {
        // In the allocator's context, every page: the file's writer and the task totals.
        assert_eq!(u(&wr["allocated_bytes"]), 64 * MIB, "{wr}");
        let rec = lines
            .iter()
            .rev()
            .find(|v| is(v, "shmem_usage") && v["tgid"] == pid && v["inode"] == ino)
            .expect("usage record");
        assert_eq!(u(&rec["allocated_bytes"]), 64 * MIB, "{rec}");
    }
    if wr["source"] == "nr_shmem" {
        assert_eq!(u(&wr["allocated_bytes"]), 64 * MIB, "NR_SHMEM counts every page: {wr}");
    }
    lines
}
