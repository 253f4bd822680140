//! `memtrace slab` arguments beyond the shared ones, validated into [`Options`].

use std::collections::{BTreeMap, HashMap};

use memtrace_common::slab::{CACHE_NAME_LEN, MAX_FILTER};

use crate::{
    error::Error,
    kernel::procfs::{Procfs, SlabinfoRow},
};

#[derive(Debug, clap::Args, Clone)]
pub struct Args {
    /// Only these caches (repeat, or separate with commas), filtered in the kernel. A name
    /// merged into another cache selects that cache.
    #[arg(long = "cache", value_name = "NAME", value_delimiter = ',')]
    pub caches: Vec<String>,

    /// Remember which caller allocated each live object of the --cache caches, so frees
    /// count against the allocating caller (bounded by --live-max; evictions are reported).
    #[arg(long, requires = "caches")]
    pub live: bool,

    /// Most objects --live remembers (oldest evicted first).
    #[arg(long, value_name = "N", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub live_max: u32,

    /// Callers (and directories) shown per cache.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top: u64,

    /// Caches shown per interval in text mode (JSON lists every cache that changed).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub top_caches: u64,

    /// Do not join dentry allocations with the path syscalls (stat, open, access...) that
    /// caused them: saves a hook on each of those syscalls.
    #[arg(long)]
    pub no_dirs: bool,

    /// Gone: the interval is the positional INTERVAL (`memtrace slab 5`).
    #[arg(short = 'i', long = "interval", value_name = "SECS", hide = true)]
    pub old_interval: Option<String>,

    /// Gone: the count is the positional COUNT (`memtrace slab 5 3`).
    #[arg(long = "count", value_name = "N", hide = true)]
    pub old_count: Option<String>,
}

/// Validated slab options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Canonical cache names (`kmem_cache.name`); empty: every cache.
    pub caches: Vec<String>,
    /// What the user asked for, when a name was an alias (asked, canonical).
    pub resolved: Vec<(String, String)>,
    pub live: bool,
    pub live_max: u32,
    pub top: usize,
    pub top_caches: usize,
    pub dirs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            caches: Vec::new(),
            resolved: Vec::new(),
            live: false,
            live_max: 262_144,
            top: 5,
            top_caches: 10,
            dirs: true,
        }
    }
}

impl Args {
    pub fn validate(&self) -> Result<Options, Error> {
        if self.old_interval.is_some() {
            return Err(Error::Usage(
                "slab: -i/--interval is gone; give the interval in seconds as the first \
                 positional argument: `memtrace slab 5`"
                    .into(),
            ));
        }
        if self.old_count.is_some() {
            return Err(Error::Usage(
                "slab: --count is gone; give the count after the interval: `memtrace slab 5 3`"
                    .into(),
            ));
        }
        if self.caches.len() > MAX_FILTER {
            return Err(Error::Usage(format!(
                "--cache: at most {MAX_FILTER} caches can be filtered in the kernel ({} given)",
                self.caches.len()
            )));
        }
        let procfs = Procfs::system();
        let info = procfs.slabinfo();
        let aliases = procfs.slab_aliases();
        let mut caches: Vec<String> = Vec::new();
        let mut resolved = Vec::new();
        for name in &self.caches {
            let name = name.trim();
            if name.is_empty() {
                return Err(Error::Usage("--cache: empty cache name".into()));
            }
            if name.len() >= CACHE_NAME_LEN {
                return Err(Error::Usage(format!(
                    "--cache {name}: longer than {} bytes, no cache has such a name",
                    CACHE_NAME_LEN - 1
                )));
            }
            let c = canonical(name, info.as_ref(), &aliases, &procfs).map_err(Error::Usage)?;
            if c != name {
                resolved.push((name.to_string(), c.clone()));
            }
            if !caches.contains(&c) {
                caches.push(c);
            }
        }
        if caches.len() > MAX_FILTER {
            return Err(Error::Usage(format!(
                "--cache: at most {MAX_FILTER} caches can be filtered in the kernel ({} given)",
                caches.len()
            )));
        }
        Ok(Options {
            dirs: !self.no_dirs && (caches.is_empty() || caches.iter().any(|c| c == "dentry")),
            caches,
            resolved,
            live: self.live,
            live_max: self.live_max,
            top: self.top as usize,
            top_caches: self.top_caches as usize,
        })
    }
}

/// Resolves a user's `--cache NAME` to the name the kernel gives the cache
/// (`kmem_cache.name`, as /proc/slabinfo lists it): NAME itself, or, when NAME was merged
/// into another cache, the alias slabinfo knows. Err when no cache has that name.
pub fn canonical(
    name: &str,
    slabinfo: Option<&HashMap<String, SlabinfoRow>>,
    aliases: &BTreeMap<String, Vec<String>>,
    procfs: &Procfs,
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
    if procfs.sys_slab().join(name).exists() {
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
    use crate::kernel::procfs::{fake, parse_slabinfo};

    fn args(caches: &[&str]) -> Args {
        Args {
            caches: caches.iter().map(|s| s.to_string()).collect(),
            live: false,
            live_max: 1024,
            top: 5,
            top_caches: 10,
            no_dirs: false,
            old_interval: None,
            old_count: None,
        }
    }

    #[test]
    fn validation_rejects_unusable_cache_names_and_old_flags() {
        let long = "x".repeat(80);
        for bad in [&[""][..], &[long.as_str()], &["a", "b", "c", "d", "e", "f", "g", "h", "i"]] {
            let e = args(bad).validate().expect_err("accepted");
            assert_eq!(e.exit_code(), 2);
        }
        let e = Args { old_interval: Some("1".into()), ..args(&[]) }.validate().unwrap_err();
        assert!(e.to_string().contains("memtrace slab 5"), "{e}");
        let e = Args { old_count: Some("3".into()), ..args(&[]) }.validate().unwrap_err();
        assert!(e.to_string().contains("memtrace slab 5 3"), "{e}");
        // Dentry directories follow the cache filter.
        if Procfs::system().slabinfo().is_none() {
            assert!(!args(&["filp"]).validate().unwrap().dirs);
            assert!(args(&["dentry"]).validate().unwrap().dirs);
        }
        let o = args(&[]).validate().unwrap();
        assert!(o.dirs && o.caches.is_empty());
    }

    #[test]
    fn canonicalizes_merged_names() {
        let r = fake::Root::new("canonical");
        let root = r.0.join("sys/kernel/slab");
        std::fs::create_dir_all(root.join(":a-0000192")).unwrap();
        std::fs::create_dir_all(root.join("dentry")).unwrap();
        for alias in ["kmalloc-192", "pid_2", "filp_alias"] {
            std::os::unix::fs::symlink(root.join(":a-0000192"), root.join(alias)).unwrap();
        }
        let p = r.procfs();
        let a = p.slab_aliases();
        let mut info = parse_slabinfo("dentry 1 1 192 21 1\nnames_cache 32 32 4096 8 8\n");
        info.insert("kmalloc-192".into(), SlabinfoRow::default());
        assert_eq!(canonical("dentry", Some(&info), &a, &p).unwrap(), "dentry");
        assert_eq!(canonical("pid_2", Some(&info), &a, &p).unwrap(), "kmalloc-192");
        let e = canonical("dentr", Some(&info), &a, &p).unwrap_err();
        assert!(e.contains("did you mean dentry"), "{e}");
        assert!(canonical("nope", Some(&info), &a, &p).is_err());
        assert_eq!(canonical("anything", None, &a, &p).unwrap(), "anything");
    }
}
