//! The shmem agent. The kernel side aggregates in maps (see memtrace_common::shmem for the
//! strategies and their accuracy); this agent reads them every interval and at the end,
//! resolves paths, cgroups and mount points, and emits `shmem_usage`, `shmem_mount`,
//! `shmem_writer` and `shmem_reconcile` records.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray},
};
use memtrace_common::{
    shmem::{
        CpuRuns, DevStats, InodeKey, InodeStats, KIND_TASK, RT_ALLOC_EXACT_SEEN, RT_NR_SHMEM_SEEN,
        SHMEM_CPU_RUNS, ShmemTaskEvent, TASK_FROM_NR_SHMEM, TaskStats, WriterKey, WriterStats,
        counter,
    },
};
use serde::Serialize;

use super::{
    args::Options,
    model::{self, DevView, Snapshot},
};
use crate::{
    engine::{
        family::{Agent, Filter, decode},
        format::{self, kib},
        loader::take_map,
        sink::{Out, Text},
    },
    error::Error,
    kernel::{
        self, cgroup,
        mounts::{self as sys, Mount},
        procfs::Procfs,
    },
};

/// Entries visited when walking a tmpfs for inode -> path.
const WALK_BUDGET: usize = 200_000;
/// Walk a mount again for unresolved live inodes at most this often.
const WALK_EVERY: Duration = Duration::from_secs(5);
/// Fully freed inodes idle this long may be retired when the maps fill up.
const RETIRE_IDLE_NS: u64 = 30_000_000_000;

struct MountState {
    mount: Mount,
    /// Bytes in use when memtrace first saw the mount that it had not seen allocated.
    base: Option<u64>,
}

#[derive(Default)]
struct PathCache {
    map: HashMap<u64, PathBuf>,
    walked_at: Option<Instant>,
}

pub struct ShmemAgent {
    cfg: Filter,
    procfs: Procfs,
    opts: Options,
    inodes: BpfHashMap<MapData, InodeKey, InodeStats>,
    writers: BpfHashMap<MapData, WriterKey, WriterStats>,
    tasks: BpfHashMap<MapData, u32, TaskStats>,
    devs: BpfHashMap<MapData, u32, DevStats>,
    counters: PerCpuArray<MapData, u64>,
    cpu_runs: PerCpuArray<MapData, CpuRuns>,
    page: u64,
    internal_dev: Option<u32>,
    mounts: BTreeMap<u32, MountState>,
    meminfo_start: Option<u64>,
    /// Estimate of the internal mount's bytes at start: meminfo Shmem - tmpfs df used.
    internal_base: u64,
    cgroups: cgroup::Names,
    paths: HashMap<u32, PathCache>,
    last_emitted: HashMap<(u32, u64, u32), (u64, u64)>,
    last_writer: HashMap<u32, (u64, u64)>,
    retired: BTreeMap<u32, model::Retired>,
    retired_inodes: u64,
    reports: u64,
}

