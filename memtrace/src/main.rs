//! memtrace: a Linux memory tracer. `main` only parses, runs and maps errors to exit codes
//! (2: something the user can fix; 1: a failure while tracing; 0 after a stop by SIGINT,
//! SIGTERM or a closed output).
//!
//! Layers, lowest first (each uses only the ones before it; a unit test holds the rule):
//! `kernel` (facts about the running system) -> `engine` (hooks, selection, loader,
//! session, outputs; knows no family) -> the families `oom`, `reclaim`, `slab`, `shmem`
//! (each uses only kernel, engine and its own part of memtrace-common) -> `app` (command
//! line, the registry of families, doctor).

mod app;
mod engine;
mod error;
mod kernel;
mod oom;
mod reclaim;
mod shmem;
mod slab;

#[cfg(test)]
mod layers;

use std::io::Write as _;

use clap::Parser as _;

use crate::{app::cli::Cli, error::Error};

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .init();
    if let Err(e) = app::session::run(&cli) {
        // Not eprintln!: with stderr closed (`2>&1 | head`) it would panic.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "memtrace: {e}");
        if let Error::Bpf { source, .. } = &e {
            for cause in source.chain().skip(1) {
                let _ = writeln!(err, "  caused by: {cause}");
            }
        }
        std::process::exit(e.exit_code());
    }
}
