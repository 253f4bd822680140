//! Reads what `--record` wrote (a directory of segments, or one segment) and what `--json`
//! or `--json-file` wrote (JSON lines), in order. Damage (a truncated last frame, a flipped
//! byte, a foreign file) is one line on stderr naming the file and the byte offset;
//! everything readable around it is still read (a damaged frame is skipped up to the next
//! frame that decodes).

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
};

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use serde_json::Value;

use super::{HEADER_TYPE, ZSTD_MAGIC, writer};
use crate::error::Error;

/// What a recording holds, in order.
pub enum Item {
    /// A segment's header record.
    Header(Value),
    /// A record of the session.
    Record(Value),
}

/// Damage lines per file before the rest is only counted.
const DAMAGE_LINES: usize = 20;

/// Reads `path` calling `each` for every header and record (stop by returning false);
/// returns how many records were read. An error only when nothing can be opened.
pub fn read(path: &Path, each: &mut dyn FnMut(Item) -> bool) -> Result<u64, Error> {
    let usage = |e: std::io::Error| Error::Usage(format!("{}: {e}", path.display()));
    let files = if path.is_dir() {
        let segs = writer::segments(path).map_err(usage)?;
        if segs.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no recording segments (memtrace-*.jsonl.zst) in this directory",
                path.display()
            )));
        }
        segs
    } else {
        File::open(path).map_err(usage)?;
        vec![path.to_path_buf()]
    };
    let mut reader = Reader { each, records: 0, stopped: false };
    for f in &files {
        reader.file(f);
        if reader.stopped {
            break;
        }
    }
    Ok(reader.records)
}

struct Reader<'a> {
    each: &'a mut dyn FnMut(Item) -> bool,
    records: u64,
    stopped: bool,
}

/// Damage in one file, reported as it is found.
struct Damage<'p> {
    path: &'p Path,
    n: usize,
}

impl Damage<'_> {
    fn report(&mut self, offset: u64, what: &str) {
        self.n += 1;
        if self.n <= DAMAGE_LINES {
            eprintln!("memtrace: {}: damaged at byte {offset}: {what}", self.path.display());
        } else if self.n == DAMAGE_LINES + 1 {
            eprintln!("memtrace: {}: more damage past byte {offset} (not listed)", self.path.display());
        }
    }
}

impl Reader<'_> {
    fn file(&mut self, path: &Path) {
        let mut damage = Damage { path, n: 0 };
        let mut head = [0u8; 4];
        let n = File::open(path).and_then(|mut f| f.read(&mut head));
        match n {
            Ok(4) if head == ZSTD_MAGIC => match std::fs::read(path) {
                Ok(data) => self.frames(&data, &mut damage),
                Err(e) => damage.report(0, &format!("unreadable: {e}")),
            },
            Ok(_) => self.lines(path, &mut damage),
            Err(e) => damage.report(0, &format!("unreadable: {e}")),
        }
    }

    /// One line of JSON: a header or a record; false when it is not one.
    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("not a JSON record ({e})"))?;
        let Some(ty) = v.get("type").and_then(Value::as_str) else {
            return Err("a JSON value without a \"type\"".into());
        };
        let item = if ty == HEADER_TYPE {
            Item::Header(v)
        } else {
            self.records += 1;
            Item::Record(v)
        };
        if !(self.each)(item) {
            self.stopped = true;
        }
        Ok(())
    }

    /// A plain JSON-lines file. A file whose first line is no record is foreign: one line
    /// says so.
    fn lines(&mut self, path: &Path, damage: &mut Damage) {
        let Ok(f) = File::open(path) else { return };
        let mut r = BufReader::new(f);
        let (mut offset, mut buf, mut good) = (0u64, Vec::new(), 0u64);
        loop {
            buf.clear();
            let n = match r.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return damage.report(offset, &format!("unreadable: {e}")),
            };
            let text = buf.trim_ascii();
            if !text.is_empty() {
                match self.line(text) {
                    Ok(()) => good += 1,
                    Err(why) if good == 0 => {
                        return damage.report(offset, &format!("not a memtrace recording or JSON-lines file: {why}"));
                    }
                    Err(why) if !buf.ends_with(b"\n") => damage.report(offset, &format!("truncated last line: {why}")),
                    Err(why) => damage.report(offset, &why),
                }
            }
            if self.stopped {
                return;
            }
            offset += n as u64;
        }
    }

    /// A segment: zstd frames of JSON lines.
    fn frames(&mut self, data: &[u8], damage: &mut Damage) {
        let mut off = 0usize;
        let mut decoder = FrameDecoder::new();
        while off < data.len() && !self.stopped {
            let frame = if data[off..].starts_with(&ZSTD_MAGIC) {
                decode(&mut decoder, &data[off..])
            } else {
                Err("no zstd frame here".to_string())
            };
            let (used, text) = match frame {
                Ok(frame) => frame,
                Err(why) => {
                    let next = next_frame(data, off + 1);
                    let skipped = next.unwrap_or(data.len()) - off;
                    damage.report(off as u64, &format!("{why}; {skipped} bytes skipped"));
                    match next {
                        Some(n) => {
                            off = n;
                            continue;
                        }
                        None => return,
                    }
                }
            };
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                if let Err(why) = self.line(line) {
                    damage.report(off as u64, &format!("line {} of the frame: {why}", i + 1));
                }
                if self.stopped {
                    return;
                }
            }
            off += used;
        }
    }
}

