//! Builds the BPF object (memtrace-ebpf's `memtrace` binary) with aya-build; main.rs
//! embeds it with include_bytes_aligned!.
//!
//! Also records where this build came from, for `memtrace --version`:
//! - MEMTRACE_GIT_COMMIT: HEAD's commit (12 hex digits) and date, or the
//!   MEMTRACE_GIT_COMMIT environment variable when building outside a git checkout, else
//!   "unknown"; MEMTRACE_GIT_DATE: the commit date alone (the man pages' date);
//! - MEMTRACE_AYA: the aya and aya-ebpf versions in Cargo.lock (what was linked);
//! - MEMTRACE_BPF_TOOLCHAIN: `rustc -V` of the toolchain aya-build runs (`rustup run
//!   nightly`), its LLVM, and `bpf-linker --version`.

use std::{path::Path, process::Command};

fn main() -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    provenance(workspace);
    let metadata_root = workspace.join("memtrace-ebpf");
    let root = metadata_root.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package { name: "memtrace-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}

fn provenance(workspace: &Path) {
    let (commit, date) = git_commit(workspace);
    println!("cargo:rustc-env=MEMTRACE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=MEMTRACE_GIT_DATE={date}");
    let lock = workspace.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let lock = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = |name| locked_version(&lock, name).unwrap_or_else(|| "unknown".into());
    println!(
        "cargo:rustc-env=MEMTRACE_AYA=aya {} (aya-ebpf {})",
        version("aya"),
        version("aya-ebpf")
    );
    println!("cargo:rustc-env=MEMTRACE_BPF_TOOLCHAIN={}", bpf_toolchain());
}

/// Trimmed stdout of a command that succeeded.
fn stdout(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// ("<12 hex digits> (<commit date>)", "<commit date>"), the date as YYYY-MM-DD.
fn git_commit(workspace: &Path) -> (String, String) {
    println!("cargo:rerun-if-env-changed=MEMTRACE_GIT_COMMIT");
    if let Some(c) = std::env::var("MEMTRACE_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()) {
        return (c.trim().to_string(), String::new());
    }
    let git = |args: &[&str]| stdout(Command::new("git").arg("-C").arg(workspace).args(args));
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's ref and
    // packed-refs (a commit). Only existing files: a missing one would rerun every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", &name]) {
            let p = workspace.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    match git(&["log", "-1", "--format=%H %cs"]) {
        Some(line) => {
            let (hash, date) = line.split_once(' ').unwrap_or((&line, ""));
            (format!("{} ({date})", &hash[..hash.len().min(12)]), date.to_string())
        }
        None => ("unknown".into(), String::new()),
    }
}

/// The version of `name` in a Cargo.lock (the first `[[package]]` of that name).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(v.to_string());
        }
    }
    None
}

/// What builds the BPF object: the same `rustup run nightly` toolchain aya-build uses, and
/// the bpf-linker it links with.
fn bpf_toolchain() -> String {
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return "not built here (AYA_BUILD_SKIP)".into();
    }
    let vv = stdout(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]));
    let rustc = vv
        .as_deref()
        .and_then(|v| v.lines().next())
        .map_or_else(|| "rustc unknown".to_string(), str::to_string);
    let llvm = vv
        .as_deref()
        .and_then(|v| v.lines().find_map(|l| l.strip_prefix("LLVM version: ")))
        .map_or(String::new(), |v| format!(", LLVM {v}"));
    let linker = stdout(Command::new("bpf-linker").arg("--version"))
        .unwrap_or_else(|| "bpf-linker unknown".into());
    format!("{rustc}{llvm}; {linker}")
}
