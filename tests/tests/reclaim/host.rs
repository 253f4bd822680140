//! Reclaim stalls on the real kernel: processes press small memory cgroups (page-cache
//! writes and reads, anonymous growth over MADV_FREE memory) and memtrace must count the
//! stalls consistently with the cgroup's own counters, give ordered percentiles, name the
//! pressing process and its cgroup, and never blame a process outside it.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{
    MemCgroup, Memtrace, Stress, Value, memtrace_bin, require_root, run_memtrace,
    stats_of, stress_bin,
};

use crate::common::{
    MIB, assert_intervals_add_up, assert_rows_sane, assert_stats_match, cgroup_row, count,
    final_context, key_storm, num, proc_row, summaries,
};

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// memcg stalls in a cgroup against the cgroup's own counter: each memcg reclaim follows
/// a failed charge (v1 memory.failcnt counts every failed charge, including the batch
/// retries that need no reclaim, so stalls <= failcnt); v2 memory.events "max" counts
/// charges that went to reclaim (once per charge on 6.6+, once per attempt before), and
/// a charge retries reclaim at most MAX_RECLAIM_RETRIES (16) times.
fn assert_consistent_with_cgroup(cg: &MemCgroup, stalls: u64, hits: u64) {
    assert!(stalls >= 1 && hits >= 1, "stalls {stalls}, limit hits {hits}");
    if cg.v2 {
        assert!(stalls >= hits && stalls <= 17 * hits, "memcg stalls {stalls} vs memory.events max {hits}");
    } else {
        assert!(stalls <= hits, "memcg stalls {stalls} vs memory.failcnt {hits}");
    }
}

/// Page-cache writes and reads in a 64 MiB cgroup (host: files on the root disk). Writes
/// make reclaim wait for writeback. A process outside the cgroup churns page cache too.
/// Host only: the VM has no block device (its files live in tmpfs, not reclaimable without
/// swap), so vm-test lists it as skipped; anonymous growth over MADV_FREE memory covers
/// memcg reclaim there.
#[test]
fn host_only_memcg_page_cache_stalls_are_counted_and_attributed() {
    require_root();
    let dir = PathBuf::from("/var/tmp");
    let me = std::process::id();
    let cg = MemCgroup::new("rc-pc", 64 * MIB);
    let outside_file = dir.join(format!("memtrace-rc-outside-{me}"));
    let press_file = dir.join(format!("memtrace-rc-press-{me}"));
    let mut outsider = Stress::spawn(&[
        "pagecache", "--path", outside_file.to_str().unwrap(), "--mb", "96", "--read", "--loop",
        "--comm", "mt-rc-outside",
    ]);
    let mut mt = Memtrace::start(&["reclaim", "--json", "--min-latency", "5ms", "1"]);
    let hits0 = cg.limit_hits();
    let mut presser = Stress::spawn(&[
        "pagecache", "--path", press_file.to_str().unwrap(), "--mb", "256", "--read", "--passes",
        "2", "--exit", "--comm", "mt-rc-press", "--cgroup", cg.dir_str(),
    ]);
    presser.wait_line("done", Duration::from_secs(180));
    assert_eq!(presser.wait_signal(Duration::from_secs(30)), None, "the presser was killed");
    let hits = cg.limit_hits() - hits0;
    // One more interval so the last stalls show in an interval too.
    mt.wait_for(Duration::from_secs(5), |_| false);
    let lines = mt.stop();
    let _ = outsider.child.kill();

    let fin = summaries(&lines, true);
    let row = proc_row(&fin, "memcg", presser.pid()).unwrap_or_else(|| panic!("no memcg row for the presser: {fin:?}"));
    assert_eq!(row["comm"], "mt-rc-press", "{row}");
    assert_eq!(row["cgroup"], cg.rel.as_str(), "{row}");
    assert!(row["nr_reclaimed"].as_u64().unwrap() > 0, "{row}");
    let cgr = cgroup_row(&fin, "memcg", &cg.rel).unwrap_or_else(|| panic!("no memcg row for {}: {fin:?}", cg.rel));
    assert_eq!(count(cgr), count(row), "the presser is the only process in the cgroup");
    assert_eq!(cgr["cgroup_id"].as_u64(), Some(ino(&cg.dir)), "{cgr}");
    assert_consistent_with_cgroup(&cg, count(cgr), hits);

    // Nothing names the outsider.
    for l in &lines {
        assert_ne!(l["pid"], outsider.pid(), "outsider blamed: {l}");
        assert_ne!(l["comm"], "mt-rc-outside", "outsider blamed: {l}");
    }
    // Slow stalls: named, in the cgroup, above the threshold; memcg ones carry the
    // allocation; writes made some wait on writeback for milliseconds.
    let stalls: Vec<&Value> = lines.iter().filter(|l| l["type"] == "reclaim_stall").collect();
    assert!(stalls.iter().any(|s| s["pid"] == presser.pid()), "no slow stall by the presser");
    for s in &stalls {
        assert!(num(s, "duration_us") >= 5000.0, "{s}");
        if s["pid"] == presser.pid() {
            assert_eq!(s["comm"], "mt-rc-press", "{s}");
            assert_eq!(s["tid"], presser.pid(), "{s}");
            assert_eq!(s["cgroup"], cg.rel.as_str(), "{s}");
            match s["kind"].as_str().unwrap() {
                "memcg" => {
                    assert!(s["order"].as_i64().is_some_and(|o| o >= 0), "{s}");
                    assert!(s["gfp_flags"].as_str().is_some_and(|g| g.contains("GFP_")), "{s}");
                    assert!(s["gfp_mask"].as_u64().is_some_and(|m| m != 0), "{s}");
                }
                "throttle" => assert!(s["reason"].is_string(), "{s}"),
                other => panic!("unexpected {other} stall in the cgroup: {s}"),
            }
        }
    }
    let slow_memcg = stalls.iter().filter(|s| s["pid"] == presser.pid() && s["kind"] == "memcg").count() as u64;
    assert!(slow_memcg <= count(row));
    let ctx = final_context(&lines);
    assert!(ctx["throttle"]["writeback"]["count"].as_u64().is_some_and(|n| n > 0), "no writeback throttling: {ctx}");
    assert!(ctx["notes"].to_string().contains("written back"), "{ctx}");
    assert!(ctx["notes"].to_string().contains(&cg.rel), "{ctx}");
    assert!(ctx["sysctl"]["min_free_kbytes"].as_i64().is_some_and(|v| v > 0), "{ctx}");
    assert!(ctx["zones"].as_array().is_some_and(|z| !z.is_empty()), "{ctx}");

    assert_rows_sane(&lines);
    assert_stats_match(&lines);
    assert_intervals_add_up(&lines);
}

