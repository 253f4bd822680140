//! VM only (`cargo xtask vm-test`, kernels 6.1 and 6.12 with kprobes and fentry): a
//! global OOM decided with the exact method (the kernel's own oom_badness() scores), a
//! task protected by oom_score_adj -1000 reported as skipped and never chosen, and a
//! memory.oom.group kill reported as one decision.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Memtrace, Stress, TextMemtrace, Value, require_vm, stats_of};

use super::{MIB, attached, candidate, hogs, kib_field, next_kill, points};

fn meminfo_kib(key: &str) -> i64 {
    kib_field(&std::fs::read_to_string("/proc/meminfo").unwrap(), key)
}

/// The exact hooks are attached: out_of_memory entry and oom_badness returns.
fn assert_exact_hooks(mt: &Memtrace) {
    for hook in ["oom:out_of_memory", "oom:oom_badness", "oom:out_of_memory return"] {
        assert!(attached(mt, hook), "{hook} not attached on this kernel: {:#?}", mt.seen[0]);
    }
}

#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn global_oom_is_decided_with_the_kernels_own_scores() {
    require_vm();
    let mut mt = Memtrace::start(&["oom", "--json"]);
    assert_exact_hooks(&mt);
    let text = TextMemtrace::start(&["oom"]);

    let mut protected =
        Stress::spawn(&["hog", "--mb", "96", "--comm", "mt-vm-protected", "--adj", "-1000"]);
    protected.wait_line("ready", Duration::from_secs(60));
    let mut big = Stress::spawn(&["hog", "--mb", "64", "--comm", "mt-vm-big", "--adj", "300"]);
    big.wait_line("ready", Duration::from_secs(60));
    // Less than RAM (the overcommit heuristic refuses bigger mappings), more than is free.
    let total_mib = (meminfo_kib("MemTotal:") / 1024).to_string();
    let mut grower =
        Stress::spawn(&["hog", "--mb", &total_mib, "--step-kb", "4096", "--comm", "mt-vm-grower"]);

    let kill = next_kill(&mut mt, Duration::from_secs(240), "the global OOM", |_| true);
    println!("{kill}");

    assert_eq!(kill["constraint"], "global", "{kill:#}");
    let d = &kill["domain"];
    assert_eq!(d["kind"], "system");
    assert!(d["memcg"].is_null());
    // oom_control.totalpages = totalram_pages + total_swap_pages = MemTotal + SwapTotal.
    let want = (meminfo_kib("MemTotal:") + meminfo_kib("SwapTotal:")) / 4;
    assert_eq!(d["totalpages"], want, "the domain is all RAM + swap: {d}");
    assert!(kill["constraint_source"].as_str().unwrap().contains("out_of_memory()'s argument"));
    assert!(kill["gfp_flags"].as_array().is_some_and(|f| !f.is_empty()));

    let m = &kill["candidates_method"];
    assert_eq!(m["exact"], true, "{m}");
    assert!(
        m["method"] == "oom_badness fexit" || m["method"] == "oom_badness kretprobe",
        "{m}"
    );
    assert_eq!(m["lost"], 0);

    let cands = kill["candidates"].as_array().unwrap();
    let find = |pid: u32| candidate(&kill, pid);
    // The protected task was evaluated and skipped, never chosen.
    let p = find(protected.pid()).unwrap_or_else(|| panic!("protected task missing: {kill:#}"));
    assert_eq!(p["skipped"], "oom_score_adj -1000", "{p}");
    assert!(p["points"].is_null());
    assert_eq!(p["oom_score_adj"], -1000);
    assert!(p["rss_kb"].as_i64().unwrap() >= 90 * 1024, "{p}");
    assert_ne!(kill["victim"]["pid"], protected.pid());
    assert!(kill["notes"].to_string().contains(&format!(
        "oom_score_adj -1000 protected pid {} (mt-vm-protected",
        protected.pid()
    )));
    // Every process this test started is a candidate.
    for (pid, comm) in [(big.pid(), "mt-vm-big"), (grower.pid(), "mt-vm-grower")] {
        let c = find(pid).unwrap_or_else(|| panic!("{comm} missing: {kill:#}"));
        assert_eq!(c["comm"], comm);
        assert!(c["skipped"].is_null(), "{c}");
    }
    assert!(find(std::process::id()).is_some(), "the test process itself was evaluated");

    // The victim: the highest of the kernel's own scores, equal to oom_control's.
    let v = &kill["victim"];
    let best = cands.iter().filter(|c| !c["points"].is_null()).map(points).max().unwrap();
    assert_eq!(points(v), best, "{kill:#}");
    assert_eq!(v["points_source"], "kernel: oom_control.chosen_points");
    let vc = find(v["pid"].as_u64().unwrap() as u32).expect("the victim is a candidate");
    assert_eq!(vc["victim"], true);
    assert_eq!(points(vc), points(v), "exact: the candidate row is the kernel's score");
    let total = v["points_breakdown"]["total"].as_i64().unwrap();
    assert!((total - points(v)).abs() * 100 <= points(v), "breakdown {total} vs {}", points(v));

    // The allocation retried reclaim before giving up.
    let r = &kill["retries"];
    assert!(r["max_no_progress_loops"].as_i64().is_some_and(|n| n >= 1), "{kill:#}");

    let victim_pid = v["pid"].as_u64().unwrap() as u32;
    for s in [&mut big, &mut grower] {
        if s.pid() == victim_pid {
            assert_eq!(s.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
        }
    }
    drop(grower);
    let lines = mt.stop();
    let s = stats_of(&lines, "oom");
    assert_eq!(s["ringbuf_drops"], 0);
    assert_eq!(s["read_errors"], 0);
    let (out, _) = text.stop();
    println!("{out}");
    assert!(out.contains("constraint global"), "{out}");
    assert!(out.contains("evaluated, oom_badness "), "{out}");
    assert!(out.contains("(exact)"), "{out}");
    let protected_note = format!("oom_score_adj -1000 protected pid {}", protected.pid());
    assert!(out.contains(&protected_note), "{out}");
}

