//! Installs what a fresh machine of this kind lacks, for one purpose only, so that tracing
//! with `cargo xtask run` never puts test tools (qemu, bpftrace, busybox, cpio) on the host
//! being traced:
//!
//! | purpose | what                                                                    |
//! |---------|-------------------------------------------------------------------------|
//! | run     | rust-src for nightly, bpf-linker built against rustc's own LLVM (pinned) |
//! | dist    | run's, the x86_64-unknown-linux-musl target, cargo-deb (pinned), binutils |
//! | bench   | run's, bpftrace (the slab benchmark's baseline)                         |
//! | test    | all of the above, qemu-system-x86, busybox-static, cpio and the Debian  |
//! |         | archive keyring (VM tests), lintian and man-db (package checks), bpftool |
//! |         | (the stop tests), prometheus (the server and promtool), zstd and jq      |
//! |         | (always-on tests)                                                        |
//!
//! Each xtask command asks for its purpose (run and build: run; dist; bench; test and
//! vm-test: test); a bare `cargo xtask setup` is `--for test`. Quick when nothing is
//! missing.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use crate::util::{exec, output};

pub const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_DEB_VERSION: &str = "3.8.0";
pub const MUSL: &str = "x86_64-unknown-linux-musl";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Purpose {
    /// Build and run memtrace (`cargo xtask run`, `cargo xtask build`).
    Run,
    /// Build the static binary and the .deb (`cargo xtask dist`).
    Dist,
    /// Benchmarks (`cargo xtask bench`).
    Bench,
    /// The whole suite (`cargo xtask test`, `vm-test`): everything.
    Test,
}

#[derive(Args, Debug)]
pub struct Options {
    /// What to install for.
    #[arg(long = "for", value_enum, value_name = "PURPOSE", default_value = "test")]
    pub purpose: Purpose,
    /// Only print what this purpose needs and what of it is missing here.
    #[arg(long)]
    pub dry_run: bool,
}

/// Everything a purpose needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Needs {
    pub rust_src: bool,
    pub bpf_linker: bool,
    pub musl: bool,
    pub cargo_deb: bool,
    pub apt: Vec<&'static str>,
}

pub fn needs(purpose: Purpose) -> Needs {
    let mut n =
        Needs { rust_src: true, bpf_linker: true, musl: false, cargo_deb: false, apt: Vec::new() };
    let dist = |n: &mut Needs| {
        n.musl = true;
        n.cargo_deb = true;
        // strip and objcopy (cargo-deb and the static binary).
        n.apt.push("binutils");
    };
    match purpose {
        Purpose::Run => {}
        Purpose::Dist => dist(&mut n),
        Purpose::Bench => n.apt.push("bpftrace"),
        Purpose::Test => {
            dist(&mut n);
            n.apt.extend([
                // VM tests: the emulator, the initramfs and the kernels' signatures.
                "qemu-system-x86",
                "busybox-static",
                "cpio",
                "debian-archive-keyring",
                // The slab benchmark's baseline; the tests compare against it too.
                "bpftrace",
                // Package checks: `lintian` on the .deb, `man -l` on every page.
                "lintian",
                "man-db",
                // The stop tests: `bpftool prog` lists the BPF programs left loaded.
                "bpftool",
                // Always-on tests: a real Prometheus server scraping memtrace, promtool
                // (check metrics/rules, tsdb create-blocks-from), and `zstdcat | jq` on a
                // recording.
                "prometheus",
                "zstd",
                "jq",
            ]);
        }
    }
    n
}

/// `cargo xtask setup [--for PURPOSE] [--dry-run]`.
pub fn command(opts: &Options) -> Result<()> {
    let n = needs(opts.purpose);
    let mut what =
        vec!["rust-src (nightly)".to_string(), format!("bpf-linker {BPF_LINKER_VERSION}")];
    if n.musl {
        what.push(format!("the {MUSL} target"));
    }
    if n.cargo_deb {
        what.push(format!("cargo-deb {CARGO_DEB_VERSION}"));
    }
    if !n.apt.is_empty() {
        what.push(format!("Debian packages {}", n.apt.join(" ")));
    }
    let purpose = opts.purpose.to_possible_value().expect("no skipped values");
    eprintln!("setup --for {}: {}", purpose.get_name(), what.join(", "));
    if opts.dry_run {
        let missing = missing_apt(&n.apt, &|p| apt_installed(p));
        eprintln!(
            "setup: missing here: {}",
            if missing.is_empty() { "no Debian package".to_string() } else { missing.join(" ") }
        );
        return Ok(());
    }
    run(opts.purpose)?;
    eprintln!("setup: done");
    Ok(())
}

/// Installs what `purpose` needs and this machine lacks.
pub fn run(purpose: Purpose) -> Result<()> {
    let n = needs(purpose);
    rust_components(&n)?;
    if n.bpf_linker {
        bpf_linker()?;
    }
    apt_packages(&n.apt)?;
    if n.cargo_deb {
        cargo_deb()?;
    }
    Ok(())
}

