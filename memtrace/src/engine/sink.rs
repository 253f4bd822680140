//! Outputs. A family's agent emits typed records through [`Out`]; each record becomes one
//! JSON value, and every sink gets the same values: the JSON-lines sink prints them, the
//! text sink hands them to the family's [`View`]. A view sees records only, never agent
//! state, so a recording replays into the same text.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde::Serialize;
use serde_json::Value;

use super::records::{EngineRecord, Stats};

/// Text to print now: `out` on stdout, `err` on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text {
    pub out: String,
    pub err: String,
}

impl Text {
    pub fn out(s: impl Into<String>) -> Text {
        Text { out: s.into(), err: String::new() }
    }

    pub fn err(s: impl Into<String>) -> Text {
        Text { out: String::new(), err: s.into() }
    }

    pub fn push(&mut self, t: Text) {
        self.out.push_str(&t.out);
        self.err.push_str(&t.err);
    }

}

/// A family's text view: a fold over its records (as JSON values), returning what to print
/// as each arrives.
pub trait View {
    fn record(&mut self, rec: &Value) -> Text;

    /// At the end of the stream.
    fn finish(&mut self) -> Text {
        Text::default()
    }
}

/// Where records go.
pub trait Sink {
    /// One record; `family` None for the engine's own (ready, stats).
    fn record(&mut self, family: Option<&str>, rec: &Value) -> io::Result<()>;

    /// TRANSITIONAL: text an agent rendered from its own state (only the text sink prints
    /// it). Goes away once every family's text is a view of its records.
    fn legacy_text(&mut self, _t: &Text) -> io::Result<()> {
        Ok(())
    }

    /// Every [`super::session::COLLECT`] while tracing, with the session's counters so far
    /// (not a record: sinks that export or flush on a clock use it).
    fn tick(&mut self, _counters: &Stats) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every sink of a session. A write error (a closed pipe) marks the session to stop.
#[derive(Default)]
pub struct Sinks {
    list: Vec<Box<dyn Sink>>,
    /// Set when an output failed: the session stops cleanly.
    pub broken: Option<io::Error>,
}

impl Sinks {
    pub fn new(list: Vec<Box<dyn Sink>>) -> Sinks {
        Sinks { list, broken: None }
    }

    /// A record of `family` (None: the engine's).
    pub fn emit(&mut self, family: Option<&str>, rec: &impl Serialize) {
        match serde_json::to_value(rec) {
            Ok(v) => self.value(family, &v),
            Err(e) => log::error!("a record did not serialize: {e}"),
        }
    }

    pub fn value(&mut self, family: Option<&str>, v: &Value) {
        for i in 0..self.list.len() {
            if let Err(e) = self.list[i].record(family, v) {
                self.fail(e);
            }
        }
    }

    /// TRANSITIONAL: see [`Sink::legacy_text`].
    pub fn legacy_text(&mut self, t: &Text) {
        for i in 0..self.list.len() {
            if let Err(e) = self.list[i].legacy_text(t) {
                self.fail(e);
            }
        }
    }

    pub fn engine(&mut self, rec: &EngineRecord) {
        self.emit(None, rec);
    }

    /// See [`Sink::tick`].
    pub fn tick(&mut self, counters: &Stats) {
        for i in 0..self.list.len() {
            if let Err(e) = self.list[i].tick(counters) {
                self.fail(e);
            }
        }
    }

    pub fn finish(&mut self) {
        for i in 0..self.list.len() {
            if let Err(e) = self.list[i].finish() {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: io::Error) {
        if self.broken.is_none() {
            if e.kind() != io::ErrorKind::BrokenPipe {
                log::error!("writing output: {e}");
            }
            self.broken = Some(e);
        }
    }
}

/// What an agent emits into: the session's sinks, tagged with the family.
pub struct Out<'a> {
    family: &'static str,
    sinks: &'a mut Sinks,
}

impl<'a> Out<'a> {
    pub fn new(family: &'static str, sinks: &'a mut Sinks) -> Out<'a> {
        Out { family, sinks }
    }

    /// One typed record (serialized with its `"type"`).
    pub fn emit(&mut self, rec: &impl Serialize) {
        self.sinks.emit(Some(self.family), rec);
    }