#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn oom_group_kills_are_one_decision() {
    require_vm();
    let cg = MemCgroup::new("group", 96 * MIB);
    assert!(cg.v2, "memory.oom.group needs cgroup v2");
    cg.write("memory.oom.group", "1");
    let mut mt = Memtrace::start(&["oom", "--json", "-c", &cg.rel]);
    assert_exact_hooks(&mt);

    let mut members = hogs(&cg, "mt-group", 2, 8, Duration::from_secs(60));
    let mut grower = Stress::spawn(&[
        "hog", "--mb", "512", "--comm", "mt-group-grower", "--cgroup", cg.dir_str(),
    ]);
    assert_eq!(grower.wait_signal(Duration::from_secs(120)), Some(libc::SIGKILL));
    for m in &mut members {
        let signal = m.wait_signal(Duration::from_secs(60));
        assert_eq!(signal, Some(libc::SIGKILL), "killed with the group");
    }
    let kill = next_kill(&mut mt, Duration::from_secs(30), "the group's decision", |_| true);
    // Every member's kill record is in the ring buffer by now (each was SIGKILLed); the
    // stop drains it and emits what is pending.
    let lines = mt.stop();
    let kills: Vec<&Value> = lines.iter().filter(|l| l["type"] == "oom_kill").collect();
    assert_eq!(kills.len(), 1, "one decision for the whole group: {lines:#?}");
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["victim"]["pid"], grower.pid(), "{kill:#}");
    let group_kills = kill["group_kills"].as_array().unwrap();
    let mut group: Vec<u64> = group_kills.iter().map(|g| g["pid"].as_u64().unwrap()).collect();
    group.sort_unstable();
    let mut want: Vec<u64> = members.iter().map(|m| u64::from(m.pid())).collect();
    want.sort_unstable();
    assert_eq!(group, want, "{kill:#}");
    assert!(kill["notes"].to_string().contains("memory.oom.group: 2 more processes"), "{kill:#}");
    assert_eq!(kill["candidates_method"]["exact"], true);
    assert_eq!(kill["candidates"].as_array().unwrap().len(), 3, "{kill:#}");
    // memory.events counts each member, and the victim once more: the group loop meets
    // it again (seen on 6.1 and 6.12).
    assert!(cg.oom_kills() >= 3, "the kernel counts each member");
    println!("{kill}");
}
