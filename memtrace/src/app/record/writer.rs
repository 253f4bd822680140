//! The recording sink: records into frames, frames into segments, segments rotated and
//! retired. Write failures never stop the session (the metrics and the other outputs go
//! on); they are logged, the failed frame is cut off and its records counted as lost.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use ruzstd::encoding::{CompressionLevel, compress_to_vec};
use serde_json::Value;

use super::{HEADER_TYPE, Header, SEGMENT_PREFIX, SEGMENT_SUFFIX, is_segment};
use crate::{
    engine::{format::rfc3339, records::Stats, sink::Sink},
    error::Error,
    kernel::{self, procfs::Procfs},
};

/// A frame is written after this many records, or at the next second, whichever first.
pub const FRAME_RECORDS: usize = 1000;
/// ... or once it holds this many bytes of JSON.
const FRAME_BYTES: usize = 1 << 20;
/// A new segment at least this often, and at this size.
const SEGMENT_AGE: Duration = Duration::from_secs(3600);
const SEGMENT_BYTES: u64 = 64 << 20;
/// Retention is checked at least this often.
const RETENTION_CHECK: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    /// Segments older than this go.
    pub retain: Duration,
    /// The recording's total size is kept under this.
    pub max_size: u64,
}

impl Options {
    /// When a segment is closed: an hour or 64 MiB, a quarter of the limits when smaller.
    fn segment_limits(&self) -> (Duration, u64) {
        (SEGMENT_AGE.min(self.retain / 4), SEGMENT_BYTES.min(self.max_size / 4).max(4096))
    }
}

struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes written and synced: where a failed write is cut back to.
    good: u64,
    opened: Instant,
}

pub struct Recorder {
    opts: Options,
    /// The header of every segment, but for its times and number.
    base: Header,
    seg: Option<Segment>,
    segments: u32,
    buf: Vec<u8>,
    buffered: usize,
    lost: u64,
    checked: Instant,
}

impl Recorder {
    /// Creates DIR if needed and checks that it can be written; nothing else until the
    /// first record.
    pub fn new(opts: Options) -> Result<Recorder, Error> {
        let usage = |e: io::Error| Error::Usage(format!("--record {}: {e}", opts.dir.display()));
        fs::create_dir_all(&opts.dir).map_err(usage)?;
        let probe = opts.dir.join(format!(".memtrace-probe-{}", std::process::id()));
        File::create(&probe).map_err(usage)?;
        let _ = fs::remove_file(&probe);
        let procfs = Procfs::system();
        let now = rfc3339(kernel::wall_ns());
        let base = Header {
            kind: HEADER_TYPE.into(),
            format: super::FORMAT,
            memtrace: env!("CARGO_PKG_VERSION").into(),
            commit: env!("MEMTRACE_GIT_COMMIT").into(),
            kernel: kernel::kernel_release(),
            hostname: procfs.hostname().unwrap_or_default(),
            boot_id: procfs.boot_id().unwrap_or_default(),
            page_size: kernel::page_size(),
            boot_to_wall_ns: 0,
            started: now.clone(),
            session_started: now,
            segment: 0,
            command: std::env::args().collect(),
            probes: Value::Array(Vec::new()),
            gaps: Value::Array(Vec::new()),
        };
        Ok(Recorder {
            opts,
            base,
            seg: None,
            segments: 0,
            buf: Vec::new(),
            buffered: 0,
            lost: 0,
            checked: Instant::now(),
        })
    }

