//! What an SRE would otherwise collect by hand next to reclaim stalls: vmstat allocstall and
//! pgscan direct-vs-kswapd deltas, PSI memory pressure, zone watermarks, the vm sysctls that
//! shape reclaim; and plain notes when a setting is the usual culprit.
//!
//! The readers are kernel::procfs's, rooted at a fake tree in the tests.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::kernel::procfs::{Procfs, Zone, parse_psi};

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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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

impl Snapshot {
    /// Now, from `procfs`; `cgroup_dir` is the -c cgroup's directory (v2: memory.pressure).
    pub fn take(procfs: &Procfs, cgroup_dir: Option<&Path>, page_kb: u64) -> Snapshot {
        let vmstat = procfs.vmstat().unwrap_or_default();
        let psi = procfs.memory_pressure().unwrap_or_default();
        let (psi_total_us, psi_avg10) = (psi.total_us, psi.avg10);
        let cg_psi_total_us = cgroup_dir
            .and_then(|d| std::fs::read_to_string(d.join("memory.pressure")).ok())
            .and_then(|s| parse_psi(&s).total_us);
        let zones = procfs.zoneinfo(page_kb);
        let num = |name: &str| procfs.sysctl(name);
        let sysctl = Sysctls {
            swappiness: num("vm/swappiness"),
            min_free_kbytes: num("vm/min_free_kbytes"),
            watermark_scale_factor: num("vm/watermark_scale_factor"),
            zone_reclaim_mode: num("vm/zone_reclaim_mode"),
            overcommit_memory: num("vm/overcommit_memory"),
            dirty_ratio: num("vm/dirty_ratio"),
            dirty_background_ratio: num("vm/dirty_background_ratio"),
            dirty_bytes: num("vm/dirty_bytes"),
            dirty_background_bytes: num("vm/dirty_background_bytes"),
        };
        let meminfo = procfs.meminfo().unwrap_or_default();
        let numa_nodes = procfs.numa_nodes();
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

/// vmstat deltas over a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VmstatDelta {
    /// Sum of allocstall_* (entries into global direct reclaim).
    pub allocstall: u64,
    pub pgscan_direct: u64,
    pub pgscan_kswapd: u64,
    pub pgsteal_direct: u64,
    pub pgsteal_kswapd: u64,
    pub compact_stall: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::procfs::fake;

    fn fake_root(vmstat: &str, psi: &str) -> fake::Root {
        let d = fake::Root::new("reclaim-ctx");
        d.write("proc/vmstat", vmstat)
            .write("proc/pressure/memory", psi)
            .write("proc/zoneinfo", fake::ZONEINFO)
            .write("proc/meminfo", "MemTotal:       1000000 kB\nSwapTotal:             0 kB\n")
            .write("proc/sys/vm/swappiness", "60\n")
            .write("proc/sys/vm/min_free_kbytes", "2048\n")
            .write("proc/sys/vm/watermark_scale_factor", "10\n")
            .write("proc/sys/vm/zone_reclaim_mode", "1\n")
            .write("proc/sys/vm/overcommit_memory", "1\n")
            .write("proc/sys/vm/dirty_ratio", "20\n")
            .write("sys/devices/system/node/online", "0-1\n");
        d
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
        let sa = Snapshot::take(&a.procfs(), None, 4);
        let sb = Snapshot::take(&b.procfs(), None, 4);
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