fn rust_components(n: &Needs) -> Result<()> {
    if n.rust_src {
        let installed = output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))
        .context("the nightly toolchain is needed to build the BPF programs")?;
        if !installed.lines().any(|l| l.trim() == "rust-src") {
            eprintln!("setup: adding rust-src to nightly");
            exec(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
    }
    if n.musl {
        let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !targets.lines().any(|l| l.trim() == MUSL) {
            eprintln!("setup: adding the {MUSL} target (static binaries: dist, the VM)");
            exec(Command::new("rustup").args(["target", "add", MUSL]))?;
        }
    }
    Ok(())
}

/// LLVM major of the nightly rustc that builds the BPF crate.
fn rustc_llvm_major() -> Result<String> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let v = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV printed no LLVM version")?;
    Ok(v.split('.').next().unwrap_or(v).to_string())
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The trimmed `--version` output of a program on PATH, if it runs.
fn version_of(program: &str) -> Option<String> {
    output(Command::new(program).arg("--version")).ok().map(|v| v.trim().to_string())
}

/// Is an installed bpf-linker the pinned version, linked against this LLVM major?
fn bpf_linker_ok(major: &str) -> bool {
    let Ok(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let path = path.trim();
    if version_of(path).as_deref() != Some(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
        return false;
    }
    let libs = output(Command::new("ldd").arg(path)).unwrap_or_default();
    libs.lines().any(|l| l.contains(&format!("libLLVM.so.{major}")) && !l.contains("not found"))
}

fn bpf_linker() -> Result<()> {
    let major = rustc_llvm_major()?;
    if bpf_linker_ok(&major) {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM {major}");
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let libdir = PathBuf::from(sysroot.trim()).join("lib");
    let so = std::fs::read_dir(&libdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", libdir.display()))?;
    let prefix = home().join(".cache/bpf-linker-llvm");
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    for link in [plib.join("libLLVM.so"), plib.join(&so)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&so), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    exec(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")]),
    )?;
    if !bpf_linker_ok(&major) {
        bail!("bpf-linker was built but does not load LLVM {major}; check `ldd $(command -v bpf-linker)`");
    }
    Ok(())
}

/// cargo-deb, pinned, from crates.io into ~/.cargo/bin (cargo's own install location).
fn cargo_deb() -> Result<()> {
    let want = format!("cargo-deb {CARGO_DEB_VERSION}");
    if version_of("cargo-deb").as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    eprintln!("setup: installing {want} (builds the .deb)");
    exec(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))?;
    match version_of("cargo-deb") {
        Some(v) if v == want => Ok(()),
        v => bail!(
            "installed {want}, but `cargo-deb --version` says {v:?}: is ~/.cargo/bin on PATH?"
        ),
    }
}

fn apt_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

/// The packages of `wanted` that `installed` says are missing.
fn missing_apt(wanted: &[&'static str], installed: &dyn Fn(&str) -> bool) -> Vec<&'static str> {
    wanted.iter().copied().filter(|p| !installed(p)).collect()
}

fn apt_packages(wanted: &[&'static str]) -> Result<()> {
    let missing = missing_apt(wanted, &|p| apt_installed(p));
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-q"]))?;
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the issue forbids on a traced host: none of it for `cargo xtask run`.
    const TEST_ONLY: [&str; 7] =
        ["qemu-system-x86", "busybox-static", "cpio", "bpftrace", "lintian", "bpftool", "prometheus"];

    #[test]
    fn run_installs_only_what_building_needs() {
        let n = needs(Purpose::Run);
        assert!(n.rust_src && n.bpf_linker);
        assert!(!n.musl && !n.cargo_deb, "{n:?}");
        assert!(n.apt.is_empty(), "{n:?}");
        // On a machine with no Debian package at all, run still asks apt for nothing.
        assert!(missing_apt(&n.apt, &|_| false).is_empty());
    }

    #[test]
    fn dist_and_bench_add_only_their_own() {
        let d = needs(Purpose::Dist);
        assert!(d.musl && d.cargo_deb);
        let b = needs(Purpose::Bench);
        assert!(!b.musl && !b.cargo_deb);
        assert_eq!(b.apt, ["bpftrace"]);
        for p in TEST_ONLY {
            assert!(!d.apt.contains(&p), "dist installs {p}");
        }
    }

    #[test]
    fn test_installs_everything_the_others_do() {
        let t = needs(Purpose::Test);
        assert!(t.rust_src && t.bpf_linker && t.musl && t.cargo_deb);
        for p in [Purpose::Run, Purpose::Dist, Purpose::Bench] {
            for pkg in needs(p).apt {
                assert!(t.apt.contains(&pkg), "test lacks {pkg} of {p:?}");
            }
        }
        for p in TEST_ONLY.iter().chain(&["debian-archive-keyring", "man-db"]) {
            assert!(t.apt.contains(p), "test lacks {p}");
        }
        assert_eq!(missing_apt(&t.apt, &|p| p != "cpio"), ["cpio"]);
    }
}
