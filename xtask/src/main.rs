//! `cargo xtask <command>`: every command runs `setup` first, so a fresh machine needs
//! nothing but this repository.

mod bench;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "memtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (idempotent, quick when nothing is missing).
    Setup,
    /// Build memtrace (release) and run it as root with the given arguments:
    /// `cargo xtask run -- watch`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole suite: unit tests, host integration tests (root, real kernel), then the
    /// integration tests again inside VMs (vm-test).
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Run { args } => {
            let bin = util::build_memtrace(true, None)?;
            let status = std::process::Command::new(&bin).args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test(opts) => test::run(opts),
        Cmd::VmTest(opts) => vm::run(opts),
        Cmd::Bench { family: Bench::Reclaim(opts) } => bench::reclaim::run(opts),
        Cmd::Bench { family: Bench::Shmem(opts) } => bench::shmem::run(opts),
        Cmd::Bench { family: Bench::Oom(opts) } => bench::oom::run(opts),
        Cmd::Bench { family: Bench::Slab(opts) } => bench::slab::run(opts),
    }
}
