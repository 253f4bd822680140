//! The OOM decision record on the real kernel (memory cgroup): every process of the OOM
//! memcg is a candidate, the victim has the highest score, that score matches the kernel's
//! formula computed here from what each process touched and its oom_score_adj, the trigger
//! is the process that grew, and the constraint is memcg. Twice in one run.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Memtrace, Stress, TextMemtrace, Value, stats_of};

use super::{MIB, Recording, attached, candidate, hogs, kib_field, next_kill, points};

const PAGE_KIB: i64 = 4;

/// A process that touched `kib` and set `adj`.
struct Proc {
    stress: Stress,
    comm: &'static str,
    touched_kib: i64,
    adj: i64,
    /// VmRSS + VmPTE from /proc/PID/status once it was ready (it stays still after).
    status_kib: i64,
}

/// VmRSS + VmPTE of a process, in KiB, from /proc.
fn status_kib(pid: u32) -> i64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    kib_field(&s, "VmRSS:") + kib_field(&s, "VmPTE:")
}

impl Proc {
    fn spawn(cg: &MemCgroup, comm: &'static str, mb: u64, adj: i64) -> Proc {
        let mut stress = Stress::spawn(&[
            "hog",
            "--mb",
            &mb.to_string(),
            "--comm",
            comm,
            "--cgroup",
            cg.dir_str(),
            "--adj",
            &adj.to_string(),
        ]);
        let touched_kib = stress.wait_line("ready", Duration::from_secs(30)).parse().unwrap();
        let status_kib = status_kib(stress.pid());
        Proc { stress, comm, touched_kib, adj, status_kib }
    }

    fn pid(&self) -> u32 {
        self.stress.pid()
    }

    /// oom_badness() from first principles: resident pages (what it touched) plus
    /// oom_score_adj x (totalpages / 1000); page tables and the binary's own pages are
    /// the "few percent" the comparison allows.
    fn expected_points(&self, totalpages: i64) -> i64 {
        self.touched_kib / PAGE_KIB + self.adj * (totalpages / 1000)
    }

    /// The same formula with resident memory and page tables as /proc reported them.
    fn status_points(&self, totalpages: i64) -> i64 {
        self.status_kib / PAGE_KIB + self.adj * (totalpages / 1000)
    }
}

fn within(actual: i64, expected: i64, pct: i64) -> bool {
    (actual - expected).abs() * 100 <= expected.abs() * pct
}

/// The kernel scores with get_mm_counter(), the global part of per-CPU counters; /proc
/// reports their exact sum. They differ by up to a batch (32 pages) per CPU and counter.
fn near_proc(actual: i64, proc_pages: i64) -> bool {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as i64;
    (actual - proc_pages).abs() <= (proc_pages / 100).max(2 * 32 * cpus)
}

