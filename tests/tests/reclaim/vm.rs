//! Reclaim stalls that need the whole machine (VM only, `cargo xtask vm-test`): global
//! direct reclaim when the working set exceeds RAM, and memory.high enforcement (cgroup v2,
//! kprobes). The guest has no disk and no swap, so the reclaimable memory is MADV_FREE
//! memory (on the file LRU, dropped without swap): nothing is OOM-killed.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Memtrace, Stress, Value, require_vm, stats_of};

use crate::common::{MIB, assert_sane, final_context, key_storm, summaries};

fn proc_kv(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()?.trim_end_matches(':') == key).then(|| it.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{key} not in {file}"))
}

fn allocstall() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("allocstall_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// A small gap between the low watermark (kswapd wakes) and the min one (allocations
/// reclaim themselves), so that kswapd cannot keep ahead: set while it lives.
struct TightWatermarks(Vec<(&'static str, String)>);

impl TightWatermarks {
    fn set() -> TightWatermarks {
        let sysctls = [("/proc/sys/vm/watermark_scale_factor", "1"), ("/proc/sys/vm/min_free_kbytes", "1024")];
        let saved = sysctls.iter().map(|(p, _)| (*p, std::fs::read_to_string(p).unwrap())).collect();
        for (p, v) in sysctls {
            std::fs::write(p, v).unwrap();
        }
        TightWatermarks(saved)
    }
}

impl Drop for TightWatermarks {
    fn drop(&mut self) {
        for (p, v) in &self.0 {
            let _ = std::fs::write(p, v.trim());
        }
    }
}

/// Every direct reclaim is one allocstall: memtrace's direct stalls over its run (the
/// final per-cgroup rows) equal the kernel's count over the same window (the final
/// context); returns that count. The run must trace memtrace too (`--include-self`).
fn assert_direct_is_allocstall(lines: &[Value]) -> u64 {
    let direct: u64 = summaries(lines, true)
        .iter()
        .filter(|r| r["kind"] == "direct" && r.get("pid").is_none())
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    let ctx = final_context(lines);
    assert_eq!(direct, ctx["vmstat"]["allocstall"].as_u64().unwrap(), "{ctx}");
    direct
}

/// MADV_FREE memory plus an anonymous hog larger than what is free: allocations outrun
/// kswapd and enter global direct reclaim, which drops the lazily freed pages.
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn global_direct_reclaim_is_seen_as_direct() {
    require_vm();
    let tight = TightWatermarks::set();
    let avail_mb = proc_kv("/proc/meminfo", "MemAvailable") / 1024;
    let lazy_mb = avail_mb * 45 / 100;
    let mut lazy = Stress::spawn(&["lazyfree", "--mb", &lazy_mb.to_string(), "--comm", "mt-vm-lazy"]);
    lazy.wait_line("ready", Duration::from_secs(300));
    // --include-self: held against allocstall, which counts memtrace's own stalls too.
    let mt = Memtrace::start(&["reclaim", "--json", "--include-self"]);
    let (stall0, oom0) = (allocstall(), proc_kv("/proc/vmstat", "oom_kill"));
    let free_mb = proc_kv("/proc/meminfo", "MemFree") / 1024;
    // Past free memory by 60% of the lazyfree pages: reclaim must drop them.
    let hog_mb = free_mb + lazy_mb * 6 / 10;
    let mut hog = Stress::spawn(&["hog", "--mb", &hog_mb.to_string(), "--exit", "--comm", "mt-vm-direct"]);
    hog.wait_line("ready", Duration::from_secs(600));
    assert_eq!(hog.wait_signal(Duration::from_secs(60)), None, "the hog was killed");
    let stalls = allocstall() - stall0;
    let lines = mt.stop();
    drop(tight);
    assert_eq!(proc_kv("/proc/vmstat", "oom_kill"), oom0, "something was OOM-killed");
    assert!(lazy.child.try_wait().unwrap().is_none(), "the lazyfree process died");
    assert!(stalls > 0, "the kernel counted no direct reclaim (allocstall)");

    let fin = summaries(&lines, true);
    let row = fin
        .iter()
        .find(|r| r["kind"] == "direct" && r["pid"] == hog.pid())
        .unwrap_or_else(|| panic!("no direct row for the hog: {fin:?}"));
    assert_eq!(row["comm"], "mt-vm-direct");
    assert!(row["nr_reclaimed"].as_u64().unwrap() > 0, "{row}");
    assert_sane(row);
    // Every direct reclaim is one allocstall, over memtrace's run; and covers the hog's.
    let direct = assert_direct_is_allocstall(&lines);
    let ctx = final_context(&lines);
    eprintln!(
        "direct reclaim: memtrace {direct} stalls (hog {} stalls, p50 {} us, p99 {} us, max {} us, \
         {} pages), allocstall {} over memtrace's run, {stalls} over the hog's",
        row["count"], row["p50_us"], row["p99_us"], row["max_us"], row["nr_reclaimed"],
        ctx["vmstat"]["allocstall"]
    );
    assert!(direct >= stalls, "memtrace {direct} < allocstall delta {stalls}");
    assert!(ctx["kswapd"]["wakes"].as_u64().unwrap() > 0, "kswapd never woke: {ctx}");
    for s in lines.iter().filter(|l| l["type"] == "reclaim_stall" && l["kind"] == "direct") {
        assert!(s["order"].as_i64().is_some_and(|o| o >= 0), "{s}");
        assert!(s["gfp_flags"].as_str().is_some_and(|g| g.contains("GFP")), "{s}");
    }
    let s = stats_of(&lines, "reclaim");
    assert_eq!((s["map_full"].as_u64(), s["ringbuf_drops"].as_u64()), (Some(0), Some(0)), "{s}");
}

/// memory.high below the working set: returns to user space pay reclaim (and penalty
/// sleeps) in mem_cgroup_handle_over_high, traced by kprobe as kind "high".
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn memory_high_enforcement_is_seen_as_high() {
    require_vm();
    let cg = MemCgroup::new("rc-high", 256 * MIB);
    assert!(cg.v2, "the VM runs cgroup v2");
    cg.write("memory.high", &(48 * MIB).to_string());
    let mt = Memtrace::start(&["reclaim", "--json", "-c", &cg.rel]);
    let ready = mt.seen[0].clone();
    assert!(
        ready["probes"].as_array().unwrap().iter().any(|p| p["hook"] == "memcg:over_high"),
        "memory.high hook not attached: {ready}"
    );
    let high0 = events(&cg, "high");
    let mut lazy = Stress::spawn(&["lazyfree", "--mb", "32", "--cgroup", cg.dir_str()]);
    lazy.wait_line("ready", Duration::from_secs(60));
    let mut hog = Stress::spawn(&["hog", "--mb", "40", "--exit", "--comm", "mt-vm-high", "--cgroup", cg.dir_str()]);
    hog.wait_line("ready", Duration::from_secs(300));
    assert_eq!(hog.wait_signal(Duration::from_secs(60)), None);
    let highs = events(&cg, "high") - high0;
    let lines = mt.stop();
    assert!(highs > 0, "the cgroup never went over memory.high");
    let fin = summaries(&lines, true);
    let row = fin
        .iter()
        .find(|r| r["kind"] == "high" && r["pid"] == hog.pid())
        .unwrap_or_else(|| panic!("no high row for the hog: {fin:?}"));
    assert_eq!(row["comm"], "mt-vm-high");
    assert_eq!(row["cgroup"], cg.rel.as_str());
    assert_sane(row);
    eprintln!("memory.high: {highs} high events, memtrace: {row}");
    // memory.high reclaim itself is memcg reclaim.
    assert!(fin.iter().any(|r| r["kind"] == "memcg" && r["pid"] == hog.pid()), "{fin:?}");
}

fn events(cg: &MemCgroup, key: &str) -> u64 {
    cg.read("memory.events")
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Global direct reclaim by 32 short-lived processes in turn, under `watch` with no
/// interval given and histogram buffers of 8 keys: nothing is lost (key_storm's checks),
/// and the direct stalls still equal the kernel's allocstall over the run.
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn a_global_storm_of_more_keys_than_the_buffers_hold_matches_allocstall() {
    require_vm();
    let tight = TightWatermarks::set();
    let oom0 = proc_kv("/proc/vmstat", "oom_kill");
    // A parked hog leaves 128 MiB available; each process then passes 192 MiB through
    // MADV_FREE chunks, so it reclaims its own earlier chunks, every time (its exit frees
    // them all again).
    let fill_mb = (proc_kv("/proc/meminfo", "MemAvailable") / 1024).saturating_sub(128);
    let mut fill = Stress::spawn(&["hog", "--mb", &fill_mb.to_string(), "--comm", "mt-vm-fill"]);
    fill.wait_line("ready", Duration::from_secs(600));
    let lines = key_storm(8, None, 32, 192);
    drop(tight);
    assert_eq!(proc_kv("/proc/vmstat", "oom_kill"), oom0, "something was OOM-killed");
    assert!(fill.child.try_wait().unwrap().is_none(), "the parked hog died");
    let direct = assert_direct_is_allocstall(&lines);
    let train: u64 = summaries(&lines, true)
        .iter()
        .filter(|r| r["kind"] == "direct" && r["comm"] == "mt-rc-train")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    eprintln!("global key storm: {direct} direct stalls, {train} by the storm's processes");
    assert!(train > 0, "the storm's processes never entered direct reclaim");
}
