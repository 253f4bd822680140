//! 500 memory cgroups, each with a process that stalls in memcg reclaim, created and removed
//! one after the other while the endpoint is scraped: the series stay within the top N plus
//! `other`, dead cgroups leave their own series, what was folded is counted, and the
//! exporter's memory does not grow with the churn (against a memtrace without --metrics
//! that watches the same churn).

use std::{collections::BTreeSet, time::Duration};

use memtrace_tests::{MemCgroup, Stress, TempDir, free_port, http_get, rss_kib};

use super::super::MIB;
use crate::Run;

const CGROUPS: usize = 500;
const TOP: usize = 20;

/// The values of `label` among the samples of `metric` in a Prometheus text scrape.
fn label_values(body: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

fn value(body: &str, sample: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in the scrape"))
}

#[test]
fn series_stay_bounded_while_500_cgroups_come_and_go() {
    let tmp = TempDir::new("al-churn");
    let target = format!("127.0.0.1:{}", free_port());
    let top = TOP.to_string();
    let with = Run::start(&tmp, "metrics", &["watch", "1", "--quiet", "--metrics", &target, "--metrics-top", &top]);
    let without = Run::start(&tmp, "plain", &["watch", "1", "--quiet"]);
    let scrape = || {
        let (status, _, body) = http_get(&target, "/metrics", None);
        assert_eq!(status, 200);
        body
    };
    let (mut base_with, mut base_without) = (0, 0);
    let (mut most_cgroups, mut most_comms) = (0, 0);
    for i in 0..CGROUPS {
        let cg = MemCgroup::new(&format!("churn-{i}"), 8 * MIB);
        let comm = format!("mt-churn-{i}");
        let mut s = Stress::spawn(&["lazyfree", "--mb", "16", "--comm", &comm, "--cgroup", cg.dir_str()]);
        s.wait_line("ready", Duration::from_secs(60));
        drop(s);
        drop(cg);
        if i % 10 == 9 {
            let body = scrape();
            let cgroups = label_values(&body, "memtrace_reclaim_stall_seconds_count", "cgroup");
            let comms = label_values(&body, "memtrace_reclaim_stalls_total", "comm");
            assert!(cgroups.len() <= TOP + 1, "{} cgroups after {} churned: {cgroups:?}", cgroups.len(), i + 1);
            assert!(comms.len() <= TOP + 1, "{} comms after {} churned", comms.len(), i + 1);
            (most_cgroups, most_comms) = (most_cgroups.max(cgroups.len()), most_comms.max(comms.len()));
        }
        if i == 49 {
            (base_with, base_without) = (rss_kib(with.pid()), rss_kib(without.pid()));
        }
    }
    // Two ticks: the last cgroups are gone too.
    std::thread::sleep(Duration::from_millis(2500));
    let body = scrape();
    let cgroups = label_values(&body, "memtrace_reclaim_stall_seconds_count", "cgroup");
    assert!(cgroups.contains("other"), "{cgroups:?}");
    assert!(!cgroups.iter().any(|c| c.contains("memtrace-test-churn-")), "dead cgroups kept their series: {cgroups:?}");
    let folded = value(&body, "memtrace_series_dropped_total{metric=\"memtrace_reclaim_stall_seconds\"}");
    assert!(folded >= (CGROUPS - TOP) as f64, "only {folded} cgroups folded");
    let comms = value(&body, "memtrace_series_dropped_total{metric=\"memtrace_reclaim_stalls_total\"}");
    assert!(comms >= (CGROUPS - TOP) as f64 - 1.0, "only {comms} comms folded");
    let (rss_with, rss_without) = (rss_kib(with.pid()), rss_kib(without.pid()));
    let growth = rss_with as i64 - base_with as i64 - (rss_without as i64 - base_without as i64);
    eprintln!(
        "churn: at most {most_cgroups} cgroups and {most_comms} comms per scrape; {folded} folded; rss with metrics \
         {base_with} -> {rss_with} KiB, without {base_without} -> {rss_without} KiB; scrape {} bytes",
        body.len()
    );
    assert!(growth < 2048, "the exporter grew by {growth} KiB more than memtrace without it");
    assert!(body.len() < 256 * 1024, "a scrape of {} bytes", body.len());
    with.stop();
    without.stop();
}
