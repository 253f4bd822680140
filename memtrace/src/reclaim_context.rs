//! What an SRE would otherwise collect by hand next to reclaim stalls: vmstat allocstall and
//! pgscan direct-vs-kswapd deltas, PSI memory pressure, zone watermarks, the vm sysctls that
//! shape reclaim; and plain notes when a setting is the usual culprit.
//!
//! Readers take a root directory so tests can feed them fake procfs files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// Cumulative counters and settings at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub vmstat: BTreeMap<String, u64>,
    /// PSI memory totals (us): some, full; None without PSI.
    pub psi_total_us: Option<(u64, u64)>,
    pub psi_avg10: Option<(f64, f64)>,
    /// Same for the filtered cgroup (cgroup v2 memory.pressure), if any.
    pub cg_psi_total_us: Option<(u64, u64)>,
    pub zones: Vec<Zone>,
    pub sysctl: Sysctls,
    pub mem_total_kb: u64,
    pub swap_total_kb: u64,
    pub numa_nodes: u32,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Zone {
    pub node: u32,
    pub zone: String,
    pub free_kb: u64,
    pub min_kb: u64,
    pub low_kb: u64,
    pub high_kb: u64,
    pub managed_kb: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Sysctls {
    pub swappiness: Option<i64>,
    pub min_free_kbytes: Option<i64>,
    pub watermark_scale_factor: Option<i64>,
    pub zone_reclaim_mode: Option<i64>,
    pub overcommit_memory: Option<i64>,
    pub dirty_ratio: Option<i64>,
    pub dirty_background_ratio: Option<i64>,
    pub dirty_bytes: Option<i64>,
    pub dirty_background_bytes: Option<i64>,
}

/// Where to read from: "/" normally, a temp dir in tests.
#[derive(Clone, Debug)]
pub struct Sources {
    pub root: PathBuf,
    /// cgroup v2 directory of the -c filter, for its memory.pressure.
    pub cgroup_dir: Option<PathBuf>,
}

impl Sources {
    pub fn system(cgroup_dir: Option<PathBuf>) -> Sources {
        Sources { root: PathBuf::from("/"), cgroup_dir }
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }
}

/// PSI totals (some, full) in us and 10 s averages (some, full) in %.
type PsiParsed = (Option<(u64, u64)>, Option<(f64, f64)>);

fn parse_psi(text: &str) -> PsiParsed {
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
    let t = total.0.map(|s| (s, total.1.unwrap_or(0)));
    let a = avg.0.map(|s| (s, avg.1.unwrap_or(0.0)));
    (t, a)
}

fn parse_zoneinfo(text: &str, page_kb: u64) -> Vec<Zone> {
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
        match k {
            "free" => z.free_kb = v * page_kb,
            "min" if in_pages => z.min_kb = v * page_kb,
            "low" if in_pages => z.low_kb = v * page_kb,
            "high" if in_pages => z.high_kb = v * page_kb,
            "managed" if in_pages => z.managed_kb = v * page_kb,
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

fn kv_u64(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.trim_end_matches(':').to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

impl Snapshot {
    pub fn take(src: &Sources, page_kb: u64) -> Snapshot {
        let vmstat = src.read("proc/vmstat").map(|s| kv_u64(&s)).unwrap_or_default();
        let (psi_total_us, psi_avg10) =
            src.read("proc/pressure/memory").map(|s| parse_psi(&s)).unwrap_or((None, None));
        let cg_psi_total_us = src
            .cgroup_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("memory.pressure")).ok())
            .and_then(|s| parse_psi(&s).0);
        let zones =
            src.read("proc/zoneinfo").map(|s| parse_zoneinfo(&s, page_kb)).unwrap_or_default();
        let num = |rel: &str| src.read(rel).and_then(|s| s.trim().parse::<i64>().ok());
        let sysctl = Sysctls {
            swappiness: num("proc/sys/vm/swappiness"),
            min_free_kbytes: num("proc/sys/vm/min_free_kbytes"),
            watermark_scale_factor: num("proc/sys/vm/watermark_scale_factor"),
            zone_reclaim_mode: num("proc/sys/vm/zone_reclaim_mode"),
            overcommit_memory: num("proc/sys/vm/overcommit_memory"),
            dirty_ratio: num("proc/sys/vm/dirty_ratio"),
            dirty_background_ratio: num("proc/sys/vm/dirty_background_ratio"),
            dirty_bytes: num("proc/sys/vm/dirty_bytes"),
            dirty_background_bytes: num("proc/sys/vm/dirty_background_bytes"),
        };
        let meminfo = src.read("proc/meminfo").map(|s| kv_u64(&s)).unwrap_or_default();
        let numa_nodes = src
            .read("sys/devices/system/node/online")
            .map(|s| count_ranges(s.trim()))
            .unwrap_or(1)
            .max(1);
        Snapshot {
            vmstat,
            psi_total_us,
            psi_avg10,
            cg_psi_total_us,
            zones,
            sysctl,
            mem_total_kb: meminfo.get("MemTotal").copied().unwrap_or(0),
            swap_total_kb: meminfo.get("SwapTotal").copied().unwrap_or(0),
            numa_nodes,
        }
    }

    fn sum_prefix(&self, prefix: &str) -> u64 {
        self.vmstat.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }
}

/// "0-3,8" -> 5.
fn count_ranges(s: &str) -> u32 {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap_or(0).saturating_sub(a.parse().unwrap_or(0)) + 1,
            None => 1,
        })
        .sum()
}