    /// A new segment, its header frame written.
    fn open(&mut self) -> io::Result<Segment> {
        let wall = kernel::wall_ns();
        let stamp: String = rfc3339(wall).chars().filter(|c| *c != '-' && *c != ':').collect();
        let (file, path) = (0..10_000)
            .find_map(|n| {
                let path = self.opts.dir.join(format!("{SEGMENT_PREFIX}{stamp}-{n:04}{SEGMENT_SUFFIX}"));
                match OpenOptions::new().append(true).create_new(true).open(&path) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                    r => Some(r.map(|f| (f, path))),
                }
            })
            .unwrap_or_else(|| Err(io::ErrorKind::AlreadyExists.into()))?;
        let header = Header {
            started: rfc3339(wall),
            segment: self.segments,
            boot_to_wall_ns: (wall - kernel::boot_ns() as i128) as i64,
            ..self.base.clone()
        };
        self.segments += 1;
        let mut seg = Segment { path, file, good: 0, opened: Instant::now() };
        let mut line = serde_json::to_vec(&header)?;
        line.push(b'\n');
        write_frame(&mut seg, &line)?;
        Ok(seg)
    }

    /// Writes the buffered records as one frame; rotates and retires segments.
    fn flush(&mut self) {
        if self.buffered == 0 {
            return;
        }
        let (n, data) = (self.buffered, std::mem::take(&mut self.buf));
        self.buffered = 0;
        if self.seg.is_none() {
            match self.open() {
                Ok(s) => {
                    self.seg = Some(s);
                    self.retire();
                }
                Err(e) => return self.lose(n, &format!("creating a segment in {}", self.opts.dir.display()), &e),
            }
        }
        let Some(seg) = self.seg.as_mut() else { return };
        if let Err(e) = write_frame(seg, &data) {
            let path = seg.path.display().to_string();
            return self.lose(n, &format!("writing {path}"), &e);
        }
        let (age, size) = self.opts.segment_limits();
        if seg.good >= size || seg.opened.elapsed() >= age {
            self.seg = None;
        }
    }

    fn lose(&mut self, n: usize, what: &str, e: &io::Error) {
        self.lost += n as u64;
        log::error!("recording: {what}: {e}; {n} records lost ({} in all)", self.lost);
    }

    /// Deletes the oldest segments (never the open one): older than --retain, or while the
    /// recording is larger than --max-size.
    fn retire(&mut self) {
        self.checked = Instant::now();
        let current = self.seg.as_ref().map(|s| s.path.clone());
        let Ok(paths) = segments(&self.opts.dir) else { return };
        let segs: Vec<(PathBuf, u64, SystemTime)> = paths
            .into_iter()
            .filter_map(|p| {
                let m = p.metadata().ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect();
        let mut total: u64 = segs.iter().map(|s| s.1).sum();
        let cutoff = SystemTime::now().checked_sub(self.opts.retain);
        for (path, len, modified) in segs {
            if Some(&path) == current.as_ref() {
                continue;
            }
            let old = cutoff.is_some_and(|c| modified < c);
            if total > self.opts.max_size || old {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        total -= len;
                        log::info!("recording: removed {} ({})", path.display(), if old { "--retain" } else { "--max-size" });
                    }
                    Err(e) => log::warn!("recording: removing {}: {e}", path.display()),
                }
            }
        }
    }
}

/// One frame, written whole and synced; on failure the file is cut back to its last
/// whole frame.
fn write_frame(seg: &mut Segment, data: &[u8]) -> io::Result<()> {
    let frame = compress_to_vec(data, CompressionLevel::Fastest);
    let written = seg.file.write_all(&frame).and_then(|()| seg.file.sync_data());
    if let Err(e) = written {
        let _ = seg.file.set_len(seg.good);
        return Err(e);
    }
    seg.good += frame.len() as u64;
    Ok(())
}

impl Sink for Recorder {
    fn record(&mut self, _family: Option<&str>, rec: &Value) -> io::Result<()> {
        if rec.get("type").and_then(Value::as_str) == Some("ready") {
            self.base.probes = rec.get("probes").cloned().unwrap_or_default();
            self.base.gaps = rec.get("gaps").cloned().unwrap_or_default();
        }
        serde_json::to_writer(&mut self.buf, rec)?;
        self.buf.push(b'\n');
        self.buffered += 1;
        if self.buffered >= FRAME_RECORDS || self.buf.len() >= FRAME_BYTES {
            self.flush();
        }
        Ok(())
    }

    fn tick(&mut self, _counters: &Stats) -> io::Result<()> {
        self.flush();
        let (age, _) = self.opts.segment_limits();
        if self.seg.as_ref().is_some_and(|s| s.opened.elapsed() >= age) {
            self.seg = None;
        }
        if self.checked.elapsed() >= RETENTION_CHECK.min(age) {
            self.retire();
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush();
        if self.lost > 0 {
            log::error!("recording: {} records could not be written", self.lost);
        }
        Ok(())
    }
}

/// The segments of a recording directory, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_segment))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}
