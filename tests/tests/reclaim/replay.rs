//! A recording replays into the text the live run printed: memcg reclaim in a small
//! cgroup traced in text mode with -H (bars) and --json-file, then `memtrace replay FILE`.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Stress, TextMemtrace, run_memtrace};

use crate::common::MIB;

#[test]
fn a_recording_replays_into_the_same_text() {
    let cg = MemCgroup::new("rc-replay", 64 * MIB);
    let file = std::env::temp_dir().join(format!("memtrace-rc-replay-{}.jsonl", std::process::id()));
    let mt = TextMemtrace::start(&[
        "reclaim", "-H", "--top", "3", "-c", &cg.rel, "--json-file", file.to_str().unwrap(), "1",
    ]);
    let mut lazy = Stress::spawn(&["lazyfree", "--mb", "32", "--cgroup", cg.dir_str()]);
    lazy.wait_line("ready", Duration::from_secs(60));
    let mut hog = Stress::spawn(&["hog", "--mb", "48", "--exit", "--comm", "mt-rc-replay", "--cgroup", cg.dir_str()]);
    hog.wait_line("ready", Duration::from_secs(120));
    assert_eq!(hog.wait_signal(Duration::from_secs(30)), None, "the hog was killed");
    // At least one interval after the stalls.
    std::thread::sleep(Duration::from_millis(1500));
    let (live, _) = mt.stop();
    let (code, replayed, err) = run_memtrace(&["replay", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("unreadable"), "{err}");
    // The scenario showed what the view renders: intervals, the tables, bars, the summary.
    for want in ["reclaim in the last", "mt-rc-replay", "BY CGROUP", "memcg stalls:", "usecs", "|*", "reclaim summary over"] {
        assert!(live.contains(want), "no {want:?} in the live text:\n{live}");
    }
    if live != replayed {
        let at = live.lines().zip(replayed.lines()).position(|(a, b)| a != b);
        panic!("the replay differs (first at line {at:?}):\n--- live\n{live}\n--- replayed\n{replayed}");
    }
}