/// vmstat deltas over a window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct VmstatDelta {
    /// Sum of allocstall_* (entries into global direct reclaim).
    pub allocstall: u64,
    pub pgscan_direct: u64,
    pub pgscan_kswapd: u64,
    pub pgsteal_direct: u64,
    pub pgsteal_kswapd: u64,
    pub compact_stall: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Psi {
    /// Share of wall time at least one task (some) / all non-idle tasks (full) stalled on
    /// memory during the window, %.
    pub some_pct: Option<f64>,
    pub full_pct: Option<f64>,
    /// The kernel's 10 s averages at the end of the window.
    pub some_avg10: Option<f64>,
    pub full_avg10: Option<f64>,
    /// The -c cgroup's own pressure (cgroup v2), %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_some_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_full_pct: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Kswapd {
    pub wakes: u64,
    pub awake_ms: f64,
}

/// Stall totals per kind over the window, what the notes reason about.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StallTotals {
    pub direct: u64,
    pub memcg: u64,
    pub node: u64,
    pub compaction: u64,
    pub throttle: u64,
    pub throttle_writeback: u64,
    pub throttle_writeback_ms: f64,
    /// Cgroup with the most memcg stalls, and its limit in bytes if known.
    pub top_memcg: Option<(String, Option<u64>)>,
}

/// The context of one window, as printed and as JSON.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Context {
    pub vmstat: VmstatDelta,
    pub psi: Psi,
    pub kswapd: Kswapd,
    pub zones: Vec<Zone>,
    pub sysctl: Sysctls,
    pub numa_nodes: u32,
    pub swap_total_kb: u64,
    pub notes: Vec<String>,
}

