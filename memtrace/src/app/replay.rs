//! `memtrace replay PATH`: a file of records (JSON lines, as --json or --json-file wrote
//! them) through the same outputs a live session uses: the families' text views, or JSON.

use std::io::BufRead as _;

use serde_json::Value;

use super::{cli::ReplayArgs, registry};
use crate::{
    engine::sink::{JsonSink, Sink, Sinks, TextSink},
    error::Error,
};

pub fn run(args: &ReplayArgs) -> Result<(), Error> {
    let path = &args.path;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Usage(format!("replay {}: {e}", path.display())))?;
    let families = registry::all();
    let names: Vec<&'static str> = families.iter().map(|f| f.name()).collect();
    let sink: Box<dyn Sink> = if args.json {
        Box::new(JsonSink::stdout())
    } else {
        Box::new(TextSink::new(families.iter().map(|f| (f.name().to_string(), f.view()))))
    };
    let mut sinks = Sinks::new(vec![sink]);
    let mut offset = 0u64;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| {
            Error::Usage(format!("replay {}: unreadable at byte {offset}: {e}", path.display()))
        })?;
        let v: Value = serde_json::from_str(&line).map_err(|e| {
            Error::Usage(format!(
                "replay {}: line {} (byte {offset}) is not a JSON record: {e}",
                path.display(),
                n + 1
            ))
        })?;
        offset += line.len() as u64 + 1;
        let Some(ty) = v["type"].as_str() else {
            return Err(Error::Usage(format!(
                "replay {}: line {} (byte {offset}) has no \"type\"",
                path.display(),
                n + 1
            )));
        };
        // Every family's record types start with its name; ready and stats are the engine's.
        let family = names.iter().copied().find(|f| ty.strip_prefix(f).is_some_and(|r| r.starts_with('_')));
        sinks.value(family, &v);
        if sinks.broken.is_some() {
            break;
        }
    }
    sinks.finish();
    Ok(())
}
