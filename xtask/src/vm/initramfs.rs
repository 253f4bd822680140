//! The guest: static (musl) memtrace, mt-stress and every memtrace-tests test executable,
//! in a busybox initramfs whose /init mounts what memtrace needs, runs `memtrace doctor`
//! and the tests, prints `init: success|failure` and powers off.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::MUSL;
use crate::util::{exec, output};

pub(super) const BUSYBOX: &str = "/bin/busybox";

// ---------------------------------------------------------------------------------------
// Guest binaries and the initramfs

/// Static executables for the guest.
pub(super) struct Guest {
    pub(super) memtrace: PathBuf,
    pub(super) mt_stress: PathBuf,
    pub(super) tests: Vec<PathBuf>,
}

impl Guest {
    /// Keeps only the test binaries named in `wanted` (all when it is empty).
    pub(super) fn keep_tests(&mut self, wanted: &[String]) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let label = |t: &PathBuf| {
            super::console::binary_label(&t.file_name().unwrap_or_default().to_string_lossy())
        };
        let known: Vec<String> = self.tests.iter().map(label).collect();
        for w in wanted {
            if !known.contains(w) {
                bail!("--test {w}: no such test binary (there are: {})", known.join(", "));
            }
        }
        self.tests.retain(|t| wanted.contains(&label(t)));
        Ok(())
    }
}

/// An executable from cargo's compiler-artifact messages.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Artifact {
    pub(super) name: String,
    pub(super) test: bool,
    pub(super) executable: PathBuf,
}

pub(super) fn build_guest(root: &Path) -> Result<Guest> {
    let mut build = Command::new("cargo");
    build
        .current_dir(root)
        .args(["build", "--release", "--target", MUSL])
        .args([
            "--package",
            "memtrace",
            "--bin",
            "memtrace",
            "--package",
            "memtrace-tests",
            "--bin",
            "mt-stress",
        ]);
    let bins = cargo_artifacts(&mut build)?;
    let bin = |name: &str| {
        bins.iter()
            .find(|a| a.name == name && !a.test)
            .map(|a| a.executable.clone())
            .with_context(|| format!("cargo built no `{name}` executable"))
    };
    let (memtrace, mt_stress) = (bin("memtrace")?, bin("mt-stress")?);
    let mut tests_build = Command::new("cargo");
    tests_build.current_dir(root).args([
        "test",
        "--package",
        "memtrace-tests",
        "--target",
        MUSL,
        "--no-run",
    ]);
    let mut tests: Vec<PathBuf> = cargo_artifacts(&mut tests_build)?
        .into_iter()
        .filter(|a| a.test)
        .map(|a| a.executable)
        .collect();
    tests.sort();
    tests.dedup();
    Ok(Guest {
        memtrace,
        mt_stress,
        tests,
    })
}

/// Runs a cargo build with JSON messages (diagnostics still rendered on stderr) and
/// returns the executables it produced.
pub(super) fn cargo_artifacts(cmd: &mut Command) -> Result<Vec<Artifact>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout)))
}

pub(super) fn parse_artifacts(stdout: &str) -> Vec<Artifact> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter_map(|m| {
            Some(Artifact {
                name: m.pointer("/target/name")?.as_str()?.to_string(),
                test: m.pointer("/profile/test")?.as_bool()?,
                executable: PathBuf::from(m.get("executable")?.as_str()?),
            })
        })
        .collect()
}

/// Stages and packs the initramfs; returns the .cpio.gz.
pub(super) fn initramfs(work: &Path, guest: &Guest) -> Result<PathBuf> {
    let staging = work.join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "tests",
    ] {
        fs::create_dir_all(staging.join(d))?;
    }
    stage_busybox(&staging)?;
    copy_executable(&guest.memtrace, &staging.join("bin/memtrace"))?;
    copy_executable(&guest.mt_stress, &staging.join("bin/mt-stress"))?;
    for t in &guest.tests {
        let name = t.file_name().context("test binary name")?;
        copy_executable(t, &staging.join("tests").join(name))?;
    }
    fs::write(staging.join("init"), INIT)?;
    fs::set_permissions(staging.join("init"), fs::Permissions::from_mode(0o755))?;
    let out = work.join("initramfs.cpio.gz");
    pack(&staging, &out)?;
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "vm-test: initramfs {} ({:.1} MiB, {} test binaries)",
        out.display(),
        size as f64 / 1048576.0,
        guest.tests.len()
    );
    Ok(out)
}

