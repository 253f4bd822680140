//! Runs a command: a tracing command gets its families and options from the registry, its
//! outputs, and the engine's session (with the metrics endpoint on the same runtime).

use std::time::Duration;

use super::{cli::Cli, cli::Command, outputs, registry};
use crate::{
    engine::{
        args::IntervalArgs,
        session::{self, Plan, Stop},
        sink::Sinks,
    },
    error::Error,
};

/// Summaries every 5 s unless INTERVAL says otherwise (watch, slab).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

pub fn run(cli: &Cli) -> Result<(), Error> {
    let default = match &cli.command {
        Command::Doctor(d) => return super::doctor::run(&cli.btf, d.json),
        Command::Replay(r) => return super::replay::run(r),
        Command::Dump(d) => return super::dump::run(d),
        Command::Generate(g) => return super::generate::run(g),
        Command::Watch(_) | Command::Slab(_) => Some(DEFAULT_INTERVAL),
        Command::Oom(_) | Command::Reclaim(_) | Command::Shmem(_) => None,
    };
    // Before anything else: a SIGINT or SIGTERM from here on stops the session cleanly.
    let stop = Stop::install()?;
    let Some((trace, out, interval)) = cli.command.tracing() else { return Ok(()) };
    let (interval, count) = interval.unwrap_or(&IntervalArgs::default()).resolve(default.or(out.default_interval()))?;
    let filter = trace.filter()?;
    let (families, traced) = registry::for_command(&cli.command)?;
    let outputs::Outputs { sinks, endpoint } = outputs::outputs(trace, out, &families, &traced)?;
    let plan = Plan {
        families,
        traced,
        filter,
        duration: trace.duration,
        interval,
        count,
        sinks: Sinks::new(sinks),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::bpf("starting the runtime", e))?;
    rt.block_on(async {
        if let Some(e) = endpoint {
            e.spawn().map_err(|e| Error::bpf("serving --metrics", e))?;
        }
        session::run(&cli.btf, plan, stop).await
    })
}
