//! procfs and sysfs readers: /proc/meminfo, vmstat, pressure, zoneinfo, slabinfo,
//! dentry-state, vm sysctls, task comms, /sys/kernel/slab aliases. Every reader goes
//! through a [`Procfs`] rooted at "/" normally and at a fake tree in unit tests.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where procfs and sysfs are: "/" on the running system, a temporary tree in tests.
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Self {
        Procfs::system()
    }
}

impl Procfs {
    /// The running system.
    pub fn system() -> Procfs {
        Procfs { root: PathBuf::from("/") }
    }

    /// A tree under `root` laid out like "/" (root/proc/meminfo, ...).
    #[cfg(test)]
    pub fn at(root: impl Into<PathBuf>) -> Procfs {
        Procfs { root: root.into() }
    }

    /// `rel` ("proc/meminfo") under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    /// /proc/meminfo: value per key, in kB (HugePages_* counts as they are).
    pub fn meminfo(&self) -> Option<BTreeMap<String, u64>> {
        self.read("proc/meminfo").map(|t| key_values(&t))
    }

    /// One /proc/meminfo value in bytes.
    pub fn meminfo_bytes(&self, key: &str) -> Option<u64> {
        self.meminfo()?.get(key).map(|kb| kb * 1024)
    }

    /// /proc/vmstat counters.
    pub fn vmstat(&self) -> Option<BTreeMap<String, u64>> {
        self.read("proc/vmstat").map(|t| key_values(&t))
    }

    /// /proc/pressure/memory (None without PSI).
    pub fn memory_pressure(&self) -> Option<Psi> {
        self.read("proc/pressure/memory").map(|t| parse_psi(&t))
    }

    /// /proc/zoneinfo watermarks of the zones with managed pages.
    pub fn zoneinfo(&self, page_kb: u64) -> Vec<Zone> {
        self.read("proc/zoneinfo").map(|t| parse_zoneinfo(&t, page_kb)).unwrap_or_default()
    }

    /// A numeric sysctl such as "vm/swappiness".
    pub fn sysctl(&self, name: &str) -> Option<i64> {
        self.read(&format!("proc/sys/{name}")).and_then(|s| s.trim().parse().ok())
    }

    /// NUMA nodes online (1 when unknown).
    pub fn numa_nodes(&self) -> u32 {
        self.read("sys/devices/system/node/online")
            .map(|s| count_ranges(s.trim()))
            .unwrap_or(1)
            .max(1)
    }

    /// /proc/slabinfo by cache name (None when unreadable, e.g. not root).
    pub fn slabinfo(&self) -> Option<HashMap<String, SlabinfoRow>> {
        self.read("proc/slabinfo").map(|t| parse_slabinfo(&t))
    }

    /// /proc/sys/fs/dentry-state.
    pub fn dentry_state(&self) -> Option<DentryState> {
        self.read("proc/sys/fs/dentry-state").and_then(|t| parse_dentry_state(&t))
    }

    /// A task's comm, while it runs.
    pub fn comm(&self, tgid: u32) -> Option<String> {
        self.read(&format!("proc/{tgid}/comm")).map(|s| s.trim_end().to_string())
    }

    /// Merged slab caches (/sys/kernel/slab): per name, the other names of the same cache.
    pub fn slab_aliases(&self) -> BTreeMap<String, Vec<String>> {
        slab_aliases(&self.path("sys/kernel/slab"))
    }

    /// The /sys/kernel/slab directory (a cache name exists there even when slabinfo merges it).
    pub fn sys_slab(&self) -> PathBuf {
        self.path("sys/kernel/slab")
    }

    /// This boot's id (/proc/sys/kernel/random/boot_id).
    pub fn boot_id(&self) -> Option<String> {
        self.read("proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string())
    }

    /// The host's name (/proc/sys/kernel/hostname).
    pub fn hostname(&self) -> Option<String> {
        self.read("proc/sys/kernel/hostname").map(|s| s.trim().to_string())
    }

    /// Kernel memory held by this process's BPF maps: `memlock` of every map fd in
    /// /proc/self/fdinfo, each map (`map_id`) once; and how many maps.
    pub fn bpf_maps(&self) -> BpfMaps {
        let Ok(dir) = std::fs::read_dir(self.path("proc/self/fdinfo")) else { return BpfMaps::default() };
        let mut maps = BTreeMap::new();
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            let f = key_values(&text);
            if let (Some(id), Some(bytes)) = (f.get("map_id"), f.get("memlock")) {
                maps.insert(*id, *bytes);
            }
        }
        BpfMaps { bytes: maps.values().sum(), maps: maps.len() }
    }
}

/// The BPF maps a process holds ([`Procfs::bpf_maps`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfMaps {
    /// Their `memlock`: the kernel memory they are charged.
    pub bytes: u64,
    pub maps: usize,
}

