//! Shmem attribution on the real kernel: processes with distinctive names put shmem into a
//! fresh tmpfs, /dev/shm, a memfd, a SysV segment and shared anonymous memory (inside a
//! memory cgroup with room to spare); memtrace must name them, the file, the mount and the
//! cgroup, keep the attribution after they exit, and see the pages freed.
//!
//! These tests hold whatever strategy the kernel offers (LRU insertion + NR_SHMEM on the
//! host, fexit/kprobe in the VM); tests that force a fallback say so.

use std::time::Duration;

use memtrace_tests::{MemCgroup, Memtrace, Stress, TextMemtrace, TmpfsMount, Value};

mod shmem_common;

use shmem_common::{MIB, NEAR_ZERO, WAIT, assert_clean_stats, is, strategy, tmpfs_scenario, u};

/// The test, with the kernel's best strategies.
#[test]
fn tmpfs_writer_is_attributed_after_exit_and_delete_frees() {
    let lines = tmpfs_scenario("tmpfs-w", &[], &["exact", "cpu_run"]);
    let ready = &lines[0];
    let alloc = strategy(ready, "shmem:alloc").expect("shmem:alloc attached");
    assert!(strategy(ready, "shmem:free").is_some(), "{ready}");
    // Final records close the run.
    assert!(lines.iter().any(|v| is(v, "shmem_reconcile") && v["final"] == true));
    assert!(lines.iter().any(|v| is(v, "shmem_accuracy")));
    eprintln!("shmem:alloc via {alloc}");
}

/// Classic tracepoints only (no BTF tracepoints, raw tracepoints, kprobes or fentry):
/// same answers.
#[test]
fn classic_tracepoints_give_the_same_answers() {
    let lines = tmpfs_scenario(
        "tmpfs-tp",
        &[("MEMTRACE_DISABLE", "tp_btf,raw_tp,fexit,fentry,kprobe,kretprobe")],
        &["cpu_run", "drain_task"],
    );
    assert_eq!(strategy(&lines[0], "shmem:alloc"), Some("tracepoint"), "{}", lines[0]);
    assert_eq!(strategy(&lines[0], "shmem:free"), Some("tracepoint"), "{}", lines[0]);
}

/// Without the memcg NR_SHMEM hook the LRU strategy names the task that drained the per-CPU
/// batch: for a lone 64 MiB writer that is the writer for all but the last batch. The
/// missing hook is a reported gap.
#[test]
fn without_nr_shmem_the_draining_task_is_named() {
    let lines = tmpfs_scenario(
        "tmpfs-drain",
        &[(
            "MEMTRACE_DISABLE",
            "fexit,fentry,kprobe,kretprobe,shmem_memcg_btf,shmem_memcg_raw,shmem_memcg_tp",
        )],
        &["drain_task"],
    );
    let ready = &lines[0];
    assert!(matches!(strategy(ready, "shmem:alloc"), Some("tp_btf" | "raw_tp" | "tracepoint")));
    let gap = ready["gaps"].as_array().unwrap().iter().find(|g| g["hook"] == "shmem:nr_shmem");
    assert!(gap.is_some(), "shmem:nr_shmem must be reported as a gap: {ready}");
}

/// /dev/shm (POSIX shm), written through a shared mapping (page faults), by a process
/// that exits; then unlinked.
#[test]
fn dev_shm_writer_through_a_mapping() {
    let cg = MemCgroup::new("shmem-devshm", 128 * MIB);
    let mut mt = Memtrace::start(&["shmem", "1", "--json", "--top", "100"]);
    let name = format!("mt-shm-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    let mut w = Stress::spawn(&[
        "shm-write",
        "--name",
        &name,
        "--mb",
        "32",
        "--comm",
        "mt-devshm-w",
        "--cgroup",
        cg.dir_str(),
    ]);
    let ino: u64 = w.wait_line("ready", WAIT).parse().unwrap();
    assert_eq!(w.wait_signal(WAIT), None);
    let rec = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_usage")
                && v["comm"] == "mt-devshm-w"
                && v["inode"] == ino
                && u(&v["live_bytes"]) >= 30 * MIB
        })
        .unwrap_or_else(|| {
            let _ = std::fs::remove_file(&path);
            panic!("no /dev/shm attribution: {:?}", mt.seen)
        });
    assert_eq!(rec["kind"], "tmpfs", "{rec}");
    assert_eq!(rec["mount"], "/dev/shm", "{rec}");
    assert_eq!(rec["path"], path.as_str(), "{rec}");
    assert_eq!(rec["tgid"], w.pid(), "{rec}");
    assert_eq!(rec["cgroup"], cg.rel.as_str(), "{rec}");
    assert_eq!(rec["writer_alive"], false, "{rec}");
    std::fs::remove_file(&path).unwrap();
    let rec = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_usage") && v["inode"] == ino && u(&v["freed_bytes"]) >= 30 * MIB
        })
        .expect("free after unlink");
    assert!(u(&rec["live_bytes"]) <= NEAR_ZERO, "{rec}");
    assert_clean_stats(&mt.stop());
}