pub fn context(a: &Snapshot, b: &Snapshot, secs: f64, kswapd: Kswapd, st: &StallTotals) -> Context {
    let d = |k: &str| b.vmstat.get(k).copied().unwrap_or(0).saturating_sub(a.vmstat.get(k).copied().unwrap_or(0));
    let vmstat = VmstatDelta {
        allocstall: b.sum_prefix("allocstall_").saturating_sub(a.sum_prefix("allocstall_")),
        pgscan_direct: d("pgscan_direct"),
        pgscan_kswapd: d("pgscan_kswapd"),
        pgsteal_direct: d("pgsteal_direct"),
        pgsteal_kswapd: d("pgsteal_kswapd"),
        compact_stall: d("compact_stall"),
    };
    let pct = |x: Option<(u64, u64)>, y: Option<(u64, u64)>, full: bool| {
        let (x, y) = (x?, y?);
        let (x, y) = if full { (x.1, y.1) } else { (x.0, y.0) };
        (secs > 0.0).then(|| round2(y.saturating_sub(x) as f64 / (secs * 1e6) * 100.0))
    };
    let psi = Psi {
        some_pct: pct(a.psi_total_us, b.psi_total_us, false),
        full_pct: pct(a.psi_total_us, b.psi_total_us, true),
        some_avg10: b.psi_avg10.map(|p| p.0),
        full_avg10: b.psi_avg10.map(|p| p.1),
        cgroup_some_pct: pct(a.cg_psi_total_us, b.cg_psi_total_us, false),
        cgroup_full_pct: pct(a.cg_psi_total_us, b.cg_psi_total_us, true),
    };
    let mut c = Context {
        vmstat,
        psi,
        kswapd,
        zones: b.zones.clone(),
        sysctl: b.sysctl.clone(),
        numa_nodes: b.numa_nodes,
        swap_total_kb: b.swap_total_kb,
        notes: Vec::new(),
    };
    c.notes = notes(&c, b.mem_total_kb, secs, st);
    c
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Plain findings: the usual culprits, only when the window shows the matching stalls.
pub fn notes(c: &Context, mem_total_kb: u64, secs: f64, st: &StallTotals) -> Vec<String> {
    let mut n = Vec::new();
    let s = &c.sysctl;
    let direct = st.direct.max(c.vmstat.allocstall);
    if direct > 0 {
        let mfk = s.min_free_kbytes.unwrap_or(0);
        let wsf = s.watermark_scale_factor.unwrap_or(10);
        let pct = if mem_total_kb > 0 { mfk as f64 * 100.0 / mem_total_kb as f64 } else { 0.0 };
        if mem_total_kb > 0 && pct < 1.0 {
            n.push(format!(
                "{direct} entries into global direct reclaim: kswapd did not keep free memory above \
                 the low watermark. vm.min_free_kbytes is {mfk} ({pct:.2}% of RAM) and \
                 vm.watermark_scale_factor is {wsf}: raising either (e.g. watermark_scale_factor \
                 100-200, or min_free_kbytes near 1% of RAM) wakes kswapd earlier"
            ));
        }
        if c.kswapd.wakes > 0 && secs > 0.0 && c.kswapd.awake_ms >= secs * 1000.0 * 0.8 {
            n.push(format!(
                "kswapd was awake {:.0}% of the time and still fell behind: allocations outpace \
                 background reclaim",
                c.kswapd.awake_ms / (secs * 10.0)
            ));
        }
    }
    for z in &c.zones {
        if direct > 0 && z.free_kb < z.low_kb {
            n.push(format!(
                "node {} zone {}: {} KiB free, below the low watermark ({} KiB; min {} KiB)",
                z.node, z.zone, z.free_kb, z.low_kb, z.min_kb
            ));
        }
    }
    if let Some(m) = s.zone_reclaim_mode.filter(|&m| m != 0) {
        if c.numa_nodes > 1 {
            n.push(format!(
                "vm.zone_reclaim_mode is {m} on a {}-node NUMA machine: allocations reclaim their \
                 local node instead of using free memory on other nodes ({} node reclaim stalls); \
                 0 is the usual setting",
                c.numa_nodes, st.node
            ));
        }
    }
    if st.throttle_writeback > 0 {
        let dirty = match (s.dirty_bytes, s.dirty_ratio) {
            (Some(b), _) if b > 0 => format!("vm.dirty_bytes {b}"),
            (_, Some(r)) => format!("vm.dirty_ratio {r}%"),
            _ => "the dirty limits".into(),
        };
        n.push(format!(
            "reclaim waited {} times ({:.1} ms) for dirty pages to be written back \
             (VMSCAN_THROTTLE_WRITEBACK): pages are dirtied faster than written; lower {dirty} / \
             dirty_background, or write bulk data with O_DIRECT or regular fsync",
            st.throttle_writeback, st.throttle_writeback_ms
        ));
    }
    if st.memcg > 0 {
        if let Some((cg, limit)) = &st.top_memcg {
            let lim = limit.map(|l| format!(" (limit {} MiB)", l >> 20)).unwrap_or_default();
            n.push(format!(
                "{} stalls are memory cgroup reclaim, most in {cg}{lim}: the cgroup is at its \
                 limit, and its page cache counts against it; raise the limit or shrink the \
                 working set",
                st.memcg
            ));
        }
    }
    let stalled = direct + st.memcg;
    if stalled > 0 {
        if c.swap_total_kb == 0 {
            n.push(
                "no swap: only page cache and slab can be reclaimed; anonymous memory stays, so \
                 reclaim works harder as the cache shrinks"
                    .into(),
            );
        } else if s.swappiness == Some(0) {
            n.push("vm.swappiness is 0: reclaim avoids swapping anonymous memory until the page \
                    cache is nearly gone"
                .into());
        }
        if s.overcommit_memory == Some(1) {
            n.push(
                "vm.overcommit_memory is 1 (always): allocations never fail up front, so memory \
                 shortage shows up as reclaim stalls and OOM kills instead"
                    .into(),
            );
        }
    }
    if let Some(f) = c.psi.full_avg10.filter(|&f| f >= 10.0) {
        n.push(format!(
            "memory pressure is severe: all non-idle tasks stalled on memory {f:.1}% of the last 10 s"
        ));
    }
    n
}

/// Reads a cgroup's memory limit (v2 memory.max, v1 memory.limit_in_bytes) in bytes.
pub fn cgroup_limit(dir: &Path) -> Option<u64> {
    for f in ["memory.max", "memory.limit_in_bytes"] {
        if let Ok(s) = std::fs::read_to_string(dir.join(f)) {
            // "max" or a huge v1 value mean unlimited.
            return s.trim().parse::<u64>().ok().filter(|&v| v < (1 << 60));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONEINFO: &str = "Node 0, zone      DMA
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

    fn fake_root(vmstat: &str, psi: &str) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        d.write("proc/vmstat", vmstat);
        d.write("proc/pressure/memory", psi);
        d.write("proc/zoneinfo", ZONEINFO);
        d.write("proc/meminfo", "MemTotal:       1000000 kB\nSwapTotal:             0 kB\n");
        d.write("proc/sys/vm/swappiness", "60\n");
        d.write("proc/sys/vm/min_free_kbytes", "2048\n");
        d.write("proc/sys/vm/watermark_scale_factor", "10\n");
        d.write("proc/sys/vm/zone_reclaim_mode", "1\n");
        d.write("proc/sys/vm/overcommit_memory", "1\n");
        d.write("proc/sys/vm/dirty_ratio", "20\n");
        d.write("sys/devices/system/node/online", "0-1\n");
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("memtrace-ctx-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn write(&self, rel: &str, s: &str) {
                let p = self.0.join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, s).unwrap();
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn parses_zoneinfo_watermarks() {
        let z = parse_zoneinfo(ZONEINFO, 4);
        assert_eq!(z.len(), 2, "{z:?}");
        assert_eq!(z[0].zone, "DMA");
        assert_eq!((z[0].min_kb, z[0].low_kb, z[0].high_kb, z[0].free_kb), (32, 44, 56, 15360));
        assert_eq!(z[1].zone, "Normal");
        assert_eq!((z[1].free_kb, z[1].low_kb, z[1].managed_kb), (4000, 10000, 1_000_000));
    }

    #[test]
    fn parses_psi() {
        let (t, a) = parse_psi(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1000\nfull avg10=12.25 avg60=0.00 avg300=0.00 total=400\n",
        );
        assert_eq!(t, Some((1000, 400)));
        assert_eq!(a, Some((1.5, 12.25)));
        assert_eq!(count_ranges("0-3,8"), 5);
        assert_eq!(count_ranges("0"), 1);
    }

    #[test]
    fn deltas_and_notes_from_fake_procfs() {
        let a = fake_root(
            "allocstall_dma32 1\nallocstall_normal 10\npgscan_direct 100\npgscan_kswapd 50\n",
            "some avg10=0.00 total=0\nfull avg10=0.00 total=0\n",
        );
        let b = fake_root(
            "allocstall_dma32 2\nallocstall_normal 20\npgscan_direct 600\npgscan_kswapd 50\n",
            "some avg10=30.00 total=500000\nfull avg10=20.00 total=250000\n",
        );
        let sa = Snapshot::take(&Sources { root: a.0.clone(), cgroup_dir: None }, 4);
        let sb = Snapshot::take(&Sources { root: b.0.clone(), cgroup_dir: None }, 4);
        assert_eq!(sb.numa_nodes, 2);
        let st = StallTotals {
            direct: 11,
            memcg: 5,
            throttle_writeback: 3,
            throttle_writeback_ms: 120.0,
            top_memcg: Some(("/job".into(), Some(64 << 20))),
            ..Default::default()
        };
        let c = context(&sa, &sb, 2.0, Kswapd { wakes: 4, awake_ms: 1900.0 }, &st);
        assert_eq!(c.vmstat.allocstall, 11);
        assert_eq!(c.vmstat.pgscan_direct, 500);
        assert_eq!(c.vmstat.pgscan_kswapd, 0);
        assert_eq!(c.psi.some_pct, Some(25.0));
        assert_eq!(c.psi.full_pct, Some(12.5));
        assert_eq!(c.psi.full_avg10, Some(20.0));
        let all = c.notes.join("\n");
        for want in [
            "vm.min_free_kbytes is 2048 (0.20% of RAM)",
            "kswapd was awake 95%",
            "zone Normal: 4000 KiB free, below the low watermark (10000 KiB",
            "vm.zone_reclaim_mode is 1 on a 2-node NUMA machine",
            "waited 3 times (120.0 ms)",
            "vm.dirty_ratio 20%",
            "most in /job (limit 64 MiB)",
            "no swap",
            "vm.overcommit_memory is 1",
            "stalled on memory 20.0%",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        // No stalls, nothing to blame: only settings that matter regardless remain.
        let quiet = context(&sa, &sa, 2.0, Kswapd::default(), &StallTotals::default());
        assert!(quiet.notes.iter().all(|n| n.contains("zone_reclaim_mode")), "{:?}", quiet.notes);
    }
}