/// "Key: value [kB]" or "key value" lines: the first number per key.
pub fn key_values(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.trim_end_matches(':').to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Pressure stall totals (us) and 10 s averages (%) of one PSI file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Psi {
    /// (some, full) totals in us; None when the file has no "some" line.
    pub total_us: Option<(u64, u64)>,
    /// (some, full) avg10 in %.
    pub avg10: Option<(f64, f64)>,
}

pub fn parse_psi(text: &str) -> Psi {
    let mut total = (None, None);
    let mut avg = (None, None);
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let which = it.next();
        let mut t = None;
        let mut a = None;
        for kv in it {
            if let Some(v) = kv.strip_prefix("total=") {
                t = v.parse::<u64>().ok();
            } else if let Some(v) = kv.strip_prefix("avg10=") {
                a = v.parse::<f64>().ok();
            }
        }
        match which {
            Some("some") => (total.0, avg.0) = (t, a),
            Some("full") => (total.1, avg.1) = (t, a),
            _ => {}
        }
    }
    Psi {
        total_us: total.0.map(|s| (s, total.1.unwrap_or(0))),
        avg10: avg.0.map(|s| (s, avg.1.unwrap_or(0.0))),
    }
}

/// One memory zone's free pages and watermarks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Zone {
    pub node: u32,
    pub zone: String,
    pub free_kb: u64,
    pub min_kb: u64,
    pub low_kb: u64,
    pub high_kb: u64,
    pub managed_kb: u64,
}

pub fn parse_zoneinfo(text: &str, page_kb: u64) -> Vec<Zone> {
    let mut zones = Vec::new();
    let mut cur: Option<Zone> = None;
    let mut in_pages = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Node ") {
            if let Some(z) = cur.take() {
                zones.push(z);
            }
            // "Node 0, zone   Normal"
            let (node, zone) = rest.split_once(", zone").unwrap_or((rest, ""));
            cur = Some(Zone {
                node: node.trim().parse().unwrap_or(0),
                zone: zone.trim().to_string(),
                ..Zone::default()
            });
            in_pages = false;
            continue;
        }
        let Some(z) = cur.as_mut() else { continue };
        let t = line.trim();
        let mut it = t.split_whitespace();
        let (k, v) = match (it.next(), it.next(), it.next()) {
            (Some("pages"), Some("free"), Some(v)) => {
                in_pages = true;
                ("free", v)
            }
            (Some(k), Some(v), None) => (k, v),
            _ => continue,
        };
        let v: u64 = v.parse().unwrap_or(0);
        let kb = v.saturating_mul(page_kb);
        match k {
            "free" => z.free_kb = kb,
            "min" if in_pages => z.min_kb = kb,
            "low" if in_pages => z.low_kb = kb,
            "high" if in_pages => z.high_kb = kb,
            "managed" if in_pages => z.managed_kb = kb,
            _ => {}
        }
        if t.starts_with("pagesets") || t.starts_with("protection") {
            in_pages = false;
        }
    }
    zones.extend(cur);
    zones.retain(|z| z.managed_kb > 0);
    zones
}

/// "0-3,8" -> 5.
pub fn count_ranges(s: &str) -> u32 {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => {
                b.parse::<u32>().unwrap_or(0).saturating_sub(a.parse().unwrap_or(0)) + 1
            }
            None => 1,
        })
        .sum()
}