impl ShmemAgent {
    pub fn new(ebpf: &mut Ebpf, cfg: Filter, opts: Options) -> Result<ShmemAgent, Error> {
        let procfs = Procfs::system();
        let mut a = ShmemAgent {
            cfg,
            opts,
            inodes: take_map(ebpf, "SHMEM_INODES")?,
            writers: take_map(ebpf, "SHMEM_WRITERS")?,
            tasks: take_map(ebpf, "SHMEM_TASKS")?,
            devs: take_map(ebpf, "SHMEM_DEVS")?,
            counters: take_map(ebpf, "SHMEM_COUNTERS")?,
            cpu_runs: take_map(ebpf, "SHMEM_CPU")?,
            page: kernel::page_size(),
            internal_dev: sys::internal_shm_dev(),
            mounts: BTreeMap::new(),
            meminfo_start: procfs.meminfo_bytes("Shmem"),
            internal_base: 0,
            cgroups: cgroup::Names::new(&procfs),
            procfs,
            paths: HashMap::new(),
            last_emitted: HashMap::new(),
            last_writer: HashMap::new(),
            retired: BTreeMap::new(),
            retired_inodes: 0,
            reports: 0,
        };
        // Which strategies run, for the programs: with the NR_SHMEM hook attached, an LRU
        // insertion without a pending NR_SHMEM run is a re-insertion (or a folio allocated
        // before memtrace started), not a new allocation. A loaded program is an attached
        // one: probes loads a candidate only to attach it, and tracepoint attaches do not
        // fail after a successful load.
        let loaded = |n: &str| ebpf.program(n).is_some_and(|p| p.fd().is_ok());
        let mut rt = 0;
        if ["shmem_memcg_btf", "shmem_memcg_raw", "shmem_memcg_tp"].into_iter().any(loaded) {
            rt |= RT_NR_SHMEM_SEEN;
        }
        if ["shmem_add_fexit", "shmem_add_kprobe", "shmem_alloc_kretprobe"].into_iter().any(loaded)
        {
            rt |= RT_ALLOC_EXACT_SEEN;
        }
        let mut runtime: Array<MapData, u32> = take_map(ebpf, "SHMEM_RUNTIME")?;
        runtime.set(0, rt, 0).map_err(|e| Error::bpf("writing SHMEM_RUNTIME", e))?;
        // Nothing is attributed yet: what the tmpfs mounts hold is pre-existing.
        a.refresh_mounts(&BTreeMap::new());
        let tmpfs_used: u64 =
            a.mounts.values().filter_map(|m| sys::statfs(&m.mount.point).map(|(u, _)| u)).sum();
        a.internal_base = a.meminfo_start.unwrap_or(0).saturating_sub(tmpfs_used);
        if let Some(d) = a.internal_dev {
            a.register_dev(d);
        }
        Ok(a)
    }

    /// Lets the classic free tracepoint recognise a shmem superblock.
    fn register_dev(&mut self, dev: u32) {
        let zero = DevStats::default();
        // BPF_NOEXIST: never overwrite counters the kernel already keeps.
        if let Err(e) = self.devs.insert(dev, zero, 1) {
            log::debug!("SHMEM_DEVS insert {}: {e}", sys::kdev_str(dev));
        }
    }

    /// Reads /proc/self/mountinfo again; a mount seen for the first time gets its
    /// pre-existing base: df used minus what memtrace already attributes there.
    fn refresh_mounts(&mut self, views: &BTreeMap<u32, DevView>) {
        let mut new_devs = Vec::new();
        for m in sys::mounts(&self.procfs) {
            if Some(m.dev) == self.internal_dev {
                continue;
            }
            if let Some(st) = self.mounts.get_mut(&m.dev) {
                st.mount = m;
                continue;
            }
            let live = views.get(&m.dev).map_or(0, |v| v.live() * self.page);
            let base = sys::statfs(&m.point).map(|(used, _)| used.saturating_sub(live));
            new_devs.push(m.dev);
            self.mounts.insert(m.dev, MountState { mount: m, base });
        }
        for d in new_devs {
            self.register_dev(d);
        }
    }

    fn snapshot(&self) -> Snapshot {
        fn all<K: aya::Pod + Copy, V: aya::Pod + Copy>(
            m: &BpfHashMap<MapData, K, V>,
            name: &str,
        ) -> Vec<(K, V)> {
            let mut v = Vec::new();
            for r in m.iter() {
                match r {
                    Ok(kv) => v.push(kv),
                    // An entry removed while iterating; the next report has the rest.
                    Err(e) => log::debug!("reading {name}: {e}"),
                }
            }
            v
        }
        Snapshot {
            inodes: all(&self.inodes, "SHMEM_INODES"),
            writers: all(&self.writers, "SHMEM_WRITERS"),
            tasks: all(&self.tasks, "SHMEM_TASKS"),
            devs: all(&self.devs, "SHMEM_DEVS"),
        }
    }

