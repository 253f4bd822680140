//! Memory cgroup paths: validating the user's `-c PATH`, rendering the paths BPF reads, and
//! matching one against the other.

use std::path::Path;

use memtrace_common::{CGROUP_COMPLETE, CGROUP_TRUNCATED, CgroupPath};

use crate::{error::Error, system};

/// Turns a user's cgroup argument into a hierarchy-relative path ("/a/b") that exists in the
/// memory cgroup hierarchy. Accepts "/a/b", "a/b" or the full "/sys/fs/cgroup/.../a/b".
pub fn normalize(arg: &str) -> Result<String, Error> {
    let memcg = system::memory_cgroup().ok_or_else(|| {
        Error::Environment("--cgroup: this system has no memory cgroup hierarchy mounted".into())
    })?;
    normalize_in(&memcg.mount, arg)
}

pub fn normalize_in(mount: &Path, arg: &str) -> Result<String, Error> {
    if arg.is_empty() {
        return Err(Error::Usage("--cgroup: empty path".into()));
    }
    let p = Path::new(arg);
    let rel = match p.strip_prefix(mount) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => p.strip_prefix("/").unwrap_or(p).to_path_buf(),
    };
    if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::Usage(format!("--cgroup {arg}: use a plain path without `..`")));
    }
    let full = mount.join(&rel);
    if !full.join("cgroup.procs").exists() {
        return Err(Error::Usage(format!(
            "--cgroup {arg}: no such memory cgroup ({} does not exist)",
            full.display()
        )));
    }
    let s = rel.to_string_lossy().trim_end_matches('/').to_string();
    Ok(format!("/{s}"))
}

/// True when `path` is `filter` or below it.
pub fn under(path: &str, filter: &str) -> bool {
    filter == "/"
        || path == filter
        || (path.starts_with(filter) && path.as_bytes().get(filter.len()) == Some(&b'/'))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Renders a path read by BPF; None when BPF could not read it. A truncated path starts
/// with "...".
pub fn render(p: &CgroupPath) -> Option<String> {
    if p.status != CGROUP_COMPLETE && p.status != CGROUP_TRUNCATED {
        return None;
    }
    let depth = (p.depth as usize).min(p.names.len());
    let mut s = String::new();
    if p.status == CGROUP_TRUNCATED {
        s.push_str("...");
    }
    for name in p.names[..depth].iter().rev() {
        s.push('/');
        s.push_str(&cstr(name));
    }
    if s.is_empty() {
        s.push('/');
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use memtrace_common::{CGROUP_DEPTH, CGROUP_NAME_LEN, CGROUP_READ_FAILED};

    use super::*;

    fn path(names: &[&str], status: u32) -> CgroupPath {
        let mut p = CgroupPath {
            id: 7,
            depth: names.len() as u32,
            status,
            names: [[0; CGROUP_NAME_LEN]; CGROUP_DEPTH],
        };
        for (i, n) in names.iter().enumerate() {
            p.names[i][..n.len()].copy_from_slice(n.as_bytes());
        }
        p
    }

    #[test]
    fn renders_leaf_first_names() {
        assert_eq!(render(&path(&["c", "b", "a"], CGROUP_COMPLETE)).unwrap(), "/a/b/c");
        assert_eq!(render(&path(&[], CGROUP_COMPLETE)).unwrap(), "/");
        assert_eq!(render(&path(&["z", "y"], CGROUP_TRUNCATED)).unwrap(), ".../y/z");
        assert_eq!(render(&path(&["x"], CGROUP_READ_FAILED)), None);
    }

    #[test]
    fn matches_subtrees_only() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a"));
        assert!(!under("/ab", "/a"));
        assert!(under("/anything", "/"));
    }

    #[test]
    fn normalizes_against_a_hierarchy() {
        let dir = std::env::temp_dir().join(format!("memtrace-cg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("svc/job")).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        std::fs::write(dir.join("svc/job/cgroup.procs"), "").unwrap();
        assert_eq!(normalize_in(&dir, "/svc/job").unwrap(), "/svc/job");
        assert_eq!(normalize_in(&dir, "svc/job/").unwrap(), "/svc/job");
        let full = dir.join("svc/job");
        assert_eq!(normalize_in(&dir, full.to_str().unwrap()).unwrap(), "/svc/job");
        assert_eq!(normalize_in(&dir, "/").unwrap(), "/");
        for bad in ["/nope", "svc/../..", ""] {
            let e = normalize_in(&dir, bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
