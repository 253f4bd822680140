//! A real Prometheus server scrapes a live `memtrace watch --metrics` while memcg OOMs and
//! memcg reclaim happen in small cgroups; its query API shows exactly the kills caused and
//! the stalls; promtool lints a scrape, checks the alert rules and backfills a dump.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Stress, TempDir, free_port, http_get, now_ms, wait_until};

use super::{super::MIB, Prometheus, promtool, repo_file};
use crate::{Run, memtrace, segments};

#[test]
fn prometheus_sees_exactly_the_oom_kills_and_the_reclaim_stalls() {
    let tmp = TempDir::new("al-prom");
    let target = format!("127.0.0.1:{}", free_port());
    let rec = tmp.join("rec");
    let run = Run::start(&tmp, "live", &["watch", "1", "--quiet", "--metrics", &target, "--record", rec.to_str().unwrap()]);
    let prom = Prometheus::start(&target);
    wait_until(Duration::from_secs(60), "Prometheus scraping memtrace", || {
        (prom.value("up{job=\"memtrace\"}") == Some(1.0) && prom.value("count(memtrace_build_info)") == Some(1.0)).then_some(())
    });
    let started_s = now_ms() as f64 / 1000.0;
    let oom = MemCgroup::new("al-prom-oom", 64 * MIB);
    let rc = MemCgroup::new("al-prom-rc", 64 * MIB);
    let kills_q = format!("sum(memtrace_oom_kills_total{{memcg=\"{}\"}})", oom.rel);
    let stalls_q = format!("sum(memtrace_reclaim_stall_seconds_count{{cgroup=\"{}\"}})", rc.rel);
    assert_eq!(prom.value(&kills_q), None, "kills before any OOM");
    assert_eq!(prom.value(&stalls_q), None, "stalls before any reclaim");

    for i in 0..2 {
        let comm = format!("mt-prom-oom-{i}");
        let mut hog = Stress::spawn(&["hog", "--mb", "256", "--comm", &comm, "--cgroup", oom.dir_str()]);
        assert_eq!(hog.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL), "{comm} was not OOM-killed");
    }
    let kills = oom.oom_kills();
    assert_eq!(kills, 2, "the cgroup counted {kills} kills");
    let mut lazy = Stress::spawn(&["lazyfree", "--mb", "32", "--cgroup", rc.dir_str()]);
    lazy.wait_line("ready", Duration::from_secs(60));
    let mut press = Stress::spawn(&["hog", "--mb", "48", "--exit", "--comm", "mt-prom-rc", "--cgroup", rc.dir_str()]);
    assert_eq!(press.wait_signal(Duration::from_secs(60)), None, "the reclaim press was killed");

    wait_until(Duration::from_secs(60), "the kills in Prometheus", || (prom.value(&kills_q) == Some(kills as f64)).then_some(()));
    let stalls = wait_until(Duration::from_secs(60), "the stalls in Prometheus", || prom.value(&stalls_q).filter(|n| *n > 0.0));
    // A few scrapes later: still exactly the kills caused.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(prom.value(&kills_q), Some(kills as f64));
    assert_eq!(prom.value(&format!("sum(memtrace_oom_kills_total{{memcg=\"{}\",constraint=\"memcg\"}})", oom.rel)), Some(2.0));
    let last = prom.value("memtrace_oom_last_kill_timestamp_seconds").expect("last kill time");
    assert!(last >= started_s - 1.0, "last kill at {last}, the test began at {started_s}");
    // The histogram is real: +Inf is the count, the sum is the time stalled.
    let inf = prom.value(&format!("sum(memtrace_reclaim_stall_seconds_bucket{{cgroup=\"{}\",le=\"+Inf\"}})", rc.rel));
    assert!(inf >= Some(stalls), "+Inf {inf:?} below the count {stalls}");
    let sum = prom.value(&format!("sum(memtrace_reclaim_stall_seconds_sum{{cgroup=\"{}\"}})", rc.rel)).unwrap();
    assert!(sum > 0.0, "stalled for {sum} s");
    assert!(prom.value("sum(memtrace_events_total{family=\"reclaim\"})").unwrap() >= stalls);
    assert!(prom.value("memtrace_bpf_map_bytes").unwrap() > 0.0);
    assert!(!prom.query("memtrace_probe_info{family=\"oom\",hook=\"oom:mark_victim\"}").is_empty());

    // The Prometheus text format passes promtool's lint; OpenMetrics when asked for.
    let (status, head, body) = http_get(&target, "/metrics", None);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let (ok, lint) = promtool(&["check", "metrics"], Some(&body));
    assert!(ok && lint.trim().is_empty(), "promtool check metrics: {lint}\n{body}");
    let (_, head, body) = http_get(&target, "/metrics", Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"));
    assert!(head.contains("application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(body.ends_with("# EOF\n") && body.contains("memtrace_oom_kills_total{"), "{body}");
    drop(lazy);
    run.stop();

    // The recording's metrics, backfilled by promtool.
    let (code, om, err) = memtrace(&["dump", rec.to_str().unwrap(), "--format", "openmetrics"]);
    assert_eq!(code, 0, "{err}");
    let line = format!("memtrace_oom_kills_total{{constraint=\"memcg\",memcg=\"{}\"}} 2 ", oom.rel);
    assert!(om.contains(&line), "no {line:?} in the dump");
    let file = tmp.join("dump.om");
    std::fs::write(&file, &om).unwrap();
    let (ok, out) = promtool(&["tsdb", "create-blocks-from", "openmetrics", file.to_str().unwrap(), tmp.join("blocks").to_str().unwrap()], None);
    assert!(ok, "promtool tsdb create-blocks-from openmetrics: {out}");
    // Plain tools read a segment: zstdcat | jq.
    let seg = segments(&rec).into_iter().next().expect("a segment");
    let sh = format!("zstdcat {} | jq -r .type | sort -u", seg.display());
    let out = std::process::Command::new("sh").args(["-c", &sh]).output().expect("sh");
    let types = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && types.contains("recording") && types.contains("oom_kill"), "{sh}: {types}");
}

#[test]
fn the_example_alert_rules_pass_promtool() {
    let rules = repo_file("contrib/memtrace-alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok && out.contains("SUCCESS"), "promtool check rules: {out}");
    for alert in ["MemtraceOOMKill", "MemtraceReclaimStallP99", "MemtraceSlabGrowth", "MemtraceShmemGrowth"] {
        assert!(std::fs::read_to_string(&rules).unwrap().contains(alert), "no {alert}");
    }
}