    fn counters(&self) -> Vec<u64> {
        (0..counter::COUNT)
            .map(|i| self.counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }

    /// Pages the NR_SHMEM hook saw allocated that have not reached the LRU yet (their file
    /// is not known until then), over all CPUs.
    fn pending_pages(&self) -> u64 {
        let Ok(per_cpu) = self.cpu_runs.get(&0, 0) else { return 0 };
        per_cpu
            .iter()
            .map(|c| {
                let len = (c.len as usize).min(SHMEM_CPU_RUNS);
                (0..len)
                    .map(|k| c.runs[(c.head as usize + k) % SHMEM_CPU_RUNS].pages as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.name(id)
    }

    /// Paths of live inodes on a visible tmpfs, walking the mount when one is unknown.
    fn path_of(&mut self, dev: u32, ino: u64, live: bool) -> Option<String> {
        let st = self.mounts.get(&dev)?;
        let root = st.mount.point.clone();
        let cache = self.paths.entry(dev).or_default();
        if let Some(p) = cache.map.get(&ino) {
            if sys::is_inode(p, dev, ino) {
                return Some(p.display().to_string());
            }
            cache.map.remove(&ino);
        }
        if !live || cache.walked_at.is_some_and(|t| t.elapsed() < WALK_EVERY) {
            return None;
        }
        let (map, complete) = sys::walk(&root, dev, WALK_BUDGET);
        if !complete {
            log::info!("{}: walked {WALK_BUDGET} entries, some paths unresolved", root.display());
        }
        cache.map = map;
        cache.walked_at = Some(Instant::now());
        cache.map.get(&ino).map(|p| p.display().to_string())
    }

    fn mount_label(&self, dev: u32) -> String {
        if Some(dev) == self.internal_dev {
            INTERNAL_MOUNT.to_string()
        } else {
            match self.mounts.get(&dev) {
                Some(m) => m.mount.point.display().to_string(),
                None => format!("dev {}", sys::kdev_str(dev)),
            }
        }
    }

    fn report(&mut self, final_: bool, out: &mut Out) {
        self.reports += 1;
        let snap = self.snapshot();
        let views = model::analyze(&snap, &self.retired);
        self.refresh_mounts(&views);
        let time = format::now();
        let page = self.page;
        let top = self.opts.top;

        // Mounts: every visible tmpfs with data, every superblock with activity.
        let mut devs: Vec<u32> = self.mounts.keys().copied().collect();
        devs.extend(views.keys().copied());
        devs.extend(self.internal_dev);
        devs.sort_unstable();
        devs.dedup();
        let procfs = self.procfs.clone();
        let mut alive_cache: HashMap<(u32, String), bool> = HashMap::new();
        let mut alive = |tgid: u32, comm: &str| {
            *alive_cache
                .entry((tgid, comm.to_string()))
                .or_insert_with(|| procfs.comm(tgid).is_some_and(|c| c == comm))
        };

        let mut mounts_out = Vec::new();
        let mut usage_out: BTreeMap<u32, Vec<Usage>> = BTreeMap::new();
        let empty = DevView::default();
        for dev in devs {
            let v = views.get(&dev).unwrap_or(&empty);
            let internal = Some(dev) == self.internal_dev;
            let df = self.mounts.get(&dev).and_then(|m| sys::statfs(&m.mount.point));
            let base = if internal {
                Some(self.internal_base)
            } else {
                self.mounts.get(&dev).and_then(|m| m.base)
            };
            let live = v.live() * page;
            let pre = base.map(|b| model::preexisting(b, v.preexisting_freed() * page));
            let files = v.inodes.iter().filter(|i| i.live() > 0).count();
            let active = v.allocated() > 0 || v.freed() > 0;
            if !active && !internal && df.is_none_or(|(used, _)| used == 0) {
                continue;
            }
            let mut writers: HashSet<u32> = HashSet::new();
            for i in &v.inodes {
                writers.extend(i.writers.iter().filter(|w| w.live() > 0).map(|w| w.tgid));
            }
            mounts_out.push(MountRecord {
                kind: "shmem_mount",
                mount: self.mount_label(dev),
                dev: sys::kdev_str(dev),
                fstype: if internal {
                    "shmem".into()
                } else {
                    self.mounts.get(&dev).map_or_else(|| "tmpfs".into(), |m| m.mount.fstype.clone())
                },
                mount_kind: if internal { "internal" } else { "tmpfs" },
                live_bytes: live,
                df_used_bytes: df.map(|(u, _)| u),
                df_size_bytes: df.map(|(_, s)| s),
                preexisting_bytes: pre,
                unexplained_bytes: match (df, pre) {
                    (Some((used, _)), Some(p)) => Some(model::unexplained(used, live, p)),
                    _ => None,
                },
                allocated_bytes: v.allocated() * page,
                freed_bytes: v.freed() * page,
                files,
                writers: writers.len(),
                time: time.clone(),
                final_,
            });

            // Files of this mount: live ones first, then those that changed since the last
            // report (e.g. just deleted), at most `top`.
            let mut rows = Vec::new();
            for i in &v.inodes {
                let kind = model::classify(internal, &i.name);
                for w in &i.writers {
                    let key = (dev, i.key.ino, w.tgid);
                    let changed = self.last_emitted.get(&key) != Some(&(w.alloc, w.freed));
                    if w.live() == 0 && !changed {
                        continue;
                    }
                    rows.push((w.live(), w.alloc, i, w, kind));
                }
            }
            rows.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
            let mut out = Vec::new();
            for (_, _, i, w, kind) in rows {
                let cg = self.cgroup_path(w.cgroup_id);
                if !self.passes(w.tgid, cg.as_deref()) {
                    continue;
                }
                if out.len() >= top {
                    break;
                }
                self.last_emitted.insert((dev, i.key.ino, w.tgid), (w.alloc, w.freed));
                let path = if internal { None } else { self.path_of(dev, i.key.ino, i.live() > 0) };
                out.push(Usage {
                    kind_: "shmem_usage",
                    kind,
                    mount: self.mount_label(dev),
                    dev: sys::kdev_str(dev),
                    inode: i.key.ino,
                    path,
                    name: i.name.clone(),
                    tgid: w.tgid,
                    pid: w.pid,
                    comm: w.comm.clone(),
                    cgroup: cg,
                    cgroup_id: w.cgroup_id,
                    allocated_bytes: w.alloc * page,
                    freed_bytes: w.freed * page,
                    live_bytes: w.live() * page,
                    file_live_bytes: i.live() * page,
                    attribution: model::attribution(w.how),
                    writer_alive: alive(w.tgid, &w.comm),
                    first_alloc: format::boot_time(w.first_ns),
                    last_alloc: format::boot_time(w.last_ns),
                    time: time.clone(),
                    final_,
                });
            }
            usage_out.insert(dev, out);
        }
        mounts_out.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then(a.mount.cmp(&b.mount)));

        // Writers: per task, from NR_SHMEM (or the allocation hook), with what they still
        // hold across all files.
        let mut held: HashMap<u32, (u64, usize)> = HashMap::new();
        for v in views.values() {
            for i in &v.inodes {
                for w in &i.writers {
                    let e = held.entry(w.tgid).or_default();
                    e.0 += w.live();
                    if w.live() > 0 {
                        e.1 += 1;
                    }
                }
            }
        }
        let mut tasks: Vec<&(u32, TaskStats)> = snap.tasks.iter().collect();
        tasks.sort_by_key(|(tgid, t)| {
            (std::cmp::Reverse(held.get(tgid).map_or(0, |h| h.0)), std::cmp::Reverse(t.added_pages))
        });
        let mut writers_out = Vec::new();
        for (tgid, t) in tasks {
            let live = held.get(tgid).copied().unwrap_or_default();
            let changed = self.last_writer.get(tgid) != Some(&(t.added_pages, t.removed_pages));
            if live.0 == 0 && !changed {
                continue;
            }
            let comm = kernel::cstr(&t.comm);
            let cg = self.cgroup_path(t.cgroup_id);
            if !self.passes(*tgid, cg.as_deref()) {
                continue;
            }
            if writers_out.len() >= top {
                break;
            }
            self.last_writer.insert(*tgid, (t.added_pages, t.removed_pages));
            writers_out.push(WriterRecord {
                kind: "shmem_writer",
                tgid: *tgid,
                pid: t.pid,
                alive: alive(*tgid, &comm),
                comm,
                cgroup: cg,
                allocated_bytes: t.added_pages * page,
                freed_bytes: t.removed_pages * page,
                live_bytes: live.0 * page,
                files: live.1,
                source: if t.source == TASK_FROM_NR_SHMEM { "nr_shmem" } else { "alloc_hook" },
                time: time.clone(),
                final_,
            });
        }

        // Reconciliation with /proc/meminfo.
        let attributed: u64 = views.values().map(|v| v.live() * page).sum();
        let preexisting: u64 = mounts_out.iter().filter_map(|m| m.preexisting_bytes).sum();
        let meminfo = self.procfs.meminfo_bytes("Shmem");
        let pending = self.pending_pages() * page;
        let reconcile = Reconcile {
            kind: "shmem_reconcile",
            meminfo_shmem_bytes: meminfo,
            meminfo_shmem_start_bytes: self.meminfo_start,
            attributed_live_bytes: attributed,
            preexisting_bytes: preexisting,
            pending_lru_bytes: pending,
            unexplained_bytes: meminfo
                .map(|m| model::unexplained(m, attributed + pending, preexisting)),
            tmpfs_df_used_bytes: mounts_out
                .iter()
                .filter(|m| m.mount_kind == "tmpfs")
                .filter_map(|m| m.df_used_bytes)
                .sum(),
            time: time.clone(),
            final_,
        };

        {
            out.emit(&reconcile);
            for m in &mounts_out {
                out.emit(m);
                let dev = mounts_out_dev(m);
                for u in usage_out.get(&dev).into_iter().flatten() {
                    out.emit(u);
                }
            }
            for w in &writers_out {
                out.emit(w);
            }
            if final_ {
                out.emit(&self.accuracy(&time));
            }
        }
        {
            out.legacy_text(Text::out(render_text(&reconcile, &mounts_out, &usage_out, &writers_out, final_)));
            if final_ {
                let a = self.accuracy(&time);
                out.legacy_text(Text::err(format!(
                    "memtrace: shmem accuracy: {} folios counted ({} via NR_SHMEM runs, {} by \
                     the draining task), {} LRU re-insertions ignored, {} freed before reaching \
                     the LRU, {} pre-existing pages freed, {} failed adds, {} runs merged",
                    a.alloc_folios,
                    a.run_attributed,
                    a.drain_attributed,
                    a.lru_reinserted,
                    a.freed_before_lru,
                    a.unseen_freed_pages,
                    a.alloc_failed,
                    a.runs_merged
                )));
            }
        }
        if !final_ {
            self.retire(&views, &snap);
        }
    }

    fn accuracy(&self, time: &str) -> Accuracy {
        let c = self.counters();
        Accuracy {
            kind: "shmem_accuracy",
            alloc_folios: c[counter::ALLOC_FOLIOS as usize],
            run_attributed: c[counter::RUN_ATTRIBUTED as usize],
            drain_attributed: c[counter::DRAIN_ATTRIBUTED as usize],
            lru_reinserted: c[counter::LRU_REINSERTED as usize],
            lru_truncated: c[counter::LRU_TRUNCATED as usize],
            freed_before_lru: c[counter::FREED_BEFORE_LRU as usize],
            unseen_freed_pages: c[counter::UNSEEN_FREED_PAGES as usize],
            nr_shmem_events: c[counter::NR_SHMEM_EVENTS as usize],
            alloc_failed: c[counter::ALLOC_FAILED as usize],
            runs_merged: c[counter::RUNS_MERGED as usize],
            retired_inodes: self.retired_inodes,
            time: time.to_string(),
        }
    }

    fn passes(&self, tgid: u32, cgroup: Option<&str>) -> bool {
        self.cfg.pid.is_none_or(|p| p == tgid)
            && self
                .cfg
                .cgroup
                .as_deref()
                .is_none_or(|f| cgroup.is_some_and(|c| cgroup::under(c, f)))
    }

    /// Keeps the kernel maps from filling up: when an inode or writer map is more than
    /// three quarters full, fully freed inodes idle for 30 s leave the maps (their
    /// pre-existing frees are kept here).
    fn retire(&mut self, views: &BTreeMap<u32, DevView>, snap: &Snapshot) {
        use memtrace_common::shmem::{SHMEM_MAX_INODES, SHMEM_MAX_WRITERS};
        let crowded = snap.inodes.len() * 4 > SHMEM_MAX_INODES as usize * 3
            || snap.writers.len() * 4 > SHMEM_MAX_WRITERS as usize * 3;
        if !crowded {
            return;
        }
        let now = kernel::boot_ns();
        for v in views.values() {
            for i in &v.inodes {
                if i.live() > 0 || now.saturating_sub(i.last_ns) < RETIRE_IDLE_NS {
                    continue;
                }
                let r = self.retired.entry(v.dev).or_default();
                r.alloc += i.alloc;
                r.freed += i.freed;
                r.excess += i.excess();
                let _ = self.inodes.remove(&i.key);
                for w in &i.writers {
                    let _ = self.writers.remove(&WriterKey {
                        dev: v.dev,
                        tgid: w.tgid,
                        ino: i.key.ino,
                    });
                }
                self.retired_inodes += 1;
            }
        }
    }
}

const INTERNAL_MOUNT: &str = "[shm_mnt]";

fn mounts_out_dev(m: &MountRecord) -> u32 {
    let (maj, min) = m.dev.split_once(':').unwrap_or(("0", "0"));
    sys::kdev(maj.parse().unwrap_or(0), min.parse().unwrap_or(0))
}

#[derive(Serialize)]
pub struct Usage {
    #[serde(rename = "type")]
    kind_: &'static str,
    /// tmpfs | memfd | sysv | shared_anon | internal
    kind: &'static str,
    mount: String,
    dev: String,
    inode: u64,
    path: Option<String>,
    /// The inode's dentry name when first seen (memfd:NAME, SYSV0000abcd, dev/zero, ...).
    name: String,
    tgid: u32,
    pid: u32,
    comm: String,
    cgroup: Option<String>,
    cgroup_id: u64,
    allocated_bytes: u64,
    freed_bytes: u64,
    live_bytes: u64,
    /// The whole file's live bytes (all writers).
    file_live_bytes: u64,
    /// exact | cpu_run | drain_task: how the writer was identified.
    attribution: &'static str,
    writer_alive: bool,
    first_alloc: String,
    last_alloc: String,
    time: String,
    #[serde(rename = "final")]
    final_: bool,
}

#[derive(Serialize)]
pub struct MountRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    mount: String,
    dev: String,
    fstype: String,
    /// tmpfs (a mounted filesystem) or internal (the kernel's shm mount: memfd, SysV, shared
    /// anonymous memory).
    #[serde(rename = "kind")]
    mount_kind: &'static str,
    live_bytes: u64,
    df_used_bytes: Option<u64>,
    df_size_bytes: Option<u64>,
    preexisting_bytes: Option<u64>,
    unexplained_bytes: Option<i64>,
    allocated_bytes: u64,
    freed_bytes: u64,
    files: usize,
    writers: usize,
    time: String,
    #[serde(rename = "final")]
    final_: bool,
}

#[derive(Serialize)]
pub struct WriterRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    tgid: u32,
    pid: u32,
    comm: String,
    cgroup: Option<String>,
    alive: bool,
    /// Shmem pages added, and removed, in this task's context.
    allocated_bytes: u64,
    freed_bytes: u64,
    /// What it allocated that is still live, and in how many files.
    live_bytes: u64,
    files: usize,
    /// nr_shmem (memcg NR_SHMEM tracepoint) or alloc_hook.
    source: &'static str,
    time: String,
    #[serde(rename = "final")]
    final_: bool,
}

#[derive(Serialize)]
pub struct Reconcile {
    #[serde(rename = "type")]
    kind: &'static str,
    meminfo_shmem_bytes: Option<u64>,
    meminfo_shmem_start_bytes: Option<u64>,
    attributed_live_bytes: u64,
    preexisting_bytes: u64,
    /// Allocated while traced, still in per-CPU LRU batches: writer known, file not yet
    /// (LRU strategy only).
    pending_lru_bytes: u64,
    unexplained_bytes: Option<i64>,
    tmpfs_df_used_bytes: u64,
    time: String,
    #[serde(rename = "final")]
    final_: bool,
}

#[derive(Serialize)]
pub struct Accuracy {
    #[serde(rename = "type")]
    kind: &'static str,
    alloc_folios: u64,
    run_attributed: u64,
    drain_attributed: u64,
    lru_reinserted: u64,
    lru_truncated: u64,
    freed_before_lru: u64,
    unseen_freed_pages: u64,
    nr_shmem_events: u64,
    alloc_failed: u64,
    runs_merged: u64,
    retired_inodes: u64,
    time: String,
}

fn b(v: u64) -> String {
    kib((v / 1024) as i64)
}

fn sb(v: i64) -> String {
    kib(v / 1024)
}

fn who(tgid: u32, comm: &str, alive: bool) -> String {
    format!("{comm}[{tgid}]{}", if alive { "" } else { " (exited)" })
}

pub fn render_text(
    r: &Reconcile,
    mounts: &[MountRecord],
    usage: &BTreeMap<u32, Vec<Usage>>,
    writers: &[WriterRecord],
    final_: bool,
) -> String {
    let opt = |v: Option<u64>| v.map(b).unwrap_or_else(|| "?".into());
    let mut s = format!("{}  shmem{}\n", r.time, if final_ { " (final)" } else { "" });
    s += &format!(
        "  /proc/meminfo Shmem {} (at start {}): attributed live {}, pre-existing {}, {}unexplained {}\n",
        opt(r.meminfo_shmem_bytes),
        opt(r.meminfo_shmem_start_bytes),
        b(r.attributed_live_bytes),
        b(r.preexisting_bytes),
        if r.pending_lru_bytes > 0 {
            format!("waiting for the LRU {}, ", b(r.pending_lru_bytes))
        } else {
            String::new()
        },
        r.unexplained_bytes.map(sb).unwrap_or_else(|| "?".into()),
    );
    s += &format!(
        "  {:<32} {:<8} {:>11} {:>11} {:>13} {:>12}\n",
        "MOUNT", "KIND", "LIVE", "DF USED", "PRE-EXISTING", "UNEXPLAINED"
    );
    for m in mounts {
        s += &format!(
            "  {:<32} {:<8} {:>11} {:>11} {:>13} {:>12}\n",
            format!("{} ({})", m.mount, m.dev),
            m.mount_kind,
            b(m.live_bytes),
            opt(m.df_used_bytes),
            opt(m.preexisting_bytes),
            m.unexplained_bytes.map(sb).unwrap_or_else(|| "-".into()),
        );
        let dev = mounts_out_dev(m);
        let files = usage.get(&dev).map(Vec::as_slice).unwrap_or_default();
        for u in files {
            let place = u.path.clone().unwrap_or_else(|| {
                if u.name.is_empty() { format!("ino {}", u.inode) } else { u.name.clone() }
            });
            s += &format!(
                "      {:>10} live  {} {} (ino {})  by {}  cgroup {}  [{}{}]\n",
                b(u.live_bytes),
                u.kind,
                place,
                u.inode,
                who(u.tgid, &u.comm, u.writer_alive),
                u.cgroup.as_deref().unwrap_or("?"),
                u.attribution,
                if u.freed_bytes > 0 {
                    format!(", {} freed", b(u.freed_bytes))
                } else {
                    String::new()
                },
            );
        }
        // Writers of this mount, from its files.
        let mut per: BTreeMap<(u32, String), (u64, bool, Option<String>)> = BTreeMap::new();
        for u in files {
            let e = per.entry((u.tgid, u.comm.clone())).or_insert((
                0,
                u.writer_alive,
                u.cgroup.clone(),
            ));
            e.0 += u.live_bytes;
        }
        let mut per: Vec<_> = per.into_iter().collect();
        per.sort_by_key(|p| std::cmp::Reverse(p.1.0));
        if !per.is_empty() {
            let list: Vec<String> = per
                .iter()
                .map(|((tgid, comm), (live, alive, cg))| {
                    format!(
                        "{} {} in {}",
                        who(*tgid, comm, *alive),
                        b(*live),
                        cg.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            s += &format!("      writers: {}\n", list.join("; "));
        }
    }
    if !writers.is_empty() {
        s += "  writers (all shmem, in their own context):\n";
        for w in writers {
            s += &format!(
                "      {:<28} allocated {:>10}  freed {:>10}  still live {:>10} in {} files  cgroup {}\n",
                who(w.tgid, &w.comm, w.alive),
                b(w.allocated_bytes),
                b(w.freed_bytes),
                b(w.live_bytes),
                w.files,
                w.cgroup.as_deref().unwrap_or("?"),
            );
        }
    }
    s
}

impl Agent for ShmemAgent {
    fn record(&mut self, kind: u32, bytes: &[u8], _out: &mut Out) -> bool {
        if kind != KIND_TASK {
            return false;
        }
        let Some(ev) = decode::<ShmemTaskEvent>(bytes) else { return false };
        if let Some(path) = cgroup::render(&ev.cgroup) {
            // The path read in BPF belongs to the id when they agree (the classic memcg
            // tracepoint reads the path of the current task's memcg).
            if ev.cgroup.id == ev.cgroup_id || ev.cgroup_id == 0 {
                self.cgroups.learn(ev.cgroup.id, &path);
            }
        }
        true
    }

    fn interval(&mut self, out: &mut Out) {
        if self.opts.periodic {
            self.report(false, out);
        }
    }

    fn finish(&mut self, out: &mut Out) {
        self.report(true, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_mounts_files_and_writers() {
        let r = Reconcile {
            kind: "shmem_reconcile",
            meminfo_shmem_bytes: Some(80 << 20),
            meminfo_shmem_start_bytes: Some(16 << 20),
            attributed_live_bytes: 64 << 20,
            preexisting_bytes: 16 << 20,
            pending_lru_bytes: 0,
            unexplained_bytes: Some(0),
            tmpfs_df_used_bytes: 64 << 20,
            time: "t".into(),
            final_: true,
        };
        let m = MountRecord {
            kind: "shmem_mount",
            mount: "/run".into(),
            dev: "0:25".into(),
            fstype: "tmpfs".into(),
            mount_kind: "tmpfs",
            live_bytes: 64 << 20,
            df_used_bytes: Some(64 << 20),
            df_size_bytes: Some(128 << 20),
            preexisting_bytes: Some(0),
            unexplained_bytes: Some(0),
            allocated_bytes: 64 << 20,
            freed_bytes: 0,
            files: 1,
            writers: 1,
            time: "t".into(),
            final_: true,
        };
        let u = Usage {
            kind_: "shmem_usage",
            kind: "tmpfs",
            mount: "/run".into(),
            dev: "0:25".into(),
            inode: 7,
            path: Some("/run/log/big.log".into()),
            name: "big.log".into(),
            tgid: 42,
            pid: 42,
            comm: "logger".into(),
            cgroup: Some("/system.slice".into()),
            cgroup_id: 3,
            allocated_bytes: 64 << 20,
            freed_bytes: 0,
            live_bytes: 64 << 20,
            file_live_bytes: 64 << 20,
            attribution: "exact",
            writer_alive: false,
            first_alloc: "t".into(),
            last_alloc: "t".into(),
            time: "t".into(),
            final_: true,
        };
        let mut usage = BTreeMap::new();
        usage.insert(sys::kdev(0, 25), vec![u]);
        let s = render_text(&r, &[m], &usage, &[], true);
        assert!(s.contains("/run (0:25)"), "{s}");
        assert!(
            s.contains("64.0 MiB live  tmpfs /run/log/big.log (ino 7)  by logger[42] (exited)"),
            "{s}"
        );
        assert!(s.contains("writers: logger[42] (exited) 64.0 MiB in /system.slice"), "{s}");
        let j = serde_json::to_value(&usage[&sys::kdev(0, 25)][0]).unwrap();
        for k in [
            "type",
            "kind",
            "mount",
            "inode",
            "path",
            "tgid",
            "comm",
            "cgroup",
            "allocated_bytes",
            "freed_bytes",
            "live_bytes",
        ] {
            assert!(j.get(k).is_some(), "shmem_usage has no {k}: {j}");
        }
        assert_eq!(j["type"], "shmem_usage");
        assert_eq!(j["final"], true);
    }
}