/// One /proc/slabinfo line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabinfoRow {
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u64,
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
pub fn slab_aliases(root: &Path) -> BTreeMap<String, Vec<String>> {
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

#[cfg(test)]
pub mod fake {
    //! A temporary directory laid out like "/", for the readers' unit tests.

    use std::path::PathBuf;

    /// A /proc/zoneinfo of three zones (DMA, Normal under its min watermark, Movable empty).
    pub const ZONEINFO: &str = "Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 1
  pages free     3840
        boost    0
        min      8
        low      11
        high     14
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 2, 3, 3)
Node 0, zone   Normal
  pages free     1000
        boost    0
        min      2000
        low      2500
        high     3000
        spanned  262144
        present  262144
        managed  250000
        protection: (0, 0, 0, 0)
      nr_free_pages 1000
  pagesets
    cpu: 0
              count: 10
              high:  99
Node 0, zone  Movable
  pages free     0
        min      0
        low      0
        high     0
        managed  0
";

    pub struct Root(pub PathBuf);

    impl Root {
        pub fn new(tag: &str) -> Root {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("memtrace-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Root(p)
        }

        pub fn write(&self, rel: &str, s: &str) -> &Root {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
            self
        }

        pub fn procfs(&self) -> super::Procfs {
            super::Procfs::at(&self.0)
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
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
    fn host_facts_and_bpf_map_memory() {
        let root = fake::Root::new("procfs-host");
        let map = |id: u32, bytes: u32| format!("pos:\t0\nflags:\t02000002\nmap_type:\t2\nmemlock:\t{bytes}\nmap_id:\t{id}\n");
        root.write("proc/sys/kernel/random/boot_id", "6f1c1d3e-0000-4000-8000-000000000001\n")
            .write("proc/sys/kernel/hostname", "node-7\n")
            .write("proc/self/fdinfo/3", &map(7, 4096))
            .write("proc/self/fdinfo/4", &map(7, 4096))
            .write("proc/self/fdinfo/5", &map(9, 8192))
            .write("proc/self/fdinfo/6", "pos:\t0\nflags:\t02\nmnt_id:\t24\n");
        let p = root.procfs();
        assert_eq!(p.boot_id().as_deref(), Some("6f1c1d3e-0000-4000-8000-000000000001"));
        assert_eq!(p.hostname().as_deref(), Some("node-7"));
        assert_eq!(p.bpf_maps(), BpfMaps { bytes: 4096 + 8192, maps: 2 }, "each map once, other fds ignored");
        assert_eq!(fake::Root::new("procfs-empty").procfs().bpf_maps(), BpfMaps::default());
    }

    #[test]
    fn parses_dentry_state() {
        let d = parse_dentry_state("842612\t803335\t45\t0\t700004\t0\n").unwrap();
        assert_eq!(d.nr_dentry, 842_612);
        assert_eq!(d.nr_negative, 700_004);
        assert_eq!(d.positive(), 142_608);
        assert!(parse_dentry_state("1 2 3").is_none());
    }

    #[test]
    fn parses_zoneinfo_watermarks() {
        let z = parse_zoneinfo(fake::ZONEINFO, 4);
        assert_eq!(z.len(), 2, "{z:?}");
        assert_eq!(z[0].zone, "DMA");
        assert_eq!((z[0].min_kb, z[0].low_kb, z[0].high_kb, z[0].free_kb), (32, 44, 56, 15360));
        assert_eq!(z[1].zone, "Normal");
        assert_eq!((z[1].free_kb, z[1].low_kb, z[1].managed_kb), (4000, 10000, 1_000_000));
    }

    #[test]
    fn parses_psi_and_ranges() {
        let p = parse_psi(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1000\nfull avg10=12.25 avg60=0.00 avg300=0.00 total=400\n",
        );
        assert_eq!(p.total_us, Some((1000, 400)));
        assert_eq!(p.avg10, Some((1.5, 12.25)));
        assert_eq!(parse_psi("garbage"), Psi::default());
        assert_eq!(count_ranges("0-3,8"), 5);
        assert_eq!(count_ranges("0"), 1);
    }

    #[test]
    fn reads_a_fake_tree() {
        let r = fake::Root::new("procfs");
        r.write("proc/meminfo", "MemTotal:       1000000 kB\nShmem:   2048 kB\nHugePages_Total: 0\n")
            .write("proc/sys/vm/swappiness", "60\n")
            .write("proc/sys/fs/dentry-state", "10 2 45 0 7 0\n")
            .write("proc/42/comm", "worker\n")
            .write("sys/devices/system/node/online", "0-1\n")
            .write("proc/slabinfo", SLABINFO);
        let p = r.procfs();
        assert_eq!(p.meminfo().unwrap()["MemTotal"], 1_000_000);
        assert_eq!(p.meminfo_bytes("Shmem"), Some(2048 * 1024));
        assert_eq!(p.sysctl("vm/swappiness"), Some(60));
        assert_eq!(p.sysctl("vm/nope"), None);
        assert_eq!(p.dentry_state().unwrap().nr_negative, 7);
        assert_eq!(p.comm(42).as_deref(), Some("worker"));
        assert_eq!(p.comm(43), None);
        assert_eq!(p.numa_nodes(), 2);
        assert_eq!(p.slabinfo().unwrap()["dentry"].objsize, 192);
        assert!(p.vmstat().is_none());
        assert!(p.memory_pressure().is_none());
    }

    #[test]
    fn finds_merged_slab_names() {
        let r = fake::Root::new("sysslab");
        let root = r.0.join("sys/kernel/slab");
        std::fs::create_dir_all(root.join(":a-0000192")).unwrap();
        std::fs::create_dir_all(root.join("dentry")).unwrap();
        for alias in ["kmalloc-192", "pid_2", "filp_alias"] {
            std::os::unix::fs::symlink(root.join(":a-0000192"), root.join(alias)).unwrap();
        }
        let a = r.procfs().slab_aliases();
        assert_eq!(a["pid_2"], vec!["filp_alias".to_string(), "kmalloc-192".to_string()]);
        assert!(!a.contains_key("dentry"), "unmerged caches have no aliases");
    }
}
