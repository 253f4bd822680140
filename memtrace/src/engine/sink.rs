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

    /// Every [`super::session::COLLECT`] while tracing, with the session's counters so far
    /// (not a record: sinks that export or flush on a clock use it).
    fn tick(&mut self, _counters: &Stats) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// An error when the output is gone although nothing was written (the reader of a
    /// pipe left: `memtrace watch --json | head -1`). Asked every housekeeping tick.
    fn check(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Err when stdout is a pipe or socket whose reader is gone (poll reports POLLERR or
/// POLLHUP for the writing end then); a terminal, a file or /dev/null never is.
pub fn stdout_gone() -> io::Result<()> {
    gone(libc::STDOUT_FILENO)
}

fn gone(fd: libc::c_int) -> io::Result<()> {
    let mut fd = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    if n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdout was closed by its reader"));
    }
    Ok(())
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

    /// Whether every output is still there ([`Sink::check`]); marks the session to stop
    /// when one is gone.
    pub fn check(&mut self) {
        for i in 0..self.list.len() {
            if let Err(e) = self.list[i].check() {
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
}

/// One JSON object per line, flushed as written (`jq` and files see each at once).
pub struct JsonSink {
    out: Box<dyn Write>,
    /// Writes to stdout (whose reader may leave).
    stdout: bool,
    /// A write failed (or stdout was closed): the session is stopping, and the final
    /// `stats` record goes to stderr instead, the one output left.
    failed: bool,
}

impl JsonSink {
    pub fn stdout() -> JsonSink {
        JsonSink { out: Box::new(io::stdout()), stdout: true, failed: false }
    }

    /// Into a new file at `path` (truncated when it exists).
    pub fn file(path: &std::path::Path) -> io::Result<JsonSink> {
        let out = Box::new(io::BufWriter::new(std::fs::File::create(path)?));
        Ok(JsonSink { out, stdout: false, failed: false })
    }

    fn write(out: &mut dyn Write, rec: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut *out, rec).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

impl Sink for JsonSink {
    fn record(&mut self, family: Option<&str>, rec: &Value) -> io::Result<()> {
        if self.failed {
            if family.is_none() && rec["type"] == "stats" {
                return Self::write(&mut io::stderr().lock(), rec);
            }
            return Ok(());
        }
        let r = Self::write(&mut self.out, rec);
        self.failed = r.is_err();
        r
    }

    fn check(&mut self) -> io::Result<()> {
        if self.stdout && !self.failed {
            stdout_gone().inspect_err(|_| self.failed = true)?;
        }
        Ok(())
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

    /// Stdout gone: the session stops (its status lines, the stats, still go to stderr).
    fn check(&mut self) -> io::Result<()> {
        if self.quiet { Ok(()) } else { stdout_gone() }
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

    type Seen = Vec<(Option<String>, Value)>;

    struct Collect(std::rc::Rc<std::cell::RefCell<Seen>>);

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

    /// A pipe whose reader left is seen without writing; then only the stats record is
    /// still written (to stderr).
    #[test]
    fn a_closed_pipe_is_seen_and_the_json_sink_keeps_only_the_stats() {
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(gone(fds[1]).is_ok(), "the reader is there");
        // SAFETY: closing the pipe's ends we own.
        unsafe { libc::close(fds[0]) };
        assert_eq!(gone(fds[1]).map_err(|e| e.kind()), Err(io::ErrorKind::BrokenPipe));
        // SAFETY: as above.
        unsafe { libc::close(fds[1]) };

        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = JsonSink { out: Box::new(Closed), stdout: true, failed: false };
        let rec = serde_json::json!({"type": "oom_kill"});
        assert!(sink.record(Some("oom"), &rec).is_err());
        assert!(sink.failed);
        assert!(sink.record(Some("oom"), &rec).is_ok(), "nothing more is tried");
        assert!(sink.check().is_ok());
        let stats = serde_json::json!({"type": "stats", "duration_s": 0.0, "families": {}});
        assert!(sink.record(None, &stats).is_ok(), "the stats went to stderr");
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
