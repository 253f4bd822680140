//! What the reclaim tests share: picking rows out of memtrace's records and the checks
//! every run must pass.

use std::collections::HashMap;

use memtrace_tests::{Value, stats_of};

pub const MIB: u64 = 1024 * 1024;

/// The test-only switch that lowers the kernel's histogram buffers to this many keys.
pub const KEYS_MAX_ENV: &str = "MEMTRACE_RECLAIM_KEYS_MAX";

/// `reclaim_summary` rows: final (whole run) or interval ones.
pub fn summaries(lines: &[Value], is_final: bool) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "reclaim_summary" && l["final"] == is_final).collect()
}

pub fn proc_row<'a>(rows: &[&'a Value], kind: &str, pid: u32) -> Option<&'a Value> {
    rows.iter().copied().find(|r| r["kind"] == kind && r["pid"] == pid)
}

pub fn cgroup_row<'a>(rows: &[&'a Value], kind: &str, cgroup: &str) -> Option<&'a Value> {
    rows.iter().copied().find(|r| r["kind"] == kind && r.get("pid").is_none() && r["cgroup"] == cgroup)
}

/// The whole run's `reclaim_context`.
pub fn final_context(lines: &[Value]) -> &Value {
    lines.iter().find(|l| l["type"] == "reclaim_context" && l["final"] == true).expect("final context")
}

pub fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

pub fn count(v: &Value) -> u64 {
    v["count"].as_u64().unwrap_or_else(|| panic!("count in {v}"))
}

/// Percentiles positive and ordered, bounded by max, max by the total.
pub fn assert_sane(r: &Value) {
    let p: Vec<f64> = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"].iter().map(|k| num(r, k)).collect();
    assert!(p[0] > 0.0, "p50 not positive: {r}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {r}");
    let total = num(r, "total_us");
    assert!(total >= p[4] - 0.001, "total below max: {r}");
    assert!(total <= p[4] * count(r) as f64 + 0.001, "total above count x max: {r}");
    assert!(count(r) >= 1, "{r}");
    assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
}

/// Every row of the run: sane; per-cgroup rows omit pid and comm and carry their
/// distribution, whose counts add up to the row's.
pub fn assert_rows_sane(lines: &[Value]) {
    for r in lines.iter().filter(|l| l["type"] == "reclaim_summary") {
        assert_sane(r);
        if r.get("pid").is_none() {
            assert!(r.get("comm").is_none(), "cgroup row with a comm: {r}");
            let h = r["histogram"].as_array().unwrap_or_else(|| panic!("cgroup row without a histogram: {r}"));
            let n: u64 = h.iter().map(|b| b[2].as_u64().expect("bucket count")).sum();
            assert_eq!(n, count(r), "histogram counts vs count: {r}");
        } else {
            assert!(r["comm"].as_str().is_some_and(|c| !c.is_empty()), "{r}");
        }
    }
}

/// The kernel counted exactly what the final rows hold, nothing was lost.
pub fn assert_stats_match(lines: &[Value]) {
    let s = stats_of(lines, "reclaim");
    let rows: u64 = summaries(lines, true).iter().filter(|r| r.get("pid").is_none()).map(|r| count(r)).sum();
    assert_eq!(s["events"].as_u64().unwrap(), rows, "kernel-counted stalls vs final cgroup rows: {s}");
    assert_eq!(s["map_full"], 0, "{s}");
    assert_eq!(s["ringbuf_drops"], 0, "{s}");
    assert_eq!(s["read_errors"], 0, "{s}");
    assert_eq!(s["undecodable"], 0, "{s}");
    let stalls = lines.iter().filter(|l| l["type"] == "reclaim_stall").count() as u64;
    assert_eq!(s["received"].as_u64().unwrap(), stalls, "{s}");
    assert_eq!(final_context(lines)["flip_timeouts"], 0, "a buffer flip timed out");
}

/// Interval rows add up to the final rows (double-buffered kernel maps lose nothing).
pub fn assert_intervals_add_up(lines: &[Value]) {
    let mut sums: HashMap<(String, String), u64> = HashMap::new();
    for r in summaries(lines, false).iter().filter(|r| r.get("pid").is_none()) {
        *sums.entry((r["kind"].to_string(), r["cgroup"].to_string())).or_default() += count(r);
    }
    assert!(!sums.is_empty(), "no interval rows");
    for r in summaries(lines, true).iter().filter(|r| r.get("pid").is_none()) {
        let k = (r["kind"].to_string(), r["cgroup"].to_string());
        assert_eq!(sums.get(&k).copied().unwrap_or(0), count(r), "intervals vs final for {k:?}");
    }
}

/// A storm of many short-lived processes, each stalling in reclaim and exiting
/// (`mt-stress lazyfree --forks`), under `watch` with its default interval and the kernel's
/// histogram buffers lowered to `keys` keys: far more distinct (kind, process, cgroup) keys
/// than a buffer holds over the run, fewer than that in any second. `-c`: the storm's
/// cgroup, if any (its own limit presses it); `mb`: each process's pass. Returns every line.
pub fn key_storm(keys: u32, cgroup: Option<&memtrace_tests::MemCgroup>, forks: u32, mb: u64) -> Vec<Value> {
    use memtrace_tests::{Memtrace, Stress};
    let keys_s = keys.to_string();
    // --include-self: the totals are held against the kernel's own counters (allocstall),
    // which count memtrace's stalls too.
    let mut args = vec!["watch", "--json", "--include-self"];
    if let Some(cg) = cgroup {
        args.extend(["-c", cg.rel.as_str()]);
    }
    let mt = Memtrace::start_with_env(&args, &[(KEYS_MAX_ENV, keys_s.as_str())]);
    let (forks_s, mb_s) = (forks.to_string(), mb.to_string());
    let mut train_args =
        vec!["lazyfree", "--mb", &mb_s, "--forks", &forks_s, "--pause-ms", "100", "--comm", "mt-rc-train"];
    if let Some(cg) = cgroup {
        train_args.extend(["--cgroup", cg.dir_str()]);
    }
    let mut train = Stress::spawn(&train_args);
    train.wait_line("done", std::time::Duration::from_secs(900));
    assert_eq!(train.wait_signal(std::time::Duration::from_secs(30)), None, "the storm was killed");
    let lines = mt.stop();
    // Keys the kernel saw: at least one per (kind, process) row.
    let rows = summaries(&lines, true).iter().filter(|r| r.get("pid").is_some()).count();
    let trains = summaries(&lines, true).iter().filter(|r| r["comm"] == "mt-rc-train").count();
    eprintln!("key storm: {rows} (kind, process) rows, {trains} of the storm, buffers of {keys} keys");
    assert!(trains as u32 > 2 * keys, "only {trains} storm keys for buffers of {keys}");
    assert!(
        summaries(&lines, false).iter().any(|r| r["comm"] == "mt-rc-train"),
        "no interval showed the storm: watch's default interval did not run"
    );
    assert_stats_match(&lines);
    assert_rows_sane(&lines);
    assert_intervals_add_up(&lines);
    lines
}