fn ino(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(p).unwrap().ino()
}

/// Anonymous growth in a 96 MiB cgroup that already holds 64 MiB of MADV_FREE memory:
/// memcg reclaim drops the lazily freed pages (no swap needed) and nothing is OOM-killed.
#[test]
fn anon_growth_reclaims_lazyfree_memory_without_oom() {
    let cg = MemCgroup::new("rc-anon", 96 * MIB);
    let mt = Memtrace::start(&["reclaim", "--json"]);
    let mut lazy = Stress::spawn(&["lazyfree", "--mb", "64", "--comm", "mt-rc-lazy", "--cgroup", cg.dir_str()]);
    lazy.wait_line("ready", Duration::from_secs(60));
    let hits0 = cg.limit_hits();
    let mut hog = Stress::spawn(&["hog", "--mb", "64", "--exit", "--comm", "mt-rc-anon", "--cgroup", cg.dir_str()]);
    hog.wait_line("ready", Duration::from_secs(120));
    assert_eq!(hog.wait_signal(Duration::from_secs(30)), None, "the hog was killed");
    let hits = cg.limit_hits() - hits0;
    let lines = mt.stop();
    assert_eq!(cg.oom_kills(), 0);

    let fin = summaries(&lines, true);
    let row = proc_row(&fin, "memcg", hog.pid()).unwrap_or_else(|| panic!("no memcg row for the hog: {fin:?}"));
    assert_eq!(row["comm"], "mt-rc-anon");
    assert_eq!(row["cgroup"], cg.rel.as_str());
    assert!(proc_row(&fin, "memcg", lazy.pid()).is_none(), "the sleeping lazyfree process was blamed");
    // 64 MiB lazyfree + 64 MiB anon in 96 MiB: reclaim freed at least the 32 MiB excess.
    let reclaimed = row["nr_reclaimed"].as_u64().unwrap() * page_size();
    assert!(reclaimed >= 32 * MIB, "reclaimed {reclaimed} bytes");
    assert!(reclaimed <= 64 * MIB + 16 * MIB, "reclaimed {reclaimed} bytes, more than there was");
    let cgr = cgroup_row(&fin, "memcg", &cg.rel).expect("cgroup row");
    assert_eq!(count(cgr), count(row));
    assert_consistent_with_cgroup(&cg, count(cgr), hits);
    assert_rows_sane(&lines);
    assert_stats_match(&lines);
}

