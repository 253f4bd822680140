//! Loss is measured, not assumed: an OOM among 10,000 processes (2,000 in the VM's 1 GiB)
//! and candidates pushed through a one-page ring buffer. The `oom_kill` record always
//! arrives (kill records have a ring buffer of their own); its candidates plus `lost` are
//! the processes of the OOM domain, whatever was lost and why; the stats line's drops are
//! what the kernel sent minus what the agent received.
//!
//! The domain is counted as the kernel counts it: processes (thread group leaders; the
//! kernel's memcg scan and the walk visit those), i.e. the cgroup's `cgroup.procs` once
//! every sleeper is up, plus the process that grows into the limit. Nothing else joins
//! the cgroup, and no sleeper exits before the kill.

use std::{collections::BTreeSet, process::Command, time::Duration};

use memtrace_tests::{MemCgroup, Memtrace, Stress, Value, in_vm, memtrace_bin, stats_of};

use super::{MIB, Sleepers, attached, int, next_kill};

/// The test-only switches this file turns (README, Tests).
const MAX_WALK_ENV: &str = "MEMTRACE_OOM_MAX_WALK";
const CANDIDATES_RING_ENV: &str = "MEMTRACE_RING_BYTES_OOM_CANDIDATES";
const EVENTS_RING_ENV: &str = "MEMTRACE_RING_BYTES_EVENTS";

/// `n` sleepers named `comm` in the memory cgroup `cg`, whose limit is then set `room`
/// above what they use: a grower reaches it (never the host's memory). Returns the
/// sleepers and the domain's processes before the grower (the sleepers and their parent).
fn crowd(cg: &MemCgroup, comm: &str, n: usize, room: u64) -> (Sleepers, Vec<u32>) {
    // Room to start them: about 25 KiB each (task, kernel stack, 1 KiB of user stack).
    cg.set_limit(128 * MIB + n as u64 * 64 * 1024);
    let sleepers = Sleepers::spawn(cg, comm, n);
    let mut procs: Vec<u32> = cg.procs().into_iter().map(|p| p as u32).collect();
    procs.sort_unstable();
    let mut want: Vec<u32> = sleepers.pids.clone();
    want.push(sleepers.parent_pid());
    want.sort_unstable();
    assert_eq!(procs, want, "the cgroup holds the sleepers and their parent");
    let usage = cg.usage();
    cg.set_limit(usage + room);
    let (n, mib, limit) = (procs.len(), usage / MIB, (usage + room) / MIB);
    eprintln!("{comm}: {n} processes use {mib} MiB; limit {limit} MiB");
    (sleepers, procs)
}

/// A process that grows in `cg` until the OOM killer takes it.
fn grower(cg: &MemCgroup, comm: &str) -> Stress {
    let dir = cg.dir_str();
    Stress::spawn(&["hog", "--mb", "512", "--step-kb", "1024", "--comm", comm, "--cgroup", dir])
}

/// (candidates, lost) of a kill record, with the reasons.
fn counts(kill: &Value) -> (u64, u64, &Value) {
    let m = &kill["candidates_method"];
    let n = kill["candidates"].as_array().expect("candidates").len() as u64;
    assert_eq!(m["candidates"], n, "{m}");
    let lost = m["lost"].as_u64().unwrap_or_else(|| panic!("no lost: {m}"));
    let r = &m["lost_reasons"];
    let sum: i64 = ["ring_full", "walk_limit", "agent_evicted", "not_received"]
        .iter()
        .map(|k| int(&r[*k]))
        .sum();
    assert_eq!(sum as u64, lost, "lost is the sum of its reasons: {m}");
    (n, lost, r)
}

