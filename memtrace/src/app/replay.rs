//! `memtrace replay PATH [VIEW] [--from TIME] [--to TIME] [--json]`: a recording (a
//! `--record` directory or one of its segments) or a file of JSON lines (`--json`,
//! `--json-file`) through the same outputs a live session uses: the families' text views,
//! or JSON. Also the record stream `memtrace dump` reads ([`stream`]).

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use super::{
    record::reader::{self, Item},
    registry,
    units::{parse_time, rfc3339_ns},
};
use crate::{
    engine::sink::{JsonSink, Sinks, TextSink},
    error::Error,
};

/// The views `replay` takes: every family, or one.
pub const VIEWS: [&str; 5] = ["watch", "oom", "reclaim", "slab", "shmem"];

#[derive(Debug, Args, Clone)]
pub struct Selection {
    /// A recording directory (--record DIR), one of its segments, or a JSON-lines file
    /// (--json, --json-file).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Only records at or after TIME (RFC 3339, e.g. 2026-11-22T02:00:00Z, or -2h: two hours
    /// ago). Records without a time (ready, stats, options) always pass.
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub from: Option<i128>,

    /// Only records at or before TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time, allow_hyphen_values = true)]
    pub to: Option<i128>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub sel: Selection,

    /// What to show: watch (every family, the default) or one family.
    #[arg(value_name = "VIEW", value_parser = VIEWS)]
    pub view: Option<String>,

    /// Print the records as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the stream hands on.
pub enum Event<'a> {
    Header(&'a Value),
    /// A record and its family (None: the engine's).
    Record(Option<&'static str>, &'a Value, Option<i128>),
}

/// Reads the selection, calling `each` for every header and every record in the time
/// window of the `families` (all of them when empty), with the record's time in ns if it
/// has one. Exit 2 (a usage error) when nothing could be read.
pub fn stream(sel: &Selection, families: &[&'static str], each: &mut dyn FnMut(Event) -> bool) -> Result<(), Error> {
    let names: Vec<&'static str> = registry::all().iter().map(|f| f.name()).collect();
    let read = reader::read(&sel.path, &mut |item| match item {
        Item::Header(h) => each(Event::Header(&h)),
        Item::Record(v) => {
            let ty = v["type"].as_str().unwrap_or_default();
            // Every family's record types start with its name and `_`; ready and stats are
            // the engine's.
            let family = names.iter().copied().find(|f| ty.strip_prefix(f).is_some_and(|r| r.starts_with('_')));
            if family.is_some_and(|f| !families.is_empty() && !families.contains(&f)) {
                return true;
            }
            let time = v.get("time").and_then(Value::as_str).and_then(rfc3339_ns);
            let inside = time.is_none_or(|t| sel.from.is_none_or(|f| t >= f) && sel.to.is_none_or(|to| t <= to));
            !inside || each(Event::Record(family, &v, time))
        }
    })?;
    if read == 0 {
        return Err(Error::Usage(format!("{}: no record could be read", sel.path.display())));
    }
    Ok(())
}

pub fn run(args: &ReplayArgs) -> Result<(), Error> {
    let all = registry::all();
    let families: Vec<&'static str> = match args.view.as_deref() {
        None | Some("watch") => Vec::new(),
        Some(v) => all.iter().map(|f| f.name()).filter(|f| *f == v).collect(),
    };
    let mut sinks = Sinks::new(vec![if args.json {
        Box::new(JsonSink::stdout())
    } else {
        let views = all.iter().filter(|f| families.is_empty() || families.contains(&f.name()));
        Box::new(TextSink::new(views.map(|f| (f.name().to_string(), f.view()))))
    }]);
    let result = stream(&args.sel, &families, &mut |e| {
        if let Event::Record(family, v, _) = e {
            sinks.value(family, v);
        }
        sinks.broken.is_none()
    });
    sinks.finish();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_a_view() {
        let names: Vec<&str> = registry::all().iter().map(|f| f.name()).collect();
        assert_eq!(&VIEWS[1..], &names[..]);
    }

    /// A replayed record prints its numbers as the live run did: serde_json's default
    /// parser rounds some decimals to a neighbouring f64 (6.916249761 came back as
    /// 6.9162497609999996); float_roundtrip parses them exactly.
    #[test]
    fn numbers_survive_a_replay() {
        for line in [
            r#"{"type":"stats","duration_s":6.916249761}"#,
            r#"{"type":"stats","duration_s":0.1}"#,
            r#"{"type":"stats","duration_s":123456.789012345}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v.to_string(), line);
        }
    }
}
