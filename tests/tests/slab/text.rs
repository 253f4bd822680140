//! Text mode: the tables on stdout and the notes on stderr are the slab view of the records,
//! so `memtrace replay` of a recording prints them again.

use memtrace_tests::{TextMemtrace, Value, run_memtrace};

use crate::common::{TempDir, stat_storm};

/// Text mode: a slabtop-like table with the who column on stdout, status on stderr.
#[test]
fn text_mode_shows_caches_and_callers() {
    const N: u64 = 30_000;
    let d = TempDir::new("text");
    // Returns once memtrace says it traces: the storm starts after the attach.
    let mt = TextMemtrace::start(&["slab", "--cache", "dentry", "2"]);
    let pid = stat_storm(&d, "loud", N, "mt-slab-text");
    let (stdout, stderr) = mt.stop();
    assert!(stdout.contains("CACHE") && stdout.contains("NET BYTES"), "{stdout}");
    // The totals, printed at the stop: the storm's own allocations were seen, at a d_alloc
    // call site ("  +30001  mt-slab-text[PID]  __d_alloc+0x2d  cgroup /...").
    let (_, total) =
        stdout.split_once("slab total").unwrap_or_else(|| panic!("no totals: {stdout}"));
    let who = format!("mt-slab-text[{pid}]");
    let row = total
        .lines()
        .find(|l| l.contains(&who) && l.contains("d_alloc"))
        .unwrap_or_else(|| panic!("{who} is not a dentry caller in the totals: {stdout}"));
    let counted: u64 =
        row.split_whitespace().next().unwrap().trim_start_matches('+').parse().unwrap();
    assert!(counted >= N * 9 / 10, "{counted} of the storm's {N} dentries counted: {row}");
    assert!(total.contains("dir ") && total.contains(&d.sub("loud")), "{stdout}");
    assert!(stdout.contains("dentry-state: negative +"), "{stdout}");
    assert!(stderr.contains("tracing kmem:kmem_cache_alloc via"), "{stderr}");
}

/// A text-mode run with --json-file during a storm; `memtrace replay` of that file prints
/// the same stdout, and the same view notes and status on stderr (the live run's log lines
/// aside). The records list every cache that changed; the text shows the --top-caches.
#[test]
fn replay_prints_what_the_live_run_printed() {
    const N: u64 = 30_000;
    const TOP: usize = 3;
    let d = TempDir::new("replay");
    let file = d.json_file();
    let top = TOP.to_string();
    let mt = TextMemtrace::start(&["slab", "--top-caches", &top, "--json-file", &file, "1"]);
    let pid = stat_storm(&d, "loud", N, "mt-slab-replay");
    let (stdout, stderr) = mt.stop();
    let who = format!("mt-slab-replay[{pid}]");
    let (_, total) =
        stdout.split_once("slab total").unwrap_or_else(|| panic!("no totals: {stdout}"));
    assert!(total.contains(&who) && total.contains("dentry-state: negative +"), "{stdout}");
    // Each table: its header, then at most TOP cache rows (callers and context are indented).
    for table in stdout.split("\n\n").filter(|t| !t.is_empty()) {
        let rows = table.lines().skip(2).filter(|l| !l.starts_with(' ')).count();
        assert!(rows <= TOP, "{rows} caches shown:\n{table}");
    }
    let records: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|v| v["type"] == "slab_period" && v["caches"].as_u64() > Some(TOP as u64)),
        "the records list more caches than the text shows"
    );

    let (code, replayed, replayed_err) = run_memtrace(&["replay", &file]);
    assert_eq!(code, 0, "{replayed_err}");
    assert_eq!(replayed, stdout, "replay prints the live run's stdout");
    // env_logger lines ("[2026-... WARN ...]") are the live process's own, not records.
    let status = |s: &str| -> Vec<String> {
        s.lines().filter(|l| !l.starts_with('[')).map(str::to_string).collect()
    };
    assert_eq!(status(&replayed_err), status(&stderr), "replay prints the live run's notes");
    assert!(stderr.contains("slab: ") && stderr.contains("note: "), "{stderr}");
}
