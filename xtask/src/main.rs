//! `cargo xtask <command>`: every command runs `setup` for its purpose first (run and
//! build: what building needs; dist: the packaging tools too; test and vm-test:
//! everything), so a fresh machine needs nothing but this repository, and tracing never
//! installs test tools.

mod bench;
mod dist;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

use crate::setup::Purpose;

#[derive(Parser)]
#[command(name = "xtask", about = "memtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks for one purpose (idempotent, quick when nothing
    /// is missing): `--for run` rust-src and bpf-linker; `dist` adds the musl target,
    /// cargo-deb and binutils; `bench` adds bpftrace; `test` (the default) all of that plus
    /// qemu-system-x86, busybox-static, cpio, debian-archive-keyring, lintian, man-db and
    /// bpftool.
    Setup(setup::Options),
    /// Build memtrace (release, target/release/memtrace).
    Build,
    /// Build memtrace (release) and run it as root with the given arguments:
    /// `cargo xtask run -- watch`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The static binary and the Debian package, in target/dist (sizes printed).
    Dist(dist::Options),
    /// The whole suite: unit tests, the fuzz targets (bounded: `--fuzz-secs` each), the
    /// package checks (`dist --check`), host integration tests (root, real kernel), then
    /// the integration tests again inside VMs (vm-test).
    Test(test::Options),
    /// Boot Debian's 6.1 and 6.12 cloud kernels in qemu and run the integration tests in
    /// them as root: `cargo xtask vm-test --kernel 6.12`.
    VmTest(vm::Options),
    /// Benchmarks (root, real kernel): `cargo xtask bench reclaim|oom|shmem|slab`.
    Bench {
        #[command(subcommand)]
        family: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Kernel cost per reclaim stall (bpf_stats) and agent CPU under a memcg reclaim storm.
    Reclaim(bench::reclaim::Options),
    /// Kernel cost per shmem page allocated and freed (bpf_stats), and a tmpfs writer's
    /// wall time with and without tracing.
    Shmem(bench::shmem::Options),
    /// The oom family: the victim-exit filter on every process exit, and each OOM
    /// decision's stack scan and candidate walk.
    Oom(bench::oom::Options),
    /// stat() of a missing path without tracing, under memtrace slab and under bpftrace.
    Slab(bench::slab::Options),
}

impl Cmd {
    /// What this command needs installed.
    fn purpose(&self) -> Purpose {
        match self {
            Cmd::Setup(o) => o.purpose,
            Cmd::Build | Cmd::Run { .. } => Purpose::Run,
            Cmd::Dist(o) if o.check => Purpose::Test,
            Cmd::Dist(_) => Purpose::Dist,
            Cmd::Bench { .. } => Purpose::Bench,
            Cmd::Test(_) | Cmd::VmTest(_) => Purpose::Test,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Setup(_)) {
        setup::run(cli.command.purpose())?;
    }
    match cli.command {
        Cmd::Setup(opts) => setup::command(&opts),
        Cmd::Build => {
            let bin = util::build_memtrace(true, None)?;
            println!("{}", bin.display());
            Ok(())
        }
        Cmd::Run { args } => {
            let bin = util::build_memtrace(true, None)?;
            let status = std::process::Command::new(&bin).args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Dist(opts) => dist::run(opts),
        Cmd::Test(opts) => test::run(opts),
        Cmd::VmTest(opts) => vm::run(opts),
        Cmd::Bench { family: Bench::Reclaim(opts) } => bench::reclaim::run(opts),
        Cmd::Bench { family: Bench::Shmem(opts) } => bench::shmem::run(opts),
        Cmd::Bench { family: Bench::Oom(opts) } => bench::oom::run(opts),
        Cmd::Bench { family: Bench::Slab(opts) } => bench::slab::run(opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purpose(args: &[&str]) -> Purpose {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .unwrap()
            .command
            .purpose()
    }

    #[test]
    fn each_command_sets_up_for_its_purpose() {
        assert_eq!(purpose(&["run", "--", "doctor"]), Purpose::Run);
        assert_eq!(purpose(&["build"]), Purpose::Run);
        assert_eq!(purpose(&["dist"]), Purpose::Dist);
        assert_eq!(purpose(&["dist", "--check"]), Purpose::Test);
        assert_eq!(purpose(&["bench", "slab"]), Purpose::Bench);
        assert_eq!(purpose(&["test", "--unit-only"]), Purpose::Test);
        assert_eq!(purpose(&["vm-test", "--kernel", "6.1"]), Purpose::Test);
        assert_eq!(purpose(&["setup"]), Purpose::Test, "a bare setup installs everything");
        assert_eq!(purpose(&["setup", "--for", "run"]), Purpose::Run);
    }
}
