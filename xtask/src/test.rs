//! `cargo xtask test`: the whole suite. Unit tests (no root), the package checks
//! (`cargo xtask dist --check`: the .deb and the static binary through the README's
//! Install commands), then the host integration tests in tests/ against the real kernel
//! (root), then the same tests inside VMs on the 6.1 and 6.12 kernels (`cargo xtask
//! vm-test`).

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::util::{build_memtrace, exec, workspace_root};

#[derive(Args)]
pub struct Options {
    /// Only the unit tests.
    #[arg(long)]
    pub unit_only: bool,
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