    /// TRANSITIONAL: see [`Sink::legacy_text`].
    pub fn legacy_text(&mut self, t: Text) {
        self.sinks.legacy_text(&t);
    }
}

/// One JSON object per line, flushed as written (`jq` and files see each at once).
pub struct JsonSink {
    out: Box<dyn Write>,
}

impl JsonSink {
    pub fn stdout() -> JsonSink {
        JsonSink { out: Box::new(io::stdout()) }
    }

    /// Into a new file at `path` (truncated when it exists).
    pub fn file(path: &std::path::Path) -> io::Result<JsonSink> {
        Ok(JsonSink { out: Box::new(io::BufWriter::new(std::fs::File::create(path)?)) })
    }
}

impl Sink for JsonSink {
    fn record(&mut self, _family: Option<&str>, rec: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, rec).map_err(io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Text: each family's view on stdout (its notes on stderr), the engine's status on stderr.
pub struct TextSink {
    views: HashMap<String, Box<dyn View>>,
    /// Print nothing on stdout (a service that only exports metrics or records).
    pub quiet: bool,
}

impl TextSink {
    pub fn new(views: impl IntoIterator<Item = (String, Box<dyn View>)>) -> TextSink {
        TextSink { views: views.into_iter().collect(), quiet: false }
    }

    fn print(&self, t: &Text) -> io::Result<()> {
        if self.quiet {
            print(&Text::err(t.err.clone()))
        } else {
            print(t)
        }
    }
}

/// Writes `t.out` to stdout (flushed) and `t.err` to stderr.
pub fn print(t: &Text) -> io::Result<()> {
    if !t.out.is_empty() {
        let mut out = io::stdout().lock();
        out.write_all(t.out.as_bytes())?;
        out.flush()?;
    }
    if !t.err.is_empty() {
        io::stderr().lock().write_all(t.err.as_bytes())?;
    }
    Ok(())
}

impl Sink for TextSink {
    fn record(&mut self, family: Option<&str>, rec: &Value) -> io::Result<()> {
        let text = match family {
            None => super::records::engine_text(rec),
            Some(f) => match self.views.get_mut(f) {
                Some(v) => v.record(rec),
                None => Text::default(),
            },
        };
        self.print(&text)
    }

    fn legacy_text(&mut self, t: &Text) -> io::Result<()> {
        self.print(t)
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut all = Text::default();
        let mut names: Vec<&String> = self.views.keys().collect();
        names.sort();
        let names: Vec<String> = names.into_iter().cloned().collect();
        for n in names {
            if let Some(v) = self.views.get_mut(&n) {
                all.push(v.finish());
            }
        }
        self.print(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(std::rc::Rc<std::cell::RefCell<Vec<(Option<String>, Value)>>>);

    impl Sink for Collect {
        fn record(&mut self, family: Option<&str>, rec: &Value) -> io::Result<()> {
            self.0.borrow_mut().push((family.map(str::to_string), rec.clone()));
            Ok(())
        }
    }

    struct Failing;

    impl Sink for Failing {
        fn record(&mut self, _: Option<&str>, _: &Value) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[derive(Serialize)]
    struct Rec {
        #[serde(rename = "type")]
        kind: &'static str,
        b: u32,
        a: u32,
    }

    #[test]
    fn records_reach_every_sink_in_field_order_and_failures_stop() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut sinks = Sinks::new(vec![Box::new(Collect(seen.clone()))]);
        Out::new("oom", &mut sinks).emit(&Rec { kind: "oom_kill", b: 2, a: 1 });
        let got = seen.borrow();
        assert_eq!(got[0].0.as_deref(), Some("oom"));
        assert_eq!(got[0].1.to_string(), r#"{"type":"oom_kill","b":2,"a":1}"#, "field order kept");
        drop(got);
        assert!(sinks.broken.is_none());
        let mut sinks = Sinks::new(vec![Box::new(Collect(seen.clone())), Box::new(Failing)]);
        Out::new("oom", &mut sinks).emit(&Rec { kind: "oom_kill", b: 2, a: 1 });
        assert_eq!(sinks.broken.as_ref().map(io::Error::kind), Some(io::ErrorKind::BrokenPipe));
        assert_eq!(seen.borrow().len(), 2, "the other sinks still got it");
    }
}
