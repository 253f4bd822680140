//! Runs a tracing command: its families and options from the registry, its outputs, and
//! the engine's session.

use std::time::Duration;

use super::{
    cli::{Cli, Command},
    registry,
};
use crate::{
    engine::{
        args::{IntervalArgs, TraceArgs},
        session::{self, Plan, Stop},
        sink::{JsonSink, Sink, Sinks, TextSink},
    },
    error::Error,
};

/// Summaries every 5 s unless INTERVAL says otherwise (watch, slab).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

pub fn run(cli: &Cli) -> Result<(), Error> {
    let none = IntervalArgs::default();
    let (trace, interval, default): (&TraceArgs, &IntervalArgs, Option<Duration>) = match &cli.command {
        Command::Doctor(d) => return super::doctor::run(&cli.btf, d.json),
        Command::Replay(r) => return super::replay::run(r),
        Command::Generate(g) => return super::generate::run(g),
        Command::Watch(c) => (&c.trace, &c.interval, Some(DEFAULT_INTERVAL)),
        Command::Oom(c) => (&c.trace, &none, None),
        Command::Reclaim(c) => (&c.trace, &c.interval, None),
        Command::Slab(c) => (&c.trace, &c.interval, Some(DEFAULT_INTERVAL)),
        Command::Shmem(c) => (&c.trace, &c.interval, None),
    };
    // Before anything else: a SIGINT or SIGTERM from here on stops the session cleanly.
    let stop = Stop::install()?;
    let (interval, count) = interval.resolve(default)?;
    let filter = trace.filter()?;
    let (families, traced) = registry::for_command(&cli.command)?;
    let mut sinks: Vec<Box<dyn Sink>> = vec![if trace.json {
        Box::new(JsonSink::stdout())
    } else {
        Box::new(TextSink::new(
            families.iter().filter(|f| traced.contains(&f.name())).map(|f| (f.name().to_string(), f.view())),
        ))
    }];
    if let Some(path) = &trace.json_file {
        let file = JsonSink::file(path).map_err(|e| {
            Error::Usage(format!("--json-file {}: {e}", path.display()))
        })?;
        sinks.push(Box::new(file));
    }
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
    rt.block_on(session::run(&cli.btf, plan, stop))
}
