//! tracefs: finding (or mounting) it, and reading tracepoint `format` files for field
//! offsets of classic tracepoints.

use std::{
    collections::HashMap,
    ffi::CString,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}; mount it \
         with `mount -t tracefs nodev /sys/kernel/tracing` (needs root)"
    )]
    Mount(std::io::Error),
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn is_tracefs(p: &Path) -> bool {
    p.join("events").is_dir()
}

/// The tracefs mount point, mounting tracefs at /sys/kernel/tracing when it is absent.
pub fn find_or_mount() -> Result<PathBuf, TracefsError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    let c_target = CString::new(CANDIDATES[0]).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    let source = CString::new("nodev").expect("no NUL");
    if !target.is_dir() {
        return Err(TracefsError::Mount(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", target.display()),
        )));
    }
    // SAFETY: valid NUL-terminated strings, null data.
    let rc = unsafe {
        libc::mount(source.as_ptr(), c_target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    log::info!("mounted tracefs at {}", target.display());
    Ok(target.to_path_buf())
}

/// The tracefs mount point if one is mounted.
pub fn find() -> Option<PathBuf> {
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for line in mounts.lines() {
            let mut f = line.split_whitespace();
            let (_, Some(dir), Some(fs)) = (f.next(), f.next(), f.next()) else { continue };
            if fs == "tracefs" && is_tracefs(Path::new(dir)) {
                return Some(PathBuf::from(dir));
            }
        }
    }
    CANDIDATES.iter().map(Path::new).find(|p| is_tracefs(p)).map(Path::to_path_buf)
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub decl: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `events/<category>/<name>/format`.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub fields: HashMap<String, Field>,
    /// The `print fmt:` line, without its prefix.
    pub print_fmt: String,
}

impl Format {
    pub fn parse(text: &str) -> Format {
        let mut fields = HashMap::new();
        let mut print_fmt = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(p) = line.strip_prefix("print fmt:") {
                print_fmt = p.trim().to_string();
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut decl = "";
            let mut offset = None;
            let mut size = None;
            let mut signed = false;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("signed:") {
                    signed = v == "1";
                } else if decl.is_empty() && !part.is_empty() {
                    decl = part;
                }
            }
            // The name is the last identifier of the declaration ("char comm[16]" -> comm,
            // "__data_loc char[] name" -> name).
            let bare = match decl.strip_suffix(']') {
                Some(d) => d.rsplit_once('[').map_or(d, |(head, _)| head),
                None => decl,
            };
            let name = bare
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or("")
                .to_string();
            if let (false, Some(offset), Some(size)) = (name.is_empty(), offset, size) {
                fields.insert(name, Field { decl: decl.to_string(), offset, size, signed });
            }
        }
        Format { fields, print_fmt }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }

    /// A field's byte offset in the record.
    pub fn offset(&self, name: &str) -> Option<u32> {
        self.field(name).map(|f| f.offset)
    }

    /// The `__print_symbolic(REC->field, {N, "NAME"}, ...)` table of the print format:
    /// the kernel's names for a field's values (empty when it has none).
    pub fn symbolic(&self, field: &str) -> Vec<(i64, String)> {
        let call = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&call) else { return Vec::new() };
        let mut rest = &self.print_fmt[start + call.len()..];
        let mut out = Vec::new();
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if !rest.starts_with('{') {
                break;
            }
            let Some(close) = rest.find('}') else { break };
            let entry = &rest[1..close];
            rest = &rest[close + 1..];
            let Some((num, name)) = entry.split_once(',') else { break };
            let Some(v) = super::gfp::eval(num.trim()) else { break };
            out.push((v as i64, name.trim().trim_matches('"').to_string()));
        }
        out
    }
}

/// Reads the format of `category:name`; `None` if the tracepoint does not exist.
pub fn format(tracefs: &Path, category: &str, name: &str) -> Option<Format> {
    let p = tracefs.join("events").join(category).join(name).join("format");
    std::fs::read_to_string(p).ok().map(|t| Format::parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK_VICTIM: &str = "name: mark_victim
ID: 434
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:char name[16];\toffset:20;\tsize:16;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn parses_format_fields() {
        let f = Format::parse(MARK_VICTIM);
        assert_eq!(f.field("pid"), Some(&Field { decl: "int pid".into(), offset: 8, size: 4, signed: true }));
        assert_eq!(f.field("comm").unwrap().offset, 12);
        assert_eq!(f.field("name").unwrap().size, 16);
        assert_eq!(f.field("oom_score_adj").unwrap().size, 2);
        assert!(f.field("common_pid").is_some());
        assert!(f.field("nonexistent").is_none());
        assert_eq!(f.offset("pid"), Some(8));
        assert_eq!(f.print_fmt, "\"pid=%d\", REC->pid");
    }

    #[test]
    fn reads_symbolic_value_names() {
        let f = Format::parse(
            "print fmt: \"zone=%s\", __print_symbolic(REC->zone_idx, {0, \"DMA\"}, {1, \"DMA32\"}, { 2, \"Normal\"})",
        );
        assert_eq!(
            f.symbolic("zone_idx"),
            [(0, "DMA".to_string()), (1, "DMA32".to_string()), (2, "Normal".to_string())]
        );
        assert!(f.symbolic("other").is_empty());
    }
}
