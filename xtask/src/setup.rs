//! Installs what a fresh machine of this kind lacks: rust-src and the musl target for the
//! nightly/stable toolchains, bpf-linker built against rustc's own LLVM (pinned, its LLVM
//! major checked), and the Debian packages the tests need. Quick when nothing is missing.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{exec, output};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// qemu + busybox + cpio + the archive keyring (kernel downloads): the VM tests;
/// bpftrace: the slab benchmark's baseline.
const APT_PACKAGES: &[&str] =
    &["qemu-system-x86", "busybox-static", "cpio", "debian-archive-keyring", "bpftrace"];

pub fn run() -> Result<()> {
    rust_components()?;
    bpf_linker()?;
    apt_packages()?;
    Ok(())
}

fn rust_components() -> Result<()> {
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
        exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets.lines().any(|l| l.trim() == "x86_64-unknown-linux-musl") {
        eprintln!("setup: adding the x86_64-unknown-linux-musl target (static binaries for the VM)");
        exec(Command::new("rustup").args(["target", "add", "x86_64-unknown-linux-musl"]))?;
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

/// Is an installed bpf-linker the pinned version, linked against this LLVM major?
fn bpf_linker_ok(major: &str) -> bool {
    let Ok(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let path = path.trim();
    let version = output(Command::new(path).arg("--version")).unwrap_or_default();
    if version.trim() != format!("bpf-linker {BPF_LINKER_VERSION}") {
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
    exec(Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", &format!("llvm-{major}")]))?;
    if !bpf_linker_ok(&major) {
        bail!("bpf-linker was built but does not load LLVM {major}; check `ldd $(command -v bpf-linker)`");
    }
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .map(|s| !s.contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-q"]))?;
    exec(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}