/// busybox-static at /bin/busybox with a link per applet at its usual path.
pub(super) fn stage_busybox(staging: &Path) -> Result<()> {
    copy_executable(Path::new(BUSYBOX), &staging.join("bin/busybox"))
        .context("busybox-static is needed (cargo xtask setup installs it)")?;
    let applets = output(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains(".."))
    {
        let link = staging.join(applet.trim_start_matches('/'));
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

pub(super) fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// cpio (newc, every file owned by root) piped through gzip.
pub(super) fn pack(staging: &Path, out: &Path) -> Result<()> {
    exec(
        Command::new("sh")
            .args([
                "-c",
                "cd \"$1\" && find . -print0 | LC_ALL=C sort -z \
             | cpio --null --create --format=newc --owner=0:0 --quiet | gzip -1 > \"$2\"",
                "pack",
            ])
            .arg(staging)
            .arg(out),
    )
}

/// The guest's /init (busybox sh as PID 1). The kernel finds no /dev/console in the
/// archive; once devtmpfs is mounted, init's and the tests' output goes to the second serial
/// port, ttyS1, which carries nothing else (the kernel's console is ttyS0).
pub(super) const INIT: &str = r#"#!/bin/sh
# Generated by `cargo xtask vm-test` (xtask/src/vm.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
if [ ! -c /dev/ttyS1 ]; then
    echo "init: no /dev/ttyS1 for the results" >/dev/console
    poweroff -f
fi
exec </dev/null >/dev/ttyS1 2>&1
mount -t proc proc /proc
echo
echo "init: started (kernel uptime $(cut -d' ' -f1 /proc/uptime) s)"
status=success
must() { "$@" || { echo "init: '$*' failed"; status=failure; }; }
must mount -t sysfs sysfs /sys
must mount -t tracefs tracefs /sys/kernel/tracing
# Optional: lets doctor report the lockdown mode.
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
must mount -t cgroup2 cgroup2 /sys/fs/cgroup
must mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && must mount -t tmpfs tmpfs /dev/shm
must sh -c 'echo +memory > /sys/fs/cgroup/cgroup.subtree_control'
# Console loglevel 1: the kernel's console stays short (results travel on ttyS1 anyway);
# dmesg keeps everything and its tail is printed on failure.
echo 1 > /proc/sys/kernel/printk
export MEMTRACE_BIN=/bin/memtrace MT_STRESS_BIN=/bin/mt-stress MEMTRACE_VM=1 CI=true
echo "init: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
echo "==== memtrace doctor"
memtrace doctor
rc=$?
echo "init: doctor exit $rc"
[ $rc -eq 0 ] || status=failure
for t in /tests/*; do
    [ -x "$t" ] || continue
    echo "==== $t"
    # Tests named host_only need what the guest lacks (a Prometheus server, a disk, time):
    # listed as skipped, not run.
    "$t" --list --include-ignored 2>/dev/null | grep host_only \
        | sed -n 's/^\(.*\): test$/test \1 ... skipped (host only)/p'
    "$t" --include-ignored --skip host_only --test-threads=1
    rc=$?
    echo "init: $t exit $rc"
    [ $rc -eq 0 ] || status=failure
done
if [ $status != success ]; then
    echo "==== dmesg (last 80 lines)"
    dmesg | tail -n 80
fi
echo "init: $status"
poweroff -f
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_test_executables() {
        let out = r#"{"reason":"compiler-artifact","target":{"name":"vm_smoke","kind":["test"]},"profile":{"test":true},"executable":"/t/vm_smoke-0123"}
    {"reason":"compiler-artifact","target":{"name":"libc","kind":["lib"]},"profile":{"test":false},"executable":null}
    {"reason":"build-finished","success":true}
    not json
    {"reason":"compiler-artifact","target":{"name":"mt-stress","kind":["bin"]},"profile":{"test":false},"executable":"/t/mt-stress"}"#;
        let a = parse_artifacts(out);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0],
            Artifact {
                name: "vm_smoke".into(),
                test: true,
                executable: "/t/vm_smoke-0123".into()
            }
        );
        assert!(!a[1].test);
    }

    #[test]
    fn init_script_does_what_the_tests_need() {
        for needed in [
            "mount -t tracefs",
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
            "+memory > /sys/fs/cgroup/cgroup.subtree_control",
            "MEMTRACE_BIN=/bin/memtrace MT_STRESS_BIN=/bin/mt-stress MEMTRACE_VM=1 CI=true",
            "exec </dev/null >/dev/ttyS1 2>&1",
            "--include-ignored --skip host_only --test-threads=1",
            "skipped (host only)",
            "echo \"init: $status\"",
            "poweroff -f",
        ] {
            assert!(INIT.contains(needed), "{needed}");
        }
    }
}
