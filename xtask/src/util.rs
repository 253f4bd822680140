//! Shared helpers: running commands, workspace paths, building memtrace.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the memtrace binary (optionally for a target such as the musl one for the VM)
/// and returns its path.
pub fn build_memtrace(release: bool, target: Option<&str>) -> Result<PathBuf> {
    let root = workspace_root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&root).args(["build", "--package", "memtrace"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    exec(&mut cmd)?;
    let mut p = root.join("target");
    if let Some(t) = target {
        p = p.join(t);
    }
    Ok(p.join(if release { "release" } else { "debug" }).join("memtrace"))
}

/// The memory-controller hierarchy the benchmarks press inside: (mount, is v2). v2 when
/// the unified hierarchy has the memory controller, else v1's memory mount.
pub fn memory_hierarchy() -> Result<(PathBuf, bool)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mut v1 = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        if f[2] == "cgroup2"
            && std::fs::read_to_string(Path::new(f[1]).join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        {
            return Ok((PathBuf::from(f[1]), true));
        }
        if f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory") {
            v1 = Some(PathBuf::from(f[1]));
        }
    }
    Ok((v1.context("no memory cgroup hierarchy is mounted")?, false))
}
