//! OOM kills on the real kernel: a process overruns a small memory cgroup and memtrace must
//! name the right victim, its memory, oom_score_adj and cgroup, and the trigger; filters,
//! text mode, and a recording replayed into the same text.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Memtrace, Stress, TextMemtrace, run_memtrace, stats_of};

use super::{MIB, Recording, int, next_kill};

/// A 48 MiB process with oom_score_adj 500 and a process that grows past a 96 MiB limit:
/// the kernel kills the first (its adj doubles its score); the grower triggered it.
#[test]
fn memcg_oom_reports_victim_trigger_and_cgroup() {
    let cg = MemCgroup::new("oom", 96 * MIB);
    let mut mt = Memtrace::start(&["oom", "--json", "-c", &cg.rel]);

    let mut victim = Stress::spawn(&[
        "hog", "--mb", "48", "--comm", "mt-oom-victim", "--cgroup", cg.dir_str(), "--adj", "500",
    ]);
    let touched_kb: i64 = victim.wait_line("ready", Duration::from_secs(30)).parse().unwrap();
    let mut grower =
        Stress::spawn(&["hog", "--mb", "64", "--comm", "mt-oom-grower", "--cgroup", cg.dir_str()]);

    let kill = next_kill(&mut mt, Duration::from_secs(60), "the victim", |_| true);
    assert_eq!(victim.wait_signal(Duration::from_secs(30)), Some(libc::SIGKILL));
    grower.wait_line("ready", Duration::from_secs(30));

    let v = &kill["victim"];
    assert_eq!(v["pid"], victim.pid(), "{kill}");
    assert_eq!(v["tgid"], victim.pid());
    assert_eq!(v["comm"], "mt-oom-victim");
    assert_eq!(v["oom_score_adj"], 500);
    assert_eq!(v["uid"], 0);
    assert_eq!(v["cgroup"], cg.rel.as_str());
    let rss = int(&v["rss_anon_kb"]);
    assert!(
        (rss - touched_kb).abs() <= touched_kb / 10,
        "rss_anon_kb {rss} not within 10% of the {touched_kb} KiB touched"
    );
    assert!(int(&v["total_vm_kb"]) >= touched_kb);
    assert!(int(&v["pgtables_kb"]) > 0);
    // The binary's own text: file-backed, or shmem when it runs from an initramfs (VM).
    assert!(int(&v["rss_file_kb"]) + int(&v["rss_shmem_kb"]) > 0, "{v}");
    assert!(int(&v["rss_shmem_kb"]) < touched_kb / 10, "the hog maps no shmem");
    assert_eq!(int(&v["swap_kb"]), 0);

    let t = &kill["trigger"];
    assert_eq!(t["pid"], grower.pid(), "the grower charged the page that hit the limit");
    assert_eq!(t["comm"], "mt-oom-grower");
    assert_eq!(t["cgroup"], cg.rel.as_str());
    assert!(kill["time"].as_str().is_some_and(|s| s.ends_with('Z')));

    let lines = mt.stop();
    let kills: Vec<_> = lines.iter().filter(|l| l["type"] == "oom_kill").collect();
    assert_eq!(kills.len() as u64, cg.oom_kills(), "one record per kill the cgroup counted");
    let s = stats_of(&lines, "oom");
    assert!(s["events"].as_u64().unwrap() >= 1);
    assert!(s["received"].as_u64().unwrap() >= 1);
    assert_eq!(s["ringbuf_drops"], 0);
    assert_eq!(s["read_errors"], 0);
}