/// Checks one decision: constraint and domain, the trigger, every live process a
/// candidate, the victim the highest and as the formula says.
fn check_decision(
    kill: &Value,
    exact: bool,
    cg: &MemCgroup,
    live: &[&Proc],
    victim: &Proc,
    grower: &Proc,
) {
    let totalpages = (128 * MIB / 4096) as i64;
    assert_eq!(kill["constraint"], "memcg", "{kill:#}");
    let d = &kill["domain"];
    assert_eq!(d["kind"], "memcg");
    assert_eq!(d["memcg"], cg.rel.as_str());
    assert_eq!(d["totalpages"], totalpages, "totalpages is the memcg limit in pages: {d}");
    assert_eq!(d["memcg_limit_kb"], 128 * 1024);
    // Full at the OOM; read at mark_victim, when the SIGKILLed victim may have begun to
    // free its memory.
    let usage = d["memcg_usage_kb"].as_i64().unwrap();
    let victim_rss = victim.status_kib;
    assert!(usage + victim_rss >= 128 * 1024 * 95 / 100, "the memcg was full: {d}");
    assert_eq!(kill["order"], 0);
    assert!(kill["gfp_flags"].as_array().is_some_and(|f| !f.is_empty()), "{kill}");

    assert_eq!(kill["trigger"]["pid"], grower.pid(), "the grower charged the page over the limit");
    assert_eq!(kill["trigger"]["comm"], grower.comm);

    let m = &kill["candidates_method"];
    assert_eq!(m["exact"], exact, "{m}");
    if exact {
        assert!(m["method"].as_str().unwrap().starts_with("oom_badness "), "{m}");
    } else {
        assert_eq!(m["method"], "task walk at oom:mark_victim", "tracepoints only: {m}");
    }
    assert_eq!(m["lost"], 0);

    // Every live process of the memcg is a candidate, with its own numbers.
    for p in live {
        let c = candidate(kill, p.pid())
            .unwrap_or_else(|| panic!("{} (pid {}) is not a candidate: {kill:#}", p.comm, p.pid()));
        assert_eq!(c["comm"], p.comm);
        assert_eq!(c["oom_score_adj"], p.adj);
        assert_eq!(c["cgroup"], cg.rel.as_str());
        assert!(c["skipped"].is_null(), "{c}");
        if p.pid() != grower.pid() {
            let (got, want) = (points(c), p.status_points(totalpages));
            assert!(near_proc(got, want), "{}: points {got}, formula on /proc {want}: {c}", p.comm);
        }
    }
    let cands = kill["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), live.len(), "only this memcg's processes: {kill:#}");

    // The victim: the highest score, the first row, and the formula's value.
    let v = &kill["victim"];
    assert_eq!(v["pid"], victim.pid(), "{kill:#}");
    let best = cands.iter().map(points).max().unwrap();
    assert_eq!(points(v), best, "the victim has the highest points");
    assert_eq!(cands[0]["pid"], victim.pid(), "sorted by points");
    assert_eq!(cands[0]["victim"], true);
    let want = victim.expected_points(totalpages);
    assert!(within(points(v), want, 3), "victim points {} vs formula {want}", points(v));
    let b = &v["points_breakdown"];
    assert_eq!(b["adj_unit_pages"], totalpages / 1000);
    assert_eq!(b["adj_pages"], victim.adj * (totalpages / 1000));
    assert_eq!(b["oom_score_adj"], victim.adj);
    let rss = b["rss_pages"].as_i64().unwrap() + b["pgtables_pages"].as_i64().unwrap();
    assert!(near_proc(rss, victim.status_kib / PAGE_KIB), "{b} vs /proc {}", victim.status_kib);
    let sum = ["rss_pages", "swap_pages", "pgtables_pages", "adj_pages"]
        .iter()
        .map(|k| b[k].as_i64().unwrap())
        .sum::<i64>();
    assert_eq!(b["total"], sum);
    // The kernel's own score (oom_control.chosen_points, found on the OOM task's stack).
    assert_eq!(v["points_source"], "kernel: oom_control.chosen_points", "{v}");
    assert!(within(b["total"].as_i64().unwrap(), points(v), 1), "{v}");

    let notes = kill["notes"].to_string();
    assert!(notes.contains("constraint memcg"), "{notes}");
    assert!(kill["reaper"]["summary"].is_string());
}

/// Three processes with raised oom_score_adj and one that grows: two kills, each naming
/// the right victim with the kernel's score, every candidate, and the grower as trigger.
#[test]
fn memcg_oom_decisions_name_every_candidate_and_the_right_victim_twice() {
    let cg = MemCgroup::new("decision", 128 * MIB);
    let mut mt = Memtrace::start(&["oom", "--json", "-c", &cg.rel]);
    // The exact method: oom_badness fexit/kretprobe attached.
    let exact = attached(&mt, "oom:oom_badness");

    // Scores with totalpages 32768 (unit 32): p900 16 MiB + 900x32 = 32896 (1st victim),
    // p600 24 MiB + 600x32 = 25344 (2nd victim), p0 32 MiB = 8192; the grower stays
    // below both while they live (at most 128 - 72 MiB = 14336, then 18432).
    let p900 = Proc::spawn(&cg, "mt-dec-p900", 16, 900);
    let p600 = Proc::spawn(&cg, "mt-dec-p600", 24, 600);
    let p0 = Proc::spawn(&cg, "mt-dec-p0", 32, 0);
    let mut grower = Proc {
        stress: Stress::spawn(&[
            "hog", "--mb", "300", "--step-kb", "1024", "--step-us", "20000", "--comm",
            "mt-dec-grower", "--cgroup", cg.dir_str(),
        ]),
        comm: "mt-dec-grower",
        touched_kib: 0,
        adj: 0,
        status_kib: 0,
    };

    let first = next_kill(&mut mt, Duration::from_secs(60), "the first decision", |_| true);
    check_decision(&first, exact, &cg, &[&p900, &p600, &p0, &grower], &p900, &grower);
    assert!(
        first["notes"].to_string().contains("victim is not the largest process"),
        "{:#}",
        first["notes"]
    );
    let exit_ms = first["reaper"]["victim_exit_ms"].as_f64();
    assert!(exit_ms.is_some_and(|ms| ms >= 0.0), "victim exit seen: {}", first["reaper"]);

    let second = next_kill(&mut mt, Duration::from_secs(60), "the second decision", |v| {
        v["decision_id"] != first["decision_id"]
    });
    check_decision(&second, exact, &cg, &[&p600, &p0, &grower], &p600, &grower);
    assert!(candidate(&second, p900.pid()).is_none(), "the first victim is gone");

    let mut p900 = p900;
    let mut p600 = p600;
    assert_eq!(p900.stress.wait_signal(Duration::from_secs(10)), Some(libc::SIGKILL));
    assert_eq!(p600.stress.wait_signal(Duration::from_secs(10)), Some(libc::SIGKILL));
    // Stop the grower before it becomes the third victim.
    let _ = grower.stress.child.kill();
    let lines = mt.stop();
    let kills: Vec<&Value> = lines.iter().filter(|l| l["type"] == "oom_kill").collect();
    assert!(kills.len() >= 2);
    assert_eq!(kills.len() as u64, cg.oom_kills(), "one record per kill the cgroup counted");
    let s = stats_of(&lines, "oom");
    assert_eq!(s["ringbuf_drops"], 0);
    assert_eq!(s["read_errors"], 0);
    assert_eq!(s["undecodable"], 0);
}

/// Text mode: the report's header, domain, victim breakdown and notes; the top 10
/// candidates by default, all of them with --all-candidates.
#[test]
fn text_report_lists_top_ten_candidates_or_all() {
    let cg = MemCgroup::new("dectext", 96 * MIB);
    let (top_rec, all_rec) = (Recording::new("dectext-top"), Recording::new("dectext-all"));
    let top = TextMemtrace::start(&[&["oom", "-c", &cg.rel][..], &top_rec.args()].concat());
    let all = TextMemtrace::start(
        &[&["oom", "-c", &cg.rel, "--all-candidates"][..], &all_rec.args()].concat(),
    );
    let mut small = hogs(&cg, "mt-small", 12, 1, Duration::from_secs(30));
    let mut grower = Stress::spawn(&[
        "hog", "--mb", "256", "--comm", "mt-text-grower", "--cgroup", cg.dir_str(),
    ]);
    assert_eq!(grower.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
    // The reports follow the victim's exit.
    top_rec.wait_kills(1, Duration::from_secs(30));
    all_rec.wait_kills(1, Duration::from_secs(30));
    let (top_out, top_err) = top.stop();
    let (all_out, _) = all.stop();
    small.clear();
    let method = if top_err.contains("oom:oom_badness via") {
        "(exact)"
    } else {
        "task walk at oom:mark_victim (approximate)"
    };
    for out in [&top_out, &all_out] {
        assert!(out.contains("OOM KILL"), "{out}");
        assert!(out.contains(&format!("pid {} (mt-text-grower)", grower.pid())), "{out}");
        assert!(out.contains(&format!("constraint memcg {}", cg.rel)), "{out}");
        assert!(out.contains("totalpages 24576 (the domain's size"), "{out}");
        assert!(out.contains("points ") && out.contains(" = rss "), "{out}");
        assert!(out.contains("13 evaluated, ") && out.contains(method), "{out}");
        assert!(out.contains("<- killed"), "{out}");
        assert!(out.contains("the victim triggered the OOM itself"), "{out}");
    }
    let rows = |out: &str| out.lines().filter(|l| l.contains("mt-small-")).count();
    assert_eq!(rows(&top_out), 9, "top 10 = the grower + 9 small ones:\n{top_out}");
    assert!(top_out.contains("... 3 more (--all-candidates to list them)"), "{top_out}");
    assert_eq!(rows(&all_out), 12, "{all_out}");
}