/// A memfd held by a live process: kind memfd, named memfd:NAME on the internal mount;
/// freed when the holder dies.
#[test]
fn memfd_writer() {
    let cg = MemCgroup::new("shmem-memfd", 128 * MIB);
    let mut mt = Memtrace::start(&["shmem", "1", "--json", "--top", "100"]);
    let mut w = Stress::spawn(&[
        "memfd-write",
        "--name",
        "mt-memfd-test",
        "--mb",
        "32",
        "--comm",
        "mt-memfd-w",
        "--cgroup",
        cg.dir_str(),
    ]);
    let ino: u64 = w.wait_line("ready", WAIT).parse().unwrap();
    let rec = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_usage") && v["comm"] == "mt-memfd-w" && u(&v["live_bytes"]) >= 30 * MIB
        })
        .unwrap_or_else(|| panic!("no memfd attribution: {:?}", mt.seen));
    assert_eq!(rec["kind"], "memfd", "{rec}");
    assert_eq!(rec["name"], "memfd:mt-memfd-test", "{rec}");
    assert_eq!(rec["mount"], "[shm_mnt]", "{rec}");
    assert_eq!(rec["path"], Value::Null, "{rec}");
    assert_eq!(rec["inode"], ino, "{rec}");
    assert_eq!(rec["tgid"], w.pid(), "{rec}");
    assert_eq!(rec["writer_alive"], true, "{rec}");
    assert_eq!(rec["cgroup"], cg.rel.as_str(), "{rec}");
    let m = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_mount") && v["kind"] == "internal" && u(&v["live_bytes"]) >= 30 * MIB
        })
        .expect("internal mount record");
    assert_eq!(m["df_used_bytes"], Value::Null, "the internal mount has no df: {m}");
    drop(w); // SIGKILL: the last reference to the memfd goes away
    let rec = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_usage") && v["inode"] == ino && u(&v["freed_bytes"]) >= 30 * MIB
        })
        .expect("memfd freed when its holder died");
    assert!(u(&rec["live_bytes"]) <= NEAR_ZERO, "{rec}");
    assert_clean_stats(&mt.stop());
}

/// A SysV segment outlives its creator until IPC_RMID; shared anonymous memory lives as
/// long as a mapping does.
#[test]
fn sysv_and_shared_anonymous_writers() {
    let cg = MemCgroup::new("shmem-sysv", 128 * MIB);
    let mut mt = Memtrace::start(&["shmem", "1", "--json", "--top", "100"]);
    let mut sysv = Stress::spawn(&[
        "sysv-write",
        "--mb",
        "16",
        "--comm",
        "mt-sysv-w",
        "--cgroup",
        cg.dir_str(),
    ]);
    let line = sysv.wait_line("ready", WAIT);
    let (ino, shmid) = line.split_once(' ').unwrap();
    let (ino, shmid): (u64, i32) = (ino.parse().unwrap(), shmid.parse().unwrap());
    assert_eq!(sysv.wait_signal(WAIT), None);
    let mut anon = Stress::spawn(&[
        "shared-anon",
        "--mb",
        "16",
        "--comm",
        "mt-anon-w",
        "--cgroup",
        cg.dir_str(),
    ]);
    let anon_ino: u64 = anon.wait_line("ready", WAIT).parse().unwrap();

    let rec = mt.wait_for(WAIT, |v| {
        is(v, "shmem_usage") && v["comm"] == "mt-sysv-w" && u(&v["live_bytes"]) >= 15 * MIB
    });
    let rec = rec.unwrap_or_else(|| {
        // SAFETY: plain shmctl on the segment this test created.
        unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        panic!("no SysV attribution: {:?}", mt.seen)
    });
    assert_eq!(rec["kind"], "sysv", "{rec}");
    assert!(rec["name"].as_str().unwrap().starts_with("SYSV"), "{rec}");
    assert_eq!(rec["inode"], ino, "{rec}");
    assert_eq!(rec["writer_alive"], false, "{rec}");
    assert_eq!(rec["tgid"], sysv.pid(), "{rec}");
    let rec = mt
        .wait_for(WAIT, |v| {
            is(v, "shmem_usage") && v["comm"] == "mt-anon-w" && u(&v["live_bytes"]) >= 15 * MIB
        })
        .unwrap_or_else(|| panic!("no shared anonymous attribution: {:?}", mt.seen));
    assert_eq!(rec["kind"], "shared_anon", "{rec}");
    assert_eq!(rec["name"], "dev/zero", "{rec}");
    assert_eq!(rec["inode"], anon_ino, "{rec}");
    assert_eq!(rec["cgroup"], cg.rel.as_str(), "{rec}");

    // SAFETY: plain shmctl on the segment this test created (nobody is attached).
    assert_eq!(unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) }, 0);
    drop(anon);
    for (comm, ino) in [("mt-sysv-w", ino), ("mt-anon-w", anon_ino)] {
        let rec = mt
            .wait_for(WAIT, |v| {
                is(v, "shmem_usage")
                    && v["comm"] == comm
                    && v["inode"] == ino
                    && u(&v["freed_bytes"]) >= 15 * MIB
            })
            .unwrap_or_else(|| panic!("{comm}: no free"));
        assert!(u(&rec["live_bytes"]) <= NEAR_ZERO, "{rec}");
    }
    assert_clean_stats(&mt.stop());
}

