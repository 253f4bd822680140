//! memtrace: a Linux memory tracer. `main` only parses, validates, runs and maps errors to
//! exit codes (2: something the user can fix; 1: a failure while tracing).

mod btf;
mod cgroup;
mod cli;
mod doctor;
mod error;
mod family;
mod hooks;
mod layout;
mod oom;
mod oom_gfp;
mod oom_report;
mod output;
mod probes;
mod reclaim;
mod reclaim_context;
mod reclaim_gfp;
mod reclaim_hist;
mod run;
mod shmem;
mod shmem_model;
mod shmem_sys;
mod slab;
mod system;
mod tracefs;

use clap::Parser as _;
use memtrace_common::Family;

use crate::{
    cli::{Cli, Command},
    error::Error,
};

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
    if let Err(e) = run(cli) {
        eprintln!("memtrace: {e}");
        if let Error::Bpf { source, .. } = &e {
            for cause in source.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
        }
        std::process::exit(e.exit_code());
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let session = match &cli.command {
        Command::Doctor(d) => return doctor::run(&cli.btf, d.json),
        Command::Watch(a) => run::Session {
            families: run::families_for_watch(),
            cfg: a.validate()?,
            opts: Default::default(),
            interval: None,
            count: None,
        },
        Command::Shmem(a) => {
            a.validate_shmem()?;
            run::Session {
                families: vec![Family::Shmem],
                cfg: a.trace.validate()?,
                opts: family::FamilyOptions {
                    shmem: shmem::Options { top: a.top, periodic: a.every().is_some() },
                    ..Default::default()
                },
                interval: a.every(),
                count: a.count,
            }
        }
        Command::Oom(a) => run::Session {
            families: vec![Family::Oom],
            cfg: a.trace.validate()?,
            opts: {
                let mut o = family::FamilyOptions::default();
                o.oom.all_candidates = a.all_candidates;
                o
            },
            interval: None,
            count: None,
        },
        Command::Reclaim(a) => {
            let (cfg, reclaim) = a.validate()?;
            run::Session {
                families: vec![Family::Reclaim],
                cfg,
                interval: reclaim.interval,
                count: a.count,
                opts: family::FamilyOptions { reclaim, ..Default::default() },
            }
        }
        Command::Slab(a) => {
            let (cfg, o) = a.validate()?;
            slab::configure(o.clone());
            run::Session {
                families: vec![Family::Slab],
                cfg,
                interval: Some(o.interval),
                count: o.count,
                opts: family::FamilyOptions { slab: o, ..Default::default() },
            }
        }
    };
    let kernel = system::Kernel::open(&cli.btf)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::bpf("starting the runtime", e))?;
    rt.block_on(run::trace(kernel, session))
}
