//! `cargo xtask test`: the whole suite. Unit tests (no root), the fuzz targets for a
//! bounded time (the readers of BTF, tracefs formats and ring-buffer records; see
//! memtrace/src/kernel/fuzz), the package checks (`cargo xtask dist --check`: the .deb
//! and the static binary through the README's Install commands), then the host
//! integration tests in tests/ against the real kernel (root), then the same tests inside
//! VMs on the 6.1 and 6.12 kernels (`cargo xtask vm-test`).

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::util::{build_memtrace, exec, workspace_root};

#[derive(Args)]
pub struct Options {
    /// Only the unit tests and the fuzz targets.
    #[arg(long)]
    pub unit_only: bool,
    /// Seconds each fuzz target runs (6 targets, 2 at a time: about 3 x this in all).
    #[arg(long, default_value_t = FUZZ_SECS, value_name = "SECS")]
    pub fuzz_secs: f64,
}

/// Seconds per fuzz target by default: 6 targets x 8 s = 48 s of fuzzing, about 25 s of
/// wall time on two cores.
pub const FUZZ_SECS: f64 = 8.0;

/// The fuzz targets: every unit test named `fuzz_*`, each given `secs`, printing its
/// seed first and its input count at the end; a panic fails the run (the input is saved
/// and named).
fn fuzz(root: &std::path::Path, secs: f64) -> Result<()> {
    eprintln!("== fuzzing: BTF, tracefs formats, ring-buffer records ({secs} s per target)");
    exec(Command::new("cargo")
        .current_dir(root)
        .env("MEMTRACE_FUZZ_SECS", secs.to_string())
        .args(["test", "--package", "memtrace", "--bin", "memtrace", "fuzz_", "--", "--nocapture"]))
}

pub fn run(opts: Options) -> Result<()> {
    let root = workspace_root();
    eprintln!("== unit tests");
    exec(Command::new("cargo").current_dir(&root).args([
        "test",
        "--package",
        "memtrace",
        "--package",
        "memtrace-common",
        "--package",
        "xtask",
    ]))?;
    fuzz(&root, opts.fuzz_secs)?;
    if opts.unit_only {
        return Ok(());
    }
    crate::dist::run(crate::dist::Options { check: true })?;
    eprintln!("== host integration tests (real kernel, root)");
    let bin = build_memtrace(false, None)?;
    exec(Command::new("cargo")
        .current_dir(&root)
        .env("MEMTRACE_BIN", &bin)
        .args(["test", "--package", "memtrace-tests", "--", "--test-threads=1"]))?;
    eprintln!("== VM tests (6.1 and 6.12 kernels in qemu)");
    crate::vm::run(crate::vm::Options::default())
}