/// -c shows only writers in (or under) that cgroup, -p only that process; the mount view
/// stays whole.
#[test]
fn filters_select_writers() {
    let cg = MemCgroup::new("shmem-filter", 128 * MIB);
    let fs = TmpfsMount::new("shmem-filter", 64 * MIB);
    let go = fs.path("go");
    let mut inside = Stress::spawn(&[
        "tmpfs-write",
        "--path",
        fs.path("in").to_str().unwrap(),
        "--mb",
        "8",
        "--comm",
        "mt-filter-in",
        "--cgroup",
        cg.dir_str(),
        "--go",
        go.to_str().unwrap(),
    ]);
    let mut by_cg = Memtrace::start(&["shmem", "1", "--json", "-c", &cg.rel]);
    let mut by_pid = Memtrace::start(&["shmem", "1", "--json", "-p", &inside.pid().to_string()]);
    std::fs::write(&go, b"").unwrap();
    inside.wait_line("ready", WAIT);
    assert_eq!(inside.wait_signal(WAIT), None);
    let mut outside = Stress::spawn(&[
        "tmpfs-write",
        "--path",
        fs.path("out").to_str().unwrap(),
        "--mb",
        "8",
        "--comm",
        "mt-filter-out",
    ]);
    outside.wait_line("ready", WAIT);
    assert_eq!(outside.wait_signal(WAIT), None);
    let mount = fs.dir_str();
    for mt in [&mut by_cg, &mut by_pid] {
        mt.wait_for(WAIT, |v| {
            is(v, "shmem_mount") && v["mount"] == mount && u(&v["live_bytes"]) >= 15 * MIB
        })
        .expect("the mount view counts both files");
        let rec = mt
            .wait_for(WAIT, |v| {
                is(v, "shmem_usage")
                    && v["comm"] == "mt-filter-in"
                    && u(&v["live_bytes"]) >= 7 * MIB
            })
            .expect("the selected writer is shown");
        assert_eq!(rec["tgid"], inside.pid());
    }
    // One more report after the outside writer finished, then stop.
    std::thread::sleep(Duration::from_millis(1500));
    for mt in [by_cg, by_pid] {
        let lines = mt.stop();
        assert!(
            !lines.iter().any(|v| v["comm"] == "mt-filter-out"),
            "the other writer is filtered out"
        );
        assert!(lines.iter().any(|v| is(v, "shmem_writer") && v["comm"] == "mt-filter-in"));
    }
}

/// Text mode: mounts by live bytes, each with its files and writers.
#[test]
fn text_mode_lists_mounts_files_and_writers() {
    let fs = TmpfsMount::new("shmem-text", 64 * MIB);
    // Returns once memtrace says it traces: the writer runs after the attach.
    let mt = TextMemtrace::start(&["shmem", "--top", "50"]);
    let file = fs.path("text.log");
    let mut w = Stress::spawn(&[
        "tmpfs-write",
        "--path",
        file.to_str().unwrap(),
        "--mb",
        "16",
        "--comm",
        "mt-text-w",
    ]);
    w.wait_line("ready", WAIT);
    assert_eq!(w.wait_signal(WAIT), None);
    // The final report is taken at the stop, after the writer exited.
    let (stdout, stderr) = mt.stop();
    assert!(stdout.contains("shmem (final)"), "{stdout}");
    assert!(stdout.contains("/proc/meminfo Shmem"), "{stdout}");
    assert!(stdout.contains(&format!("{} (", fs.dir_str())), "mount line: {stdout}");
    // "    16.0 MiB live  tmpfs /tmp/.../text.log (ino N)  by mt-text-w[PID] (exited) ...";
    // the last per-CPU LRU batch (up to 31 pages) may still wait to be drained.
    let marker = format!(" MiB live  tmpfs {} (ino ", file.display());
    let line = stdout.lines().find(|l| l.contains(&marker)).unwrap_or_else(|| panic!("{stdout}"));
    let mib: f64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!((15.8..=16.0).contains(&mib), "file line: {line}");
    assert!(stdout.contains(&format!("mt-text-w[{}] (exited)", w.pid())), "{stdout}");
    assert!(stdout.contains("writers:"), "{stdout}");
    assert!(stderr.contains("tracing shmem:alloc via"), "{stderr}");
    assert!(stderr.contains("shmem accuracy:"), "{stderr}");
}

/// Bad input exits 2 with a message, no panic.
#[test]
fn bad_arguments_are_rejected() {
    for args in [
        &["shmem", "0"][..],
        &["shmem", "1", "0"],
        &["shmem", "--top", "0"],
        &["shmem", "1", "--interval", "1"],
        &["shmem", "-p", "0"],
    ] {
        let (code, _, err) = memtrace_tests::run_memtrace(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