/// Spawns `mt-stress <args>` once `gate` exists, through `sh -c 'wait; exec'`, so its pid
/// is known (for -p) before it starts pressing.
fn gated(args: &[&str], gate: &std::path::Path) -> std::process::Child {
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exec {} {}",
        gate.display(),
        stress_bin().display(),
        args.join(" ")
    );
    Command::new("sh").args(["-c", &cmd]).stdout(Stdio::null()).spawn().expect("spawn sh")
}

/// -c and -p filter in the kernel: each filtered session counts only its own stalls,
/// while an unfiltered one sees both cgroups.
#[test]
fn filters_select_stalls_in_the_kernel() {
    let a = MemCgroup::new("rc-fa", 64 * MIB);
    let b = MemCgroup::new("rc-fb", 64 * MIB);
    let gate = std::env::temp_dir().join(format!("memtrace-rc-gate-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let mut hog_b = gated(&["hog", "--mb", "48", "--exit", "--comm", "mt-rc-fb", "--cgroup", b.dir_str()], &gate);
    let pid_b = hog_b.id();
    let mut lazies = Vec::new();
    for cg in [&a, &b] {
        let mut l = Stress::spawn(&["lazyfree", "--mb", "32", "--cgroup", cg.dir_str()]);
        l.wait_line("ready", Duration::from_secs(60));
        lazies.push(l);
    }
    let all = Memtrace::start(&["reclaim", "--json"]);
    let by_cg = Memtrace::start(&["reclaim", "--json", "-c", &a.rel]);
    let by_pid = Memtrace::start(&["reclaim", "--json", "-p", &pid_b.to_string()]);
    std::fs::write(&gate, "").unwrap();
    let mut hog_a = Stress::spawn(&["hog", "--mb", "48", "--exit", "--comm", "mt-rc-fa", "--cgroup", a.dir_str()]);
    hog_a.wait_line("ready", Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(120);
    while hog_b.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "hog b did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid_a = hog_a.pid();
    let _ = std::fs::remove_file(&gate);
    let all = all.stop();
    let by_cg = by_cg.stop();
    let by_pid = by_pid.stop();

    let fin = summaries(&all, true);
    assert!(proc_row(&fin, "memcg", pid_a).is_some(), "unfiltered run misses a: {fin:?}");
    assert!(proc_row(&fin, "memcg", pid_b).is_some(), "unfiltered run misses b: {fin:?}");

    for (lines, who, other, cg) in [(&by_cg, pid_a, pid_b, &a), (&by_pid, pid_b, pid_a, &b)] {
        let fin = summaries(lines, true);
        assert!(proc_row(&fin, "memcg", who).is_some(), "{fin:?}");
        for r in &fin {
            assert_eq!(r["cgroup"], cg.rel.as_str(), "row outside the filter: {r}");
            if r.get("pid").is_some() {
                assert_eq!(r["pid"], who, "row outside the filter: {r}");
            }
        }
        assert!(!lines.iter().any(|l| l["pid"] == other), "the other process leaked through");
        // Counted in the kernel after filtering: the filtered totals are strictly smaller.
        let e = stats_of(lines, "reclaim")["events"].as_u64().unwrap();
        assert!(e < stats_of(&all, "reclaim")["events"].as_u64().unwrap());
        assert_stats_match(lines);
    }
    assert_stats_match(&all);
}

/// Text mode: a table per interval, bars with -H, ms with -m, notes, and the final
/// summary; `1 3` stops by itself after three intervals.
#[test]
fn text_mode_tables_bars_and_summary() {
    let cg = MemCgroup::new("rc-text", 64 * MIB);
    let started = Instant::now();
    let mut child = Command::new(memtrace_bin())
        .args(["reclaim", "-H", "-m", "-c", &cg.rel, "2", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Press only once the probes are attached (text mode says so on stderr).
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("Ctrl-C to stop") {
                let _ = tx.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("memtrace never said it was tracing");
    let mut lazy = Stress::spawn(&["lazyfree", "--mb", "32", "--cgroup", cg.dir_str()]);
    lazy.wait_line("ready", Duration::from_secs(30));
    let mut hog = Stress::spawn(&["hog", "--mb", "48", "--exit", "--comm", "mt-rc-text", "--cgroup", cg.dir_str()]);
    hog.wait_line("ready", Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = reader.join().unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(90), "COUNT did not stop the run");
    assert!(stderr.contains("tracing vmscan:direct_begin via"), "{stderr}");
    assert_eq!(stdout.matches("reclaim in the last").count(), 3, "{stdout}");
    assert!(stdout.contains("reclaim summary over"), "{stdout}");
    for want in ["KIND", "P99.9 ms", "BY CGROUP", "memcg stalls:", "msecs", "|*", "context: allocstall", "note: "] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    let line = stdout
        .lines()
        .find(|l| l.contains("mt-rc-text") && l.trim_start().starts_with("memcg"))
        .unwrap_or_else(|| panic!("no memcg row for mt-rc-text:\n{stdout}"));
    assert!(line.contains(&hog.pid().to_string()) && line.contains(&cg.rel), "{line}");
}

#[test]
fn bad_reclaim_arguments_are_rejected() {
    for (args, needle) in [
        (&["reclaim", "0"][..], "positive number of seconds"),
        (&["reclaim", "1", "0"], "not a positive count"),
        (&["reclaim", "1", "2", "3"], "unexpected argument"),
        (&["reclaim", "--min-latency", "soon"], "not a time"),
        (&["reclaim", "--min-latency=-2ms"], "between 0 and 1 hour"),
        (&["reclaim", "-c", "/no/such/cgroup"], "no such memory cgroup"),
    ] {
        let (code, out, err) = run_memtrace(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.is_empty() && !err.contains("panicked"), "{args:?}: {out} {err}");
    }
}

/// doctor lists every reclaim hook: the tracepoints with a strategy, memory.high
/// enforcement through kprobes where the kernel has them, else a gap with the reason.
#[test]
fn doctor_reports_reclaim_hooks() {
    require_root();
    let (code, out, err) = run_memtrace(&["doctor", "--json"]);
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str(out.trim()).unwrap();
    let hooks: Vec<&Value> = d["hooks"].as_array().unwrap().iter().filter(|h| h["family"] == "reclaim").collect();
    let names: Vec<&str> = hooks.iter().map(|h| h["hook"].as_str().unwrap()).collect();
    for want in [
        "vmscan:direct_begin", "vmscan:direct_end", "vmscan:memcg_begin", "vmscan:memcg_end",
        "vmscan:throttled", "vmscan:kswapd_wake", "vmscan:kswapd_sleep", "vmscan:node_begin",
        "compaction:begin", "memcg:over_high",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for h in &hooks {
        let name = h["hook"].as_str().unwrap();
        if name.starts_with("memcg:over_high") {
            if d["kprobes"] == true {
                assert_eq!(h["chosen"]["strategy"].as_str().map(|s| s.contains("probe")), Some(true), "{h}");
            } else {
                assert!(h["chosen"].is_null(), "{h}");
                assert!(h["refused"].to_string().contains("kprobes"), "{h}");
            }
        } else {
            // Every tracepoint this family uses exists on 6.1+.
            assert!(h["chosen"]["strategy"].is_string(), "{name} is a gap: {h}");
        }
    }
}

/// Under `watch` with no interval given (every 5 s), 48 processes in turn each press a
/// 32 MiB cgroup with a 64 MiB pass and exit, while the kernel's histogram buffers hold 16
/// keys: drained every second, they lose nothing (the final rows hold every stall the
/// kernel counted, map_full 0) though the run sees several times more keys than they hold.
#[test]
fn a_storm_of_more_keys_than_the_buffers_hold_loses_nothing() {
    let cg = MemCgroup::new("rc-keys", 32 * MIB);
    let lines = key_storm(16, Some(&cg), 48, 64);
    let fin = summaries(&lines, true);
    let storm: u64 = fin.iter().filter(|r| r["comm"] == "mt-rc-train").map(|r| count(r)).sum();
    let cgr = cgroup_row(&fin, "memcg", &cg.rel).expect("the storm's cgroup row");
    assert!(storm >= count(cgr), "storm rows {storm} vs cgroup row {cgr}");
}

