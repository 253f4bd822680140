//! Memory cgroups: which hierarchy holds the memory controller, validating the user's
//! `-c PATH`, rendering the paths BPF reads, matching one against the other, and naming
//! cgroups by id (the kernfs node id, the inode number of the cgroup's directory).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use memtrace_common::{CGROUP_COMPLETE, CGROUP_TRUNCATED, CgroupPath};
use serde::{Deserialize, Serialize};

use super::procfs::Procfs;
use crate::error::Error;

/// The memory cgroup hierarchy in use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryCgroup {
    /// "v1" or "v2".
    pub version: String,
    pub mount: PathBuf,
}

impl MemoryCgroup {
    /// The directory of a hierarchy-relative path ("/a/b").
    pub fn dir(&self, rel: &str) -> PathBuf {
        self.mount.join(rel.trim_start_matches('/'))
    }
}

/// The memory controller's hierarchy: v2 when the unified hierarchy has the memory
/// controller, else v1's memory mount.
pub fn memory_cgroup(procfs: &Procfs) -> Option<MemoryCgroup> {
    let mounts = procfs.read("proc/self/mounts").unwrap_or_default();
    let mut v1 = None;
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        match f[2] {
            "cgroup2" => {
                let ctl = std::fs::read_to_string(Path::new(f[1]).join("cgroup.controllers"))
                    .unwrap_or_default();
                if ctl.split_whitespace().any(|c| c == "memory") {
                    v2 = Some(PathBuf::from(f[1]));
                }
            }
            "cgroup" if f[3].split(',').any(|o| o == "memory") => v1 = Some(PathBuf::from(f[1])),
            _ => {}
        }
    }
    v2.map(|mount| MemoryCgroup { version: "v2".into(), mount })
        .or(v1.map(|mount| MemoryCgroup { version: "v1".into(), mount }))
}

/// A cgroup's memory limit in bytes (v2 memory.max, v1 memory.limit_in_bytes); None when
/// unlimited or unreadable.
pub fn limit(dir: &Path) -> Option<u64> {
    for f in ["memory.max", "memory.limit_in_bytes"] {
        if let Ok(s) = std::fs::read_to_string(dir.join(f)) {
            // "max" or a huge v1 value mean unlimited.
            return s.trim().parse::<u64>().ok().filter(|&v| v < (1 << 60));
        }
    }
    None
}

/// Whether the memory controller is enabled (/proc/cgroups).
pub fn memcg_enabled(procfs: &Procfs) -> Result<(), String> {
    let t = procfs.read("proc/cgroups").ok_or("/proc/cgroups is not readable")?;
    // subsys_name hierarchy num_cgroups enabled
    let on = t.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&"memory") && f.get(3) == Some(&"1")
    });
    if on { Ok(()) } else { Err("the memory cgroup controller is disabled".into()) }
}

/// Turns a user's cgroup argument into a hierarchy-relative path ("/a/b") that exists in the
/// memory cgroup hierarchy. Accepts "/a/b", "a/b" or the full "/sys/fs/cgroup/.../a/b".
pub fn normalize(arg: &str) -> Result<String, Error> {
    let memcg = memory_cgroup(&Procfs::system()).ok_or_else(|| {
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
        s.push_str(&super::cstr(name));
    }
    if s.is_empty() {
        s.push('/');
    }
    Some(s)
}

/// Memory cgroup paths by id: learned from paths BPF read, and from a bounded walk of the
/// memory hierarchy when an id is unknown (at most one walk per `rescan_every`).
#[derive(Debug)]
pub struct Names {
    hierarchy: Option<MemoryCgroup>,
    by_id: HashMap<u64, String>,
    scanned: Option<Instant>,
    rescan_every: Duration,
}

/// Directories one walk visits at most, and names kept at most.
const WALK_BUDGET: usize = 100_000;

impl Names {
    pub fn new(procfs: &Procfs) -> Names {
        Names::in_hierarchy(memory_cgroup(procfs))
    }

    pub fn in_hierarchy(hierarchy: Option<MemoryCgroup>) -> Names {
        Names {
            hierarchy,
            by_id: HashMap::new(),
            scanned: None,
            rescan_every: Duration::from_millis(500),
        }
    }

    pub fn hierarchy(&self) -> Option<&MemoryCgroup> {
        self.hierarchy.as_ref()
    }

    /// Remembers a path BPF read for `id`.
    pub fn learn(&mut self, id: u64, path: &str) {
        if id != 0 && (self.by_id.len() < WALK_BUDGET || self.by_id.contains_key(&id)) {
            self.by_id.insert(id, path.to_string());
        }
    }

    /// The path of cgroup `id`, walking the hierarchy again when it is unknown.
    pub fn name(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&id) && self.scanned.is_none_or(|t| t.elapsed() > self.rescan_every)
        {
            self.rescan();
        }
        self.by_id.get(&id).cloned()
    }

    /// Every id -> path of the hierarchy, walked now.
    pub fn rescan(&mut self) {
        self.scanned = Some(Instant::now());
        let Some(root) = self.hierarchy.as_ref().map(|h| h.mount.clone()) else { return };
        self.by_id.clear();
        let mut stack = vec![(root, String::from("/"))];
        let mut seen = 0;
        while let Some((dir, rel)) = stack.pop() {
            seen += 1;
            if seen > WALK_BUDGET {
                break;
            }
            if let Ok(md) = std::fs::metadata(&dir) {
                self.by_id.insert(md.ino(), rel.clone());
            }
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child =
                        if rel == "/" { format!("/{name}") } else { format!("{rel}/{name}") };
                    stack.push((e.path(), child));
                }
            }
        }
    }

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

    #[test]
    fn names_cgroups_by_directory_inode() {
        let dir = std::env::temp_dir().join(format!("memtrace-cgnames-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("svc/job")).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let mut n = Names::in_hierarchy(Some(MemoryCgroup { version: "v2".into(), mount: dir.clone() }));
        assert_eq!(n.name(ino(&dir.join("svc/job"))).as_deref(), Some("/svc/job"));
        assert_eq!(n.name(ino(&dir)).as_deref(), Some("/"));
        assert_eq!(n.name(0), None);
        n.learn(12345, "/from/bpf");
        assert_eq!(n.name(12345).as_deref(), Some("/from/bpf"));
        assert_eq!(limit(&dir), None);
        std::fs::write(dir.join("memory.max"), "67108864\n").unwrap();
        assert_eq!(limit(&dir), Some(64 << 20));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