/// -c and -p filter: a kill in the cgroup is shown under -c of that cgroup and hidden under
/// -p of an unrelated process; both exit cleanly on SIGTERM with stats.
#[test]
fn filters_select_kills() {
    let cg = MemCgroup::new("filter", 64 * MIB);
    let mut by_cgroup = Memtrace::start(&["oom", "--json", "--cgroup", cg.dir_str()]);
    let me = std::process::id().to_string();
    let by_pid = Memtrace::start(&["oom", "--json", "-p", &me]);

    let mut hog =
        Stress::spawn(&["hog", "--mb", "256", "--comm", "mt-oom-self", "--cgroup", cg.dir_str()]);
    assert_eq!(hog.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
    let kill = next_kill(&mut by_cgroup, Duration::from_secs(30), "its cgroup's kill", |_| true);
    assert_eq!(kill["victim"]["pid"], hog.pid());
    assert_eq!(kill["trigger"]["pid"], hog.pid(), "it triggered its own OOM");
    assert!(kill["notes"].to_string().contains("triggered the OOM itself"));

    // The unfiltered kernel saw it too: by_pid received it (its ring buffer is drained at
    // the stop) and dropped it.
    let lines = by_pid.stop_with(libc::SIGTERM);
    assert!(!lines.iter().any(|l| l["type"] == "oom_kill"), "{lines:?}");
    assert!(stats_of(&lines, "oom")["received"].as_u64().unwrap() >= 1);
    by_cgroup.stop();
}

/// Text mode: a readable block per kill on stdout, status lines on stderr.
#[test]
fn text_mode_prints_a_block_per_kill() {
    let cg = MemCgroup::new("text", 48 * MIB);
    let rec = Recording::new("text");
    let mt = TextMemtrace::start(&[&["oom", "-c", &cg.rel][..], &rec.args()].concat());
    let mut hog =
        Stress::spawn(&["hog", "--mb", "128", "--comm", "mt-oom-text", "--cgroup", cg.dir_str()]);
    assert_eq!(hog.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
    // The report follows the victim's exit.
    rec.wait_kills(1, Duration::from_secs(30));
    let (stdout, stderr) = mt.stop();
    assert!(stdout.contains("OOM KILL"), "{stdout}");
    assert!(stdout.contains(&format!("pid {} (mt-oom-text)", hog.pid())), "{stdout}");
    assert!(stdout.contains(&format!("memcg {}", cg.rel)), "{stdout}");
    assert!(stderr.contains("tracing oom:mark_victim via"), "{stderr}");
    assert!(stderr.contains("oom: 1 events") || stderr.contains("oom: 2 events"), "{stderr}");
}

/// A recording replays into the text the live run printed: `memtrace oom` in text mode
/// with --json-file while a victim with a raised oom_score_adj and a grower overrun a
/// memory cgroup; `memtrace replay FILE` prints the same stdout, and its stderr (the
/// engine's status lines; the oom view writes none) is what the live run said.
#[test]
fn replay_prints_what_the_live_run_printed() {
    let cg = MemCgroup::new("replay", 64 * MIB);
    let rec = Recording::new("replay");
    let live = TextMemtrace::start(&[&["oom", "-c", &cg.rel][..], &rec.args()].concat());
    let mut victim = Stress::spawn(&[
        "hog", "--mb", "16", "--comm", "mt-rp-victim", "--cgroup", cg.dir_str(), "--adj", "800",
    ]);
    victim.wait_line("ready", Duration::from_secs(30));
    let mut grower = Stress::spawn(&[
        "hog", "--mb", "56", "--comm", "mt-rp-grower", "--cgroup", cg.dir_str(),
    ]);
    assert_eq!(victim.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
    grower.wait_line("ready", Duration::from_secs(30));
    let kills = rec.wait_kills(1, Duration::from_secs(30));
    assert_eq!(kills[0]["victim"]["pid"], victim.pid(), "{:#}", kills[0]);
    let (out, err) = live.stop();
    assert!(out.contains(&format!("OOM KILL  pid {} (mt-rp-victim)", victim.pid())), "{out}");
    assert!(out.contains("<- killed") && out.contains("  notes\n"), "{out}");

    let path = rec.path.to_str().expect("utf-8");
    let (code, replayed, replay_err) = run_memtrace(&["replay", path]);
    assert_eq!(code, 0, "{replay_err}");
    assert_eq!(replayed, out, "replay printed other text than the live run");
    assert!(replay_err.contains("memtrace: stopped after"), "{replay_err}");
    for line in replay_err.lines() {
        assert!(err.contains(line), "replay said {line:?}, the live run did not: {err}");
    }
}

/// --duration stops by itself, with ready first and stats last.
#[test]
fn duration_stops_cleanly() {
    let (code, out, err) = run_memtrace(&["oom", "--json", "--duration", "1"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.first().unwrap()["type"], "ready");
    let probe = &lines[0]["probes"][0];
    assert_eq!(probe["family"], "oom");
    assert_eq!(probe["hook"], "oom:mark_victim");
    assert!(probe["strategy"].is_string());
    assert_eq!(lines.last().unwrap()["type"], "stats");
    assert!(lines.last().unwrap()["duration_s"].as_f64().unwrap() >= 1.0);
}