#[test]
fn a_memcg_oom_among_ten_thousand_processes_counts_every_candidate() {
    let n = if in_vm() { 2000 } else { 10_000 };
    let cg = MemCgroup::new("crowd", 128 * MIB);
    // Started before the crowd, this one sized its candidates' ring for the few tasks
    // running then: what it cannot take is lost, and counted.
    let mut early = Memtrace::start(&["oom", "--json", "-c", &cg.rel]);
    let (_sleepers, procs) = crowd(&cg, "mt-crowd", n, 48 * MIB);
    // Started now, memtrace sizes the candidates' ring from the tasks running.
    let mut mt = Memtrace::start(&["oom", "--json", "-c", &cg.rel]);
    let exact = attached(&mt, "oom:oom_badness");
    assert_eq!(exact, in_vm(), "the exact method in the VM (fexit), the task walk on this host");
    // The walk's limit made to bind: the domain's processes past it are counted.
    let mut limited = (!exact).then(|| {
        Memtrace::start_with_env(&["oom", "--json", "-c", &cg.rel], &[(MAX_WALK_ENV, "1000")])
    });
    let mut grower = grower(&cg, "mt-crowd-grower");
    let gpid = grower.pid();
    let kill = next_kill(&mut mt, Duration::from_secs(240), "the OOM among the sleepers", |k| {
        k["victim"]["pid"] == gpid
    });
    assert_eq!(grower.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
    let domain = procs.len() as u64 + 1;

    let (cands, lost, reasons) = counts(&kill);
    println!(
        "crowd: {domain} processes in the domain, {cands} candidates, lost {lost} {reasons} ({})",
        kill["candidates_method"]["method"]
    );
    assert_eq!(cands + lost, domain, "{}", kill["candidates_method"]);
    assert_eq!(lost, 0, "the ring holds every candidate: {}", kill["candidates_method"]);
    let rows: BTreeSet<u64> =
        kill["candidates"].as_array().unwrap().iter().filter_map(|c| c["pid"].as_u64()).collect();
    let want: BTreeSet<u64> =
        procs.iter().map(|&p| u64::from(p)).chain([u64::from(gpid)]).collect();
    assert!(rows == want, "the candidates are the domain's processes, each once");
    assert_eq!(kill["candidates"][0]["pid"], gpid, "the grower scores highest");

    let kill = next_kill(&mut early, Duration::from_secs(60), "the early record", |k| {
        k["victim"]["pid"] == gpid
    });
    let (cands, lost, r) = counts(&kill);
    println!("crowd, ring sized before the crowd: {cands} candidates, lost {lost} {r}");
    assert_eq!(cands + lost, domain, "{}", kill["candidates_method"]);
    let s = stats_of(&early.stop(), "oom").clone();
    println!("crowd, ring sized before the crowd, stats: {s}");
    assert_eq!(int(&s["ringbuf_drops"]), int(&s["sent"]) - int(&s["received"]), "{s}");
    if let Some(l) = limited.as_mut() {
        let kill = next_kill(l, Duration::from_secs(60), "the limited walk's record", |k| {
            k["victim"]["pid"] == gpid
        });
        let (cands, lost, r) = counts(&kill);
        println!("crowd, walk limited to 1000 tasks: {cands} candidates, lost {lost} {r}");
        assert_eq!(cands + lost, domain, "{}", kill["candidates_method"]);
        assert!(int(&r["walk_limit"]) > 0, "{r}");
        assert_eq!(r["ring_full"], 0, "{r}");
        assert!(cands <= 1000, "{cands}");
        let notes = kill["notes"].to_string();
        assert!(notes.contains("past the walk's task limit"), "{notes}");
    }
    let lines = mt.stop();
    let s = stats_of(&lines, "oom");
    println!("crowd stats: {s}");
    assert_eq!(s["ringbuf_drops"], 0, "{s}");
    assert_eq!(s["sent"], s["received"], "{s}");
    if let Some(l) = limited {
        l.stop();
    }
}

/// One page for the candidates (32 records) under the burst of an OOM among 500
/// processes: the kill record arrives on its own ring, the candidates the ring could not
/// take are in the kill's `lost` (ring_full), and the stats' drops are what was sent
/// minus what was received.
#[test]
fn a_tiny_candidate_ring_drops_are_counted_and_the_kill_still_arrives() {
    // A bad size is a usage error, named.
    let out = Command::new(memtrace_bin())
        .args(["oom", "--duration", "1"])
        .env(EVENTS_RING_ENV, "1000")
        .output()
        .expect("run memtrace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let want = "MEMTRACE_RING_BYTES_EVENTS=1000: a ring buffer's size is a power of two";
    assert!(err.contains(want), "{err}");

    let n = 500;
    let cg = MemCgroup::new("tinyring", 128 * MIB);
    let (_sleepers, procs) = crowd(&cg, "mt-tiny", n, 32 * MIB);
    // EVENTS too: the oom family writes nothing there any more.
    let env = [(CANDIDATES_RING_ENV, "4096"), (EVENTS_RING_ENV, "4096")];
    let mut mt = Memtrace::start_with_env(&["oom", "--json", "-c", &cg.rel], &env);
    let mut grower = grower(&cg, "mt-tiny-grower");
    let gpid = grower.pid();
    let kill = next_kill(&mut mt, Duration::from_secs(120), "the OOM behind a tiny ring", |k| {
        k["victim"]["pid"] == gpid
    });
    assert_eq!(grower.wait_signal(Duration::from_secs(60)), Some(libc::SIGKILL));
    let domain = procs.len() as u64 + 1;
    let (cands, lost, r) = counts(&kill);
    println!("tiny ring: {domain} processes, {cands} candidates, lost {lost} {r}");
    assert_eq!(cands + lost, domain, "{}", kill["candidates_method"]);
    assert!(int(&r["ring_full"]) > 0, "a 4 KiB ring cannot take {domain} candidates: {r}");
    assert!(kill["notes"].to_string().contains("ring buffer full"), "{}", kill["notes"]);

    let lines = mt.stop();
    let s = stats_of(&lines, "oom");
    println!("tiny ring stats: {s}");
    let (sent, received, drops) = (int(&s["sent"]), int(&s["received"]), int(&s["ringbuf_drops"]));
    assert!(drops >= int(&r["ring_full"]), "this kill's drops are among the stats': {s}");
    assert_eq!(drops, sent - received, "dropped = sent - received: {s}");
    assert_eq!(s["undecodable"], 0, "{s}");
}
