//! `--record DIR`: every record of the session, the same as `--json` prints, in segment
//! files of independent zstd frames of JSON lines (`zstdcat SEGMENT | jq` works), and the
//! readers `memtrace replay` and `memtrace dump` use.
//!
//! - A segment is `DIR/memtrace-<UTC start>-<nnnn>.jsonl.zst`. Its first frame holds one
//!   header record ([`Header`], `"type": "recording"`); the records follow in frames of
//!   at most [`writer::FRAME_RECORDS`] records or one second, whichever comes first, each
//!   written whole and synced, so a crash, `kill -9` or a full disk loses at most the frame
//!   being written (a failed write is cut off again; the frames before it stay readable).
//! - A new segment every hour or 64 MiB (a quarter of --retain and --max-size when those
//!   are smaller); the oldest segments go when older than --retain or beyond --max-size.
//! - A new session never appends to an old segment.
//!
//! Files: writer.rs (the sink), reader.rs (segments, directories and plain JSON lines,
//! damage reported by file and byte offset).

pub mod reader;
pub mod writer;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The header's `"type"`.
pub const HEADER_TYPE: &str = "recording";
/// Bumped when a reader of the previous format could not read the new one.
pub const FORMAT: u32 = 1;
/// A zstd frame's first bytes.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
pub const SEGMENT_PREFIX: &str = "memtrace-";
pub const SEGMENT_SUFFIX: &str = ".jsonl.zst";

/// The first record of every segment: what is needed to read the records later, elsewhere.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: String,
    pub format: u32,
    /// memtrace's version and commit.
    pub memtrace: String,
    pub commit: String,
    /// The kernel release, the host, and this boot.
    pub kernel: String,
    pub hostname: String,
    pub boot_id: String,
    pub page_size: u64,
    /// Wall clock minus the boot clock (`bpf_ktime_get_boot_ns`) when the segment began, in ns.
    pub boot_to_wall_ns: i64,
    /// When this segment and its session began (RFC 3339 UTC).
    pub started: String,
    pub session_started: String,
    /// The segment's number in its session, from 0.
    pub segment: u32,
    /// memtrace's command line.
    pub command: Vec<String>,
    /// The session's strategy table: the hooks attached and the gaps (as `ready` lists
    /// them; doctor's verdicts for the traced families).
    pub probes: Value,
    pub gaps: Value,
}

/// Whether a file name is a segment's.
pub fn is_segment(name: &str) -> bool {
    name.starts_with(SEGMENT_PREFIX) && name.ends_with(SEGMENT_SUFFIX)
}
