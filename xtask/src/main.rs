//! `cargo xtask <command>`: every command runs `setup` first, so a fresh machine needs
//! nothing but this repository.

mod bench_shmem;
mod setup;
mod test;
mod util;

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
    /// The whole suite: unit tests, host integration tests (root, real kernel).
    Test(test::Options),
    /// Benchmarks of a family's kernel-side cost (root): `cargo xtask bench shmem`.
    Bench {
        /// The family (shmem).
        family: String,
        /// The family's benchmark options (`cargo xtask bench shmem -- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        Cmd::Bench { family, args } => match family.as_str() {
            "shmem" => bench_shmem::run(&args),
            other => anyhow::bail!("no benchmark for family `{other}` (have: shmem)"),
        },
    }
}
