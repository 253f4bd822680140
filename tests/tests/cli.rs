//! Bad input and missing prerequisites: a clear one-line error and a non-zero exit (2),
//! never a panic.

use std::{os::unix::process::CommandExt as _, process::Command};

use memtrace_tests::{btf::KernelBtf, memtrace_bin, require_root, run_memtrace};

fn assert_usage_error(args: &[&str], needle: &str) {
    let (code, out, err) = run_memtrace(args);
    assert_eq!(code, 2, "{args:?}: exit {code}, stderr {err}");
    assert!(err.contains(needle), "{args:?}: stderr {err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?} printed {out}");
}

#[test]
fn bad_flags_and_values_are_rejected() {
    assert_usage_error(&["frobnicate"], "unrecognized subcommand");
    assert_usage_error(&[], "Usage");
    assert_usage_error(&["oom", "--bogus"], "unexpected argument");
    assert_usage_error(&["oom", "--duration", "0"], "positive number of seconds");
    assert_usage_error(&["oom", "--duration", "soon"], "not a number");
    assert_usage_error(&["oom", "-p", "0"], "not a valid PID");
    assert_usage_error(&["oom", "-p", "x1"], "not a PID");
    assert_usage_error(&["oom", "--pid", "2147483647"], "no such process");
    assert_usage_error(&["watch", "-c", "/no/such/cgroup"], "no such memory cgroup");
    assert_usage_error(&["oom", "-c", "../etc"], "without `..`");
    assert_usage_error(&["doctor", "--json", "extra"], "unexpected argument");
}

#[test]
fn help_lists_every_subcommand() {
    let (code, out, _) = run_memtrace(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["watch", "oom", "doctor", "EXAMPLES"] {
        assert!(out.contains(sub), "--help lacks {sub}: {out}");
    }
}

#[test]
fn missing_btf_is_a_clear_error() {
    require_root();
    assert_usage_error(&["--btf", "/nonexistent/vmlinux", "oom"], "CONFIG_DEBUG_INFO_BTF");
    // A file that is not BTF, and one without an end.
    assert_usage_error(&["--btf", "/proc/self/status", "oom"], "not usable (malformed BTF: not BTF");
    assert_usage_error(&["--btf", "/dev/zero", "oom"], "larger than 64 MiB");
}

/// A `--btf` file that is not this kernel's BTF: exit 2 and one line naming the file
/// and what is wrong with it, for each way a file can be wrong. The last three are the
/// inputs that crashed the reader before it checked the type graph (stack overflow,
/// `expect` in layout.rs, u32 overflow).
#[test]
fn corrupt_btf_is_a_one_line_error() {
    require_root();
    let btf = KernelBtf::read();
    let cases = [
        ("flipped", btf.flipped(), "malformed BTF"),
        ("truncated", btf.truncated(), "out of bounds"),
        ("big-endian", btf.big_endian(), "big-endian BTF"),
        ("other-arch", btf.other_arch(), "another architecture"),
        ("cyclic", btf.cyclic(), "type cycle"),
        ("dangling", btf.dangling(), "past the last"),
        ("overflowing", btf.overflowing(), "overflows"),
    ];
    let dir = std::env::temp_dir().join(format!("memtrace-badbtf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data, needle) in cases {
        let path = dir.join(format!("{name}.btf"));
        std::fs::write(&path, data).unwrap();
        for cmd in ["oom", "watch"] {
            let args = ["--btf", path.to_str().unwrap(), cmd, "--json", "--duration", "5"];
            let (code, out, err) = run_memtrace(&args);
            assert_eq!(code, 2, "{name} {cmd}: exit {code}, stderr {err}");
            assert_eq!(err.lines().count(), 1, "{name} {cmd}: not one line: {err}");
            assert!(err.contains(needle) && err.contains(path.to_str().unwrap()), "{name} {cmd}: {err}");
            assert!(!err.contains("panicked"), "{name} {cmd}: {err}");
            assert!(out.is_empty(), "{name} {cmd}: {out}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn not_root_is_a_clear_error() {
    require_root();
    // Copy the binary where an unprivileged user can execute it.
    let dir = std::env::temp_dir().join(format!("memtrace-nonroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("memtrace");
    std::fs::copy(memtrace_bin(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [&["oom"][..], &["watch", "--json"], &["doctor"]] {
        let out = Command::new(&bin).args(args).uid(65534).gid(65534).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("needs root"), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In a private mount namespace without tracefs, memtrace mounts it itself; where it cannot
/// (no /sys/kernel/tracing directory), it says so and exits 2.
#[test]
fn tracefs_is_mounted_or_reported() {
    require_root();
    let bin = memtrace_bin();
    let btf = std::env::temp_dir().join(format!("memtrace-btf-{}", std::process::id()));
    std::fs::copy("/sys/kernel/btf/vmlinux", &btf).unwrap();
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; \
         grep -q ' tracefs ' /proc/self/mounts && exit 90; \
         {bin} --btf {btf} doctor --json >/dev/null || exit 91; \
         grep -q ' tracefs ' /proc/self/mounts || exit 92; \
         umount /sys/kernel/tracing; mount -t tmpfs none /sys/kernel; \
         {bin} --btf {btf} oom; echo rc=$?",
        bin = bin.display(),
        btf = btf.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux or busybox)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_file(&btf).unwrap();
    assert!(out.status.success(), "step failed: {:?} {stderr}", out.status.code());
    assert!(stdout.contains("rc=2"), "{stdout} {stderr}");
    assert!(stderr.contains("tracefs is not mounted"), "{stderr}");
}
