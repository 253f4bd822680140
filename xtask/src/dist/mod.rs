//! `cargo xtask dist`: the two artefacts a user installs, in target/dist/.
//!
//! - `memtrace-<version>-x86_64-unknown-linux-musl`: the static (musl) release build, the
//!   same build the VM tests boot, stripped. It needs nothing at run time: the BPF object
//!   is embedded.
//! - `memtrace_<version>_amd64.deb`, built by cargo-deb (pinned by `cargo xtask setup`)
//!   from memtrace/Cargo.toml's `[package.metadata.deb]`: /usr/sbin/memtrace, memtrace(8)
//!   and memtrace-<command>(8), bash/zsh/fish completions, the README, a changelog. The
//!   man pages and completions come from the built binary's hidden `memtrace generate`,
//!   so they are its own --help. When contrib/memtrace.service exists, the package's
//!   `unit` variant installs it as memtrace.service, disabled and not started.
//!
//! `--check` then runs the package checks (check.rs), as `cargo xtask test` does.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{
    setup::MUSL,
    util::{build_memtrace, exec, output, workspace_root},
};

mod check;

/// The systemd unit the package picks up when it exists (written by the always-on work).
pub const UNIT: &str = "contrib/memtrace.service";

#[derive(Args, Debug, Default)]
pub struct Options {
    /// Then check the package: install it into a test root with dpkg, run doctor from
    /// /usr/sbin/memtrace there, render every man page, lintian, the completions, and
    /// every command of the README's Install section.
    #[arg(long)]
    pub check: bool,
}

/// What `cargo xtask dist` made.
pub struct Dist {
    pub version: String,
    /// The static binary in target/dist.
    pub binary: PathBuf,
    pub deb: PathBuf,
    /// The package has the systemd unit.
    pub unit: bool,
}

pub fn run(opts: Options) -> Result<()> {
    let dist = build()?;
    if opts.check {
        check::run(&dist)?;
    }
    Ok(())
}

pub fn build() -> Result<Dist> {
    let started = Instant::now();
    let root = workspace_root();
    eprintln!("== dist: static memtrace ({MUSL}, release)");
    let built = build_memtrace(true, Some(MUSL))?;
    if has_interpreter(&fs::read(&built)?)? {
        bail!("{} is dynamically linked (it has an ELF interpreter)", built.display());
    }
    let version = binary_version(&built)?;
    let out = root.join("target/dist");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(&out)?;

    // What the package takes besides the binary, where memtrace's [package.metadata.deb]
    // looks: target/release/dist, which cargo-deb maps to the musl target's directory.
    let staging = built.parent().context("binary directory")?.join("dist");
    stage(&root, &built, &staging, &version)?;

    let unit = root.join(UNIT).is_file();
    if unit {
        eprintln!("dist: {UNIT} exists: the package installs it as memtrace.service (disabled)");
    } else {
        eprintln!("dist: no {UNIT} yet: the package has no systemd unit");
    }
    let deb = out.join(format!("memtrace_{version}_amd64.deb"));
    let mut cargo_deb = Command::new("cargo");
    cargo_deb
        .current_dir(&root)
        .args(["deb", "--package", "memtrace", "--no-build", "--target", MUSL, "--output"])
        .arg(&deb);
    if unit {
        cargo_deb.args(["--variant", "unit"]);
    }
    exec(&mut cargo_deb).context("cargo-deb (`cargo xtask setup --for dist` installs it)")?;

    let binary = out.join(format!("memtrace-{version}-{MUSL}"));
    fs::copy(&built, &binary)?;
    exec(Command::new("strip").arg(&binary))?;
    for (what, path) in [("package", &deb), ("static binary", &binary)] {
        let size = fs::metadata(path).with_context(|| format!("{}", path.display()))?.len();
        println!("dist: {what:<13} {} ({})", path.display(), human(size));
    }
    println!("dist: {:.1} s", started.elapsed().as_secs_f64());
    Ok(Dist { version, binary, deb, unit })
}

/// `memtrace -V` is `memtrace <version>`.
fn binary_version(bin: &Path) -> Result<String> {
    let v = output(Command::new(bin).arg("-V"))?;
    let v = v
        .trim()
        .strip_prefix("memtrace ")
        .context("`memtrace -V` does not start with `memtrace `")?;
    if v.is_empty() || v.contains(char::is_whitespace) {
        bail!("`memtrace -V` printed {v:?}, not one version");
    }
    Ok(v.to_string())
}