/// The next offset at or after `from` where a zstd frame begins.
fn next_frame(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(4).position(|w| w == ZSTD_MAGIC).map(|p| from + p)
}

/// One whole frame at the start of `data`: (bytes it takes, its content), its checksum
/// verified.
fn decode(decoder: &mut FrameDecoder, data: &[u8]) -> Result<(usize, Vec<u8>), String> {
    let mut src = data;
    let result = decoder
        .reset(&mut src)
        .map_err(|e| e.to_string())
        .and_then(|()| decoder.decode_blocks(&mut src, BlockDecodingStrategy::All).map_err(|e| e.to_string()));
    let truncated = |why: String| {
        if src.is_empty() { format!("truncated zstd frame (the file ends inside it: {why})") } else { format!("corrupt zstd frame ({why})") }
    };
    result.map_err(truncated)?;
    if !decoder.is_finished() {
        return Err(truncated("incomplete".into()));
    }
    let text = decoder.collect().unwrap_or_default();
    match (decoder.get_checksum_from_data(), decoder.get_calculated_checksum()) {
        (Some(a), Some(b)) if a != b => return Err(format!("corrupt zstd frame (checksum {a:08x}, content {b:08x})")),
        _ => {}
    }
    Ok((data.len() - src.len(), text))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use ruzstd::encoding::{CompressionLevel, compress_to_vec};

    use super::*;
    use crate::app::record::is_segment;

    fn tmp(tag: &str) -> std::path::PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "memtrace-reader-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn frame(lines: &[&str]) -> Vec<u8> {
        compress_to_vec(format!("{}\n", lines.join("\n")).as_bytes(), CompressionLevel::Fastest)
    }

    fn read_all(path: &Path) -> (Result<u64, String>, Vec<String>) {
        let mut seen = Vec::new();
        let n = read(path, &mut |item| {
            seen.push(match item {
                Item::Header(v) => format!("H {}", v["n"]),
                Item::Record(v) => v["type"].as_str().unwrap().to_string(),
            });
            true
        });
        (n.map_err(|e| e.to_string()), seen)
    }

    #[test]
    fn damage_is_skipped_and_the_rest_read() {
        let header = r#"{"type":"recording","n":1}"#;
        let (a, b, c) = (frame(&[header]), frame(&[r#"{"type":"x_a"}"#, r#"{"type":"x_b"}"#]), frame(&[r#"{"type":"x_c"}"#]));
        let mut data = [a.clone(), b.clone(), c.clone()].concat();
        let p = tmp("seg");
        std::fs::write(&p, &data).unwrap();
        assert_eq!(read_all(&p), (Ok(3), vec!["H 1".into(), "x_a".into(), "x_b".into(), "x_c".into()]));
        // A flipped byte in the middle frame: it is skipped, the last one still read.
        data[a.len() + b.len() / 2] ^= 0x40;
        std::fs::write(&p, &data).unwrap();
        assert_eq!(read_all(&p).1, ["H 1", "x_c"]);
        // Truncated inside the last frame (a kill -9 mid-write): the rest is read.
        data[a.len() + b.len() / 2] ^= 0x40;
        std::fs::write(&p, &data[..data.len() - 3]).unwrap();
        assert_eq!(read_all(&p), (Ok(2), vec!["H 1".into(), "x_a".into(), "x_b".into()]));
        // A foreign file: nothing readable, no error but zero records.
        std::fs::write(&p, b"\x7fELF\x02\x01\x01 binary").unwrap();
        assert_eq!(read_all(&p), (Ok(0), vec![]));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn plain_json_lines_and_directories() {
        let p = tmp("jsonl");
        std::fs::write(&p, "{\"type\":\"oom_kill\"}\nnot json\n{\"type\":\"stats\"}\n{\"type\":\"tru").unwrap();
        assert_eq!(read_all(&p), (Ok(2), vec!["oom_kill".into(), "stats".into()]));
        std::fs::remove_file(&p).unwrap();
        let d = tmp("dir");
        std::fs::create_dir_all(&d).unwrap();
        assert!(read_all(&d).0.unwrap_err().contains("no recording segments"));
        for (name, t) in [("memtrace-20261122T000002.000Z-0000.jsonl.zst", "x_2"), ("memtrace-20261122T000001.000Z-0000.jsonl.zst", "x_1")] {
            assert!(is_segment(name));
            std::fs::write(d.join(name), frame(&[&format!("{{\"type\":\"{t}\"}}")])).unwrap();
        }
        std::fs::write(d.join("notes.txt"), "ignored").unwrap();
        assert_eq!(read_all(&d), (Ok(2), vec!["x_1".into(), "x_2".into()]), "segments in time order");
        std::fs::remove_dir_all(&d).unwrap();
        assert!(read_all(&d).0.unwrap_err().contains("No such file"));
    }
}
