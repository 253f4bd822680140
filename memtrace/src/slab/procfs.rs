//! What procfs and sysfs say about slab caches, to reconcile with and to explain the traced
//! numbers: /proc/slabinfo (active objects), /proc/sys/fs/dentry-state (negative dentries)
//! and /sys/kernel/slab (merged caches: several names, one cache).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

/// One /proc/slabinfo line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabinfoRow {
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u64,
}

/// /proc/slabinfo by cache name (None when unreadable, e.g. not root).
pub fn slabinfo() -> Option<HashMap<String, SlabinfoRow>> {
    std::fs::read_to_string("/proc/slabinfo").ok().map(|t| parse_slabinfo(&t))
}

pub fn parse_slabinfo(text: &str) -> HashMap<String, SlabinfoRow> {
    text.lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            Some((
                f[0].to_string(),
                SlabinfoRow {
                    active_objs: f[1].parse().ok()?,
                    num_objs: f[2].parse().ok()?,
                    objsize: f[3].parse().ok()?,
                },
            ))
        })
        .collect()
}

/// /proc/sys/fs/dentry-state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DentryState {
    pub nr_dentry: i64,
    pub nr_unused: i64,
    pub nr_negative: i64,
}

impl DentryState {
    pub fn positive(&self) -> i64 {
        self.nr_dentry - self.nr_negative
    }
}

pub fn dentry_state() -> Option<DentryState> {
    std::fs::read_to_string("/proc/sys/fs/dentry-state").ok().and_then(|t| parse_dentry_state(&t))
}

/// "nr_dentry nr_unused age_limit want_pages nr_negative dummy" (nr_negative since 5.0).
pub fn parse_dentry_state(text: &str) -> Option<DentryState> {
    let f: Vec<i64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if f.len() < 5 {
        return None;
    }
    Some(DentryState { nr_dentry: f[0], nr_unused: f[1], nr_negative: f[4] })
}

/// Merged caches from /sys/kernel/slab: a mergeable cache lives in a directory named by a
/// unique id (":a-0000192") and every name merged into it is a symlink to that directory.
/// Returns, per name, the other names of the same cache.
pub fn aliases(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut by_target: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(root) else {
        return BTreeMap::new();
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(':') {
            continue;
        }
        let target = match std::fs::read_link(e.path()) {
            Ok(t) => t.file_name().map(|t| t.to_string_lossy().into_owned()).unwrap_or_default(),
            Err(_) => name.clone(),
        };
        by_target.entry(target).or_default().push(name);
    }
    let mut out = BTreeMap::new();
    for names in by_target.values().filter(|n| n.len() > 1) {
        for n in names {
            let mut others: Vec<String> = names.iter().filter(|o| *o != n).cloned().collect();
            others.sort();
            out.insert(n.clone(), others);
        }
    }
    out
}

/// Resolves a user's `--cache NAME` to the name the kernel gives the cache
/// (`kmem_cache.name`, as /proc/slabinfo lists it): NAME itself, or, when NAME was merged
/// into another cache, the alias slabinfo knows. Err when no cache has that name.
pub fn canonical(
    name: &str,
    slabinfo: Option<&HashMap<String, SlabinfoRow>>,
    aliases: &BTreeMap<String, Vec<String>>,
    sys_slab: &Path,
) -> Result<String, String> {
    let Some(info) = slabinfo else {
        // Nothing to check against: trust the user.
        return Ok(name.to_string());
    };
    if info.contains_key(name) {
        return Ok(name.to_string());
    }
    if let Some(others) = aliases.get(name) {
        if let Some(c) = others.iter().find(|o| info.contains_key(*o)) {
            return Ok(c.clone());
        }
    }
    if sys_slab.join(name).exists() {
        return Ok(name.to_string());
    }
    let mut close: Vec<&String> = info.keys().filter(|k| k.contains(name)).collect();
    close.sort();
    close.truncate(5);
    let hint = if close.is_empty() {
        "see /proc/slabinfo for the cache names".to_string()
    } else {
        format!("did you mean {}?", close.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
    };
    Err(format!("--cache {name}: no slab cache of that name ({hint})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO: &str = "\
slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
dentry            123456 130000    192   21    1 : tunables    0    0    0 : slabdata   6190   6190      0
names_cache           32     32   4096    8    8 : tunables    0    0    0 : slabdata      4      4      0
";

    #[test]
    fn parses_slabinfo() {
        let s = parse_slabinfo(SLABINFO);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s["dentry"],
            SlabinfoRow { active_objs: 123_456, num_objs: 130_000, objsize: 192 }
        );
        assert_eq!(s["names_cache"].objsize, 4096);
    }

    #[test]
    fn parses_dentry_state() {
        let d = parse_dentry_state("842612\t803335\t45\t0\t700004\t0\n").unwrap();
        assert_eq!(d.nr_dentry, 842_612);
        assert_eq!(d.nr_negative, 700_004);
        assert_eq!(d.positive(), 142_608);
        assert!(parse_dentry_state("1 2 3").is_none());
    }

    fn fake_sys_slab() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("memtrace-sysslab-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(":a-0000192")).unwrap();
        std::fs::create_dir_all(root.join("dentry")).unwrap();
        for alias in ["kmalloc-192", "pid_2", "filp_alias"] {
            std::os::unix::fs::symlink(root.join(":a-0000192"), root.join(alias)).unwrap();
        }
        root
    }

    #[test]
    fn finds_merged_names_and_canonicalizes() {
        let root = fake_sys_slab();
        let a = aliases(&root);
        assert_eq!(a["pid_2"], vec!["filp_alias".to_string(), "kmalloc-192".to_string()]);
        assert!(!a.contains_key("dentry"), "unmerged caches have no aliases");
        let mut info = parse_slabinfo(SLABINFO);
        info.insert("kmalloc-192".into(), SlabinfoRow::default());
        assert_eq!(canonical("dentry", Some(&info), &a, &root).unwrap(), "dentry");
        assert_eq!(canonical("pid_2", Some(&info), &a, &root).unwrap(), "kmalloc-192");
        let e = canonical("dentr", Some(&info), &a, &root).unwrap_err();
        assert!(e.contains("did you mean dentry"), "{e}");
        assert!(canonical("nope", Some(&info), &a, &root).is_err());
        assert_eq!(canonical("anything", None, &a, &root).unwrap(), "anything");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