/// Fills `staging` with what memtrace/Cargo.toml's assets name: gzipped man pages,
/// completions, the gzipped README and changelog (gzip -9n, as Debian policy asks).
fn stage(root: &Path, bin: &Path, staging: &Path, version: &str) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging)?;
    }
    let (man, raw_man, doc) = (staging.join("man"), staging.join("man-roff"), staging.join("doc"));
    for d in [&man, &doc] {
        fs::create_dir_all(d)?;
    }
    // (`generate` lists what it wrote on stdout: not needed here.)
    output(Command::new(bin).args(["generate", "man"]).arg(&raw_man))?;
    output(Command::new(bin).args(["generate", "completions"]).arg(staging.join("completions")))?;
    for page in fs::read_dir(&raw_man)? {
        let page = page?.path();
        let name = page.file_name().context("page name")?.to_string_lossy().into_owned();
        gzip(&page, &man.join(format!("{name}.gz")))?;
    }
    gzip(&root.join("README.md"), &doc.join("README.md.gz"))?;
    let long = output(Command::new(bin).arg("--version"))?;
    let commit = long
        .lines()
        .find_map(|l| l.strip_prefix("commit:"))
        .map_or("unknown", str::trim)
        .to_string();
    let changelog = staging.join("changelog");
    fs::write(
        &changelog,
        changelog_entry(version, &commit, &maintainer(root)?, &commit_date(root)?),
    )?;
    gzip(&changelog, &doc.join("changelog.gz"))?;
    Ok(())
}

fn gzip(from: &Path, to: &Path) -> Result<()> {
    exec(Command::new("sh").args(["-c", "gzip -9n -c < \"$1\" > \"$2\"", "gzip"]).arg(from).arg(to))
        .with_context(|| format!("gzip {}", from.display()))
}

/// The Maintainer of memtrace/Cargo.toml's `[package.metadata.deb]` (the changelog's
/// trailer must name the same).
fn maintainer(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("memtrace/Cargo.toml"))?;
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .context("memtrace/Cargo.toml has no [package.metadata.deb]")?;
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("maintainer = \"")?.strip_suffix('"'))
        .map(str::to_string)
        .context("no maintainer in [package.metadata.deb]")
}

/// HEAD's commit date in RFC 2822 (a changelog's date), or now outside git.
fn commit_date(root: &Path) -> Result<String> {
    output(Command::new("git").arg("-C").arg(root).args(["log", "-1", "--format=%aD"]))
        .or_else(|_| output(Command::new("date").arg("-R")))
        .map(|d| d.trim().to_string())
}

/// A one-entry Debian changelog for this build (a native package's version: no revision).
fn changelog_entry(version: &str, commit: &str, maintainer: &str, date: &str) -> String {
    format!(
        "memtrace ({version}) unstable; urgency=medium\n\n  * memtrace {version}, built from commit {commit}.\n\n -- {maintainer}  {date}\n"
    )
}

/// Does this ELF64 file have a PT_INTERP program header (a dynamic loader)?
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a little-endian ELF64 file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let header = elf.get(o..o + 4).context("truncated program headers")?;
        if u32::from_le_bytes(header.try_into()?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / 1048576.0)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_found() {
        // Static: this test binary is not, the musl build is; build a minimal header.
        let mut elf = vec![0u8; 64 + 2 * 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert!(!has_interpreter(&elf).unwrap());
        elf[64 + 56..64 + 60].copy_from_slice(&3u32.to_le_bytes());
        assert!(has_interpreter(&elf).unwrap());
        assert!(has_interpreter(b"#!/bin/sh").is_err());
        // This very test binary is dynamically linked (glibc).
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap());
    }

    #[test]
    fn changelog_is_one_debian_entry() {
        let c = changelog_entry(
            "1.2.3",
            "abc (2026-01-02)",
            "A <a@b>",
            "Fri, 02 Jan 2026 10:00:00 +0000",
        );
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], "memtrace (1.2.3) unstable; urgency=medium");
        assert_eq!(lines[4], " -- A <a@b>  Fri, 02 Jan 2026 10:00:00 +0000");
    }

    #[test]
    fn maintainer_comes_from_the_manifest() {
        let m = maintainer(&workspace_root()).unwrap();
        assert!(m.contains('<') && m.ends_with('>'), "{m}");
    }
}
