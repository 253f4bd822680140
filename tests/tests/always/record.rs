//! `--record DIR` and `memtrace replay`/`dump` on the real kernel (host and VM): a recorded
//! session replays into exactly what the live run printed, JSON and text; a crash loses at
//! most the frame being written; damage is reported by file and byte offset and the rest is
//! still read; segments rotate and retire; a full disk costs frames, not the session.

use std::time::{Duration, Instant};

// The recorder's file format, crash and disk cases are the same on every kernel: host only
// (`host_only_` names; vm-test lists them as skipped). The VM runs the replay == live case.

use memtrace_tests::{Stress, TempDir, TmpfsMount, Value, time_ms};

use super::{Incidents, MIB, Run, memtrace, records, segments};

/// A session with an OOM, reclaim, a dentry storm and a tmpfs orphan, recorded twice (a
/// JSON run and a text run): each replay prints byte for byte what its live run printed.
#[test]
fn replay_of_a_recording_is_what_the_live_run_printed() {
    let tmp = TempDir::new("al-replay");
    let (json_dir, text_dir) = (tmp.join("json"), tmp.join("text"));
    let json = Run::start(&tmp, "json", &["watch", "1", "--json", "--record", json_dir.to_str().unwrap()]);
    let text = Run::start(&tmp, "text", &["watch", "1", "--record", text_dir.to_str().unwrap()]);
    let inc = Incidents::new("al-replay");
    let kills = inc.cause();
    assert!(kills >= 1, "no OOM kill happened");
    // Two more intervals after the last workload.
    std::thread::sleep(Duration::from_millis(2500));
    let (live_json, _) = json.stop();
    let (live_text, live_err) = text.stop();

    let rec = records(&live_json);
    let cg = |v: &Value, c: &str| v.to_string().contains(c);
    assert!(rec.iter().any(|v| v["type"] == "oom_kill" && v["victim"]["comm"] == "mt-al-oom"), "no OOM kill recorded");
    assert!(rec.iter().any(|v| v["type"] == "reclaim_summary" && cg(v, &inc.reclaim.rel)), "no reclaim in {}", inc.reclaim.rel);
    assert!(rec.iter().any(|v| v["type"] == "slab_dentry"), "no dentry record");
    assert!(rec.iter().any(|v| v["type"] == "shmem_usage" && cg(v, "orphan.log")), "no tmpfs orphan");
    assert_eq!(rec.last().map(|v| v["type"].clone()), Some("stats".into()));

    let (code, replayed, err) = memtrace(&["replay", json_dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "replay said: {err}");
    assert_same("JSON", &live_json, &replayed);

    assert!(live_text.contains("OOM KILL") && live_text.contains("mt-al-oom"), "{live_text}");
    let (code, replayed, err) = memtrace(&["replay", text_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_same("text", &live_text, &replayed);
    for line in err.lines() {
        assert!(live_err.contains(line), "replay said {line:?}, the live run did not: {live_err}");
    }

    // One family, and a time window: the OOM view alone, only records inside it.
    let (code, oom_only, _) = memtrace(&["replay", json_dir.to_str().unwrap(), "oom", "--json"]);
    assert_eq!(code, 0);
    let fams: Vec<Value> = records(&oom_only);
    assert!(fams.iter().all(|v| v["type"] == "oom_kill" || v["type"] == "ready" || v["type"] == "stats"), "{oom_only}");
    let kill = rec.iter().find(|v| v["type"] == "oom_kill").unwrap();
    let (kill_ms, at) = (time_ms(kill).unwrap(), kill["time"].as_str().unwrap());
    for (flag, keep) in [("--from", &(|t: u64| t >= kill_ms) as &dyn Fn(u64) -> bool), ("--to", &|t| t <= kill_ms)] {
        let (code, window, err) = memtrace(&["replay", json_dir.to_str().unwrap(), "--json", flag, at]);
        assert_eq!(code, 0, "{err}");
        let window = records(&window);
        assert!(window.iter().any(|v| v["type"] == "oom_kill"), "{flag} {at} left out the kill");
        assert!(window.iter().all(|v| time_ms(v).is_none_or(keep)), "{flag} {at} let other records through");
        assert!(window.len() < rec.len(), "{flag} {at} kept everything");
    }
}

/// The replay printed what the live run printed; else the first difference, with the
/// lines around it.
fn assert_same(what: &str, live: &str, replayed: &str) {
    if live == replayed {
        return;
    }
    let (l, r): (Vec<&str>, Vec<&str>) = (live.lines().collect(), replayed.lines().collect());
    let at = l.iter().zip(&r).position(|(a, b)| a != b).unwrap_or(l.len().min(r.len()));
    let around = |v: &[&str]| v[at.saturating_sub(2)..(at + 3).min(v.len())].join("\n");
    panic!(
        "the {what} replay differs at line {at} ({} lines live, {} replayed):\n--- live\n{}\n--- replayed\n{}",
        l.len(),
        r.len(),
        around(&l),
        around(&r)
    );
}

/// Busy records: a dentry storm and a memcg reclaim storm, until dropped.
struct Busy {
    _cg: memtrace_tests::MemCgroup,
    _dir: TempDir,
    _stress: Vec<Stress>,
}

fn busy(tag: &str) -> Busy {
    let cg = memtrace_tests::MemCgroup::new(&format!("{tag}-busy"), 32 * MIB);
    let dir = TempDir::new(&format!("{tag}-busy-dentries"));
    let mut storm = Stress::spawn(&["lazyfree", "--mb", "64", "--churn", "--comm", "mt-al-busy", "--cgroup", cg.dir_str()]);
    storm.wait_line("ready", Duration::from_secs(60));
    let mut stat = Stress::spawn(&["stat-missing", "--count", "1000000000", "--dir", dir.str(), "--comm", "mt-al-stat"]);
    stat.wait_line("ready", Duration::from_secs(60));
    Busy { _cg: cg, _dir: dir, _stress: vec![storm, stat] }
}

/// `watch 1 --json --record TMP/rec` under [`busy`] load for `ms` milliseconds, still running.
fn busy_session(tag: &str, ms: u64) -> (TempDir, std::path::PathBuf, Busy, Run) {
    let tmp = TempDir::new(tag);
    let dir = tmp.join("rec");
    let busy = busy(tag);
    let run = Run::start(&tmp, "live", &["watch", "1", "--json", "--record", dir.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(ms));
    (tmp, dir, busy, run)
}

/// kill -9 while records stream: the recording is a prefix of what the live run printed,
/// short of at most the frame being written (the last second's records).
#[test]
fn host_only_kill_9_loses_at_most_the_frame_being_written() {
    let (_tmp, dir, _busy, run) = busy_session("al-kill", 0);
    // When each line reached stdout (the recorder got the record at the same moment).
    let mut counts = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(6300) {
        counts.push((Instant::now(), run.stdout().lines().count()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out_path = run.out.clone();
    let killed = Instant::now();
    run.kill9();
    let live_text = std::fs::read_to_string(&out_path).unwrap();
    let live: Vec<&str> = live_text.lines().filter(|l| l.ends_with('}')).collect();
    let (code, replayed, err) = memtrace(&["replay", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    for line in err.lines() {
        assert!(line.contains("truncated zstd frame") && line.contains("at byte"), "{err}");
    }
    let rec: Vec<&str> = replayed.lines().collect();
    assert!(rec.len() > 10, "only {} records recorded", rec.len());
    assert_eq!(&live[..rec.len()], &rec[..], "the recording is not a prefix of the live output");
    let lost: Vec<Value> = live[rec.len()..].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    eprintln!("{} records live, {} recorded, {} lost to the kill", live.len(), rec.len(), lost.len());
    assert!(lost.len() <= 1000, "{} records lost", lost.len());
    // Lines printed in the last 2.5 s before the kill: a frame is written every second.
    let before = counts.iter().rev().find(|(t, _)| killed.duration_since(*t) >= Duration::from_millis(2500));
    let recent = live.len() - before.map_or(0, |(_, n)| *n);
    assert!(lost.len() <= recent, "{} records lost, {recent} printed in the last 2.5 s: {:?}", lost.len(), lost.first());
}

/// A finished recording, damaged three ways: cut inside its last frame, a byte flipped in a
/// middle frame, cut inside its header; and a foreign file.
#[test]
fn host_only_damage_is_named_by_file_and_offset_and_the_rest_replayed() {
    let (tmp, dir, _busy, run) = busy_session("al-damage", 4500);
    let (live, _) = run.stop();
    let segs = segments(&dir);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let data = std::fs::read(&segs[0]).unwrap();
    let frames: Vec<usize> = data.windows(4).enumerate().filter(|(_, w)| *w == [0x28, 0xB5, 0x2F, 0xFD]).map(|(i, _)| i).collect();
    assert!(frames.len() >= 4, "only {} frames", frames.len());
    let seg = tmp.join("one.jsonl.zst");
    let seg_s = seg.to_str().unwrap();
    let live_lines: Vec<&str> = live.lines().collect();

    // Cut inside the last frame.
    std::fs::write(&seg, &data[..data.len() - 7]).unwrap();
    let (code, out, err) = memtrace(&["replay", seg_s, "--json"]);
    assert_eq!(code, 0, "{err}");
    let last = *frames.last().unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with(&format!("memtrace: {seg_s}: damaged at byte {last}: truncated zstd frame")), "{err}");
    let got: Vec<&str> = out.lines().collect();
    assert!(got.len() < live_lines.len(), "nothing was cut");
    assert_same("cut", &live_lines[..got.len()].join("\n"), &got.join("\n"));

    // A flipped byte in the second data frame: it goes, the frames after it stay.
    let mut flipped = data.clone();
    let (start, end) = (frames[2], frames[3]);
    flipped[(start + end) / 2] ^= 0x5a;
    std::fs::write(&seg, &flipped).unwrap();
    let (code, out, err) = memtrace(&["replay", seg_s, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("{seg_s}: damaged at byte {start}:")), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let got: Vec<&str> = out.lines().collect();
    assert!(got.len() < live_lines.len(), "the damaged frame's records are gone");
    assert_eq!(got.last(), live_lines.last(), "the frames after the damage are read");
    assert!(got.iter().all(|l| live_lines.contains(l)));

    // Cut inside the header: nothing readable, exit 2.
    std::fs::write(&seg, &data[..10]).unwrap();
    let (code, out, err) = memtrace(&["replay", seg_s]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains(&format!("{seg_s}: damaged at byte 0:")) && err.contains("no record could be read"), "{err}");

    // A foreign file.
    std::fs::write(&seg, b"\x7fELF\x02\x01\x01\x00 not a recording\n").unwrap();
    let (code, _, err) = memtrace(&["replay", seg_s]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a memtrace recording or JSON-lines file") && err.contains("at byte 0"), "{err}");
    let (code, _, err) = memtrace(&["dump", seg_s, "--format", "json"]);
    assert_eq!(code, 2, "{err}");
}

/// Small limits (--retain 8s, --max-size 24K): a new segment every 2 s or 6 KiB (a quarter
/// of each), the oldest deleted by age and by size, each segment readable on its own with
/// its header first.
#[test]
fn host_only_segments_rotate_and_the_oldest_go() {
    let tmp = TempDir::new("al-rotate");
    let dir = tmp.join("rec");
    let _busy = busy("al-rotate");
    let args = ["watch", "1", "--quiet", "--record", dir.to_str().unwrap(), "--retain", "8s", "--max-size", "24K"];
    let run = Run::start(&tmp, "live", &args);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        seen.extend(segments(&dir));
        let total: u64 = segments(&dir).iter().filter_map(|s| s.metadata().ok()).map(|m| m.len()).sum();
        assert!(total <= 40 * 1024, "the recording holds {total} bytes");
    }
    let (out, _) = run.stop();
    assert!(out.is_empty(), "--quiet printed {out}");
    let left = segments(&dir);
    assert!(seen.len() >= 8, "only {} segments in 20 s", seen.len());
    assert!(left.len() < seen.len(), "nothing was deleted: {left:?}");
    let now = std::time::SystemTime::now();
    let mut numbers = Vec::new();
    for s in &left {
        let age = now.duration_since(s.metadata().unwrap().modified().unwrap()).unwrap_or_default();
        assert!(age < Duration::from_secs(8 + 4), "{} is {age:?} old", s.display());
        let (code, out, err) = memtrace(&["dump", s.to_str().unwrap(), "--format", "json"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.is_empty(), "{}: {err}", s.display());
        let first = records(&out).into_iter().next().unwrap();
        assert_eq!(first["type"], "recording", "{first}");
        assert_eq!(first["format"], 1);
        for k in ["memtrace", "kernel", "hostname", "boot_id", "page_size", "boot_to_wall_ns", "probes", "gaps"] {
            assert!(first.get(k).is_some(), "no {k} in {first}");
        }
        numbers.push(first["segment"].as_u64().unwrap());
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let (code, _, err) = memtrace(&["replay", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// A recording on a full filesystem: the session goes on, every segment stays readable
/// (failed frames are cut off again), and the JSON output lost nothing.
#[test]
fn host_only_a_full_disk_costs_frames_not_the_session() {
    let fs = TmpfsMount::new("al-full", 16 * 1024);
    let tmp = TempDir::new("al-full-logs");
    let _busy = busy("al-full");
    let run = Run::start(&tmp, "live", &["watch", "1", "--json", "--record", fs.dir_str()]);
    std::thread::sleep(Duration::from_secs(8));
    let (out, err) = run.stop();
    assert!(err.contains("recording: writing") && err.contains("records lost"), "the disk never filled: {err}");
    let live = records(&out);
    assert_eq!(live.last().map(|v| v["type"].clone()), Some("stats".into()), "the session went on to its end");
    for s in segments(&fs.dir) {
        let (code, _, err) = memtrace(&["dump", s.to_str().unwrap(), "--format", "json"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.is_empty(), "{}: {err}", s.display());
    }
}
