//! The shmem agent. The kernel side aggregates in maps (see memtrace_common::shmem for the
//! strategies and their accuracy). Every collection (1 s, whatever the output interval)
//! the agent reads them with the system's numbers (tmpfs mounts and their `df`,
//! /proc/meminfo Shmem) and retires idle, fully freed inodes so the maps never fill; every
//! output interval and at the end it turns the last sample into records (report.rs),
//! resolving file paths, cgroups and whether the writers still run.

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray},
};
use memtrace_common::shmem::{
    CpuRuns, DevStats, InodeKey, InodeStats, KIND_TASK, RT_ALLOC_EXACT_SEEN, RT_NR_SHMEM_SEEN,
    SHMEM_COUNTERS, SHMEM_CPU, SHMEM_CPU_RUNS, SHMEM_DEVS, SHMEM_INODES, SHMEM_MAX_INODES,
    SHMEM_MAX_WRITERS, SHMEM_RUNTIME, SHMEM_TASKS, SHMEM_WRITERS, ShmemTaskEvent,
    TASK_FROM_NR_SHMEM, TaskStats, WriterKey, WriterStats, counter,
};

use super::{
    args::Options,
    model::{self, DevView, Snapshot},
    mounts::Mounts,
    report::{Accuracy, MountRecord, Reconcile, ShmemRecord, Usage, WriterRecord},
};
use crate::{
    engine::{
        family::{Agent, End, Filter, decode},
        format,
        loader::take_map,
        sink::Out,
    },
    error::Error,
    kernel::{self, cgroup, mounts as sys, procfs::Procfs},
};

/// Fully freed inodes idle this long may be retired when the maps fill up.
const RETIRE_IDLE_NS: u64 = 30_000_000_000;

/// What one collection read: the kernel maps per superblock, and the system's numbers
/// read at the same moment.
struct Sample {
    /// Taken just before the maps were read: the time of the report's records.
    time: String,
    views: BTreeMap<u32, DevView>,
    tasks: Vec<(u32, TaskStats)>,
    /// `df` (used, size) of the known tmpfs mounts.
    df: HashMap<u32, (u64, u64)>,
    meminfo: Option<u64>,
    /// Pages the NR_SHMEM hook saw allocated that have not reached the LRU yet.
    pending_pages: u64,
    /// `SHMEM_COUNTERS`, summed over CPUs.
    counters: Vec<u64>,
}

pub struct ShmemAgent {
    filter: Filter,
    procfs: Procfs,
    opts: Options,
    inodes: BpfHashMap<MapData, InodeKey, InodeStats>,
    writers: BpfHashMap<MapData, WriterKey, WriterStats>,
    tasks: BpfHashMap<MapData, u32, TaskStats>,
    devs: BpfHashMap<MapData, u32, DevStats>,
    counters: PerCpuArray<MapData, u64>,
    cpu_runs: PerCpuArray<MapData, CpuRuns>,
    page: u64,
    mounts: Mounts,
    meminfo_start: Option<u64>,
    /// Estimate of the internal mount's bytes at start: meminfo Shmem - tmpfs df used.
    internal_base: u64,
    cgroups: cgroup::Names,
    last_emitted: HashMap<(u32, u64, u32), (u64, u64)>,
    last_writer: HashMap<u32, (u64, u64)>,
    retired: BTreeMap<u32, model::Retired>,
    retired_inodes: u64,
    /// The last collection, until a report uses it.
    sample: Option<Sample>,
}

impl ShmemAgent {
    pub fn new(ebpf: &mut Ebpf, filter: Filter, opts: Options) -> Result<ShmemAgent, Error> {
        let procfs = Procfs::system();
        let mut a = ShmemAgent {
            filter,
            opts,
            inodes: take_map(ebpf, SHMEM_INODES)?,
            writers: take_map(ebpf, SHMEM_WRITERS)?,
            tasks: take_map(ebpf, SHMEM_TASKS)?,
            devs: take_map(ebpf, SHMEM_DEVS)?,
            counters: take_map(ebpf, SHMEM_COUNTERS)?,
            cpu_runs: take_map(ebpf, SHMEM_CPU)?,
            page: kernel::page_size(),
            mounts: Mounts::new(procfs.clone()),
            meminfo_start: procfs.meminfo_bytes("Shmem"),
            internal_base: 0,
            cgroups: cgroup::Names::new(&procfs),
            procfs,
            last_emitted: HashMap::new(),
            last_writer: HashMap::new(),
            retired: BTreeMap::new(),
            retired_inodes: 0,
            sample: None,
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
        let mut runtime: Array<MapData, u32> = take_map(ebpf, SHMEM_RUNTIME)?;
        runtime.set(0, rt, 0).map_err(|e| Error::bpf("writing SHMEM_RUNTIME", e))?;
        // Nothing is attributed yet: what the tmpfs mounts hold is pre-existing.
        let found = a.mounts.scan();
        for dev in a.mounts.add(found, |_| 0) {
            a.register_dev(dev);
        }
        let tmpfs_used: u64 = a.mounts.df().values().map(|(used, _)| used).sum();
        a.internal_base = a.meminfo_start.unwrap_or(0).saturating_sub(tmpfs_used);
        if let Some(d) = a.mounts.internal {
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

    fn snapshot(&self) -> Snapshot {
        fn all<K: aya::Pod + Copy, V: aya::Pod + Copy>(
            m: &BpfHashMap<MapData, K, V>,
            name: &str,
        ) -> Vec<(K, V)> {
            let mut v = Vec::new();
            for r in m.iter() {
                match r {
                    Ok(kv) => v.push(kv),
                    // An entry removed while iterating; the next collection has the rest.
                    Err(e) => log::debug!("reading {name}: {e}"),
                }
            }
            v
        }
        Snapshot {
            inodes: all(&self.inodes, SHMEM_INODES),
            writers: all(&self.writers, SHMEM_WRITERS),
            tasks: all(&self.tasks, SHMEM_TASKS),
            devs: all(&self.devs, SHMEM_DEVS),
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

    /// Keeps the kernel maps from filling up: when an inode or writer map is more than
    /// three quarters full, fully freed inodes idle for 30 s leave the maps (their totals,
    /// pre-existing frees included, are kept here).
    fn retire(&mut self, views: &BTreeMap<u32, DevView>, snap: &Snapshot) {
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
                    let key = WriterKey { dev: v.dev, tgid: w.tgid, ino: i.key.ino };
                    let _ = self.writers.remove(&key);
                }
                self.retired_inodes += 1;
            }
        }
    }

    fn passes(&self, tgid: u32, cgroup: Option<&str>) -> bool {
        self.filter.pid.is_none_or(|p| p == tgid)
            && self
                .filter
                .cgroup
                .as_deref()
                .is_none_or(|f| cgroup.is_some_and(|c| cgroup::under(c, f)))
    }

    /// One report from the last sample: per mount its record and files, the writers, the
    /// accuracy counters (final) and the reconciliation, which closes the report.
    fn report(&mut self, final_: bool, out: &mut Out) {
        if self.sample.is_none() {
            self.collect();
        }
        let Some(s) = self.sample.take() else { return };
        let page = self.page;
        let procfs = self.procfs.clone();
        let mut alive_cache: HashMap<(u32, String), bool> = HashMap::new();
        let mut alive = |tgid: u32, comm: &str| {
            *alive_cache
                .entry((tgid, comm.to_string()))
                .or_insert_with(|| procfs.comm(tgid).is_some_and(|c| c == comm))
        };

        // Mounts: every visible tmpfs with data, every superblock with activity.
        let mut devs: Vec<u32> = self.mounts.devs().collect();
        devs.extend(s.views.keys().copied());
        devs.extend(self.mounts.internal);
        devs.sort_unstable();
        devs.dedup();
        let mut mounts_out: Vec<(u32, MountRecord)> = Vec::new();
        let mut usage_out: HashMap<u32, Vec<Usage>> = HashMap::new();
        let empty = DevView::default();
        for dev in devs {
            let v = s.views.get(&dev).unwrap_or(&empty);
            let internal = self.mounts.is_internal(dev);
            let df = s.df.get(&dev).copied();
            let base = if internal { Some(self.internal_base) } else { self.mounts.base(dev) };
            let live = v.live() * page;
            let pre = base.map(|b| model::preexisting(b, v.preexisting_freed() * page));
            let active = v.allocated() > 0 || v.freed() > 0;
            if !active && !internal && df.is_none_or(|(used, _)| used == 0) {
                continue;
            }
            let mut writers: HashSet<u32> = HashSet::new();
            for i in &v.inodes {
                writers.extend(i.writers.iter().filter(|w| w.live() > 0).map(|w| w.tgid));
            }
            let record = MountRecord {
                mount: self.mounts.label(dev),
                dev: sys::kdev_str(dev),
                fstype: self.mounts.fstype(dev),
                kind: if internal { "internal" } else { "tmpfs" }.to_string(),
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
                files: v.inodes.iter().filter(|i| i.live() > 0).count(),
                writers: writers.len(),
                time: s.time.clone(),
                final_,
            };
            mounts_out.push((dev, record));

            // Files of this mount: live ones first, then those that changed since the last
            // report (e.g. just deleted), at most `top`.
            let mut rows = Vec::new();
            for i in &v.inodes {
                let kind = model::classify(internal, &i.name);
                for w in &i.writers {
                    let last = self.last_emitted.get(&(dev, i.key.ino, w.tgid));
                    let changed = last != Some(&(w.alloc, w.freed));
                    if w.live() == 0 && !changed {
                        continue;
                    }
                    rows.push((w.live(), w.alloc, i, w, kind));
                }
            }
            rows.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
            let mut files = Vec::new();
            for (_, _, i, w, kind) in rows {
                let cg = self.cgroups.name(w.cgroup_id);
                if !self.passes(w.tgid, cg.as_deref()) {
                    continue;
                }
                if files.len() >= self.opts.top {
                    break;
                }
                self.last_emitted.insert((dev, i.key.ino, w.tgid), (w.alloc, w.freed));
                let path =
                    if internal { None } else { self.mounts.path_of(dev, i.key.ino, i.live() > 0) };
                files.push(Usage {
                    kind: kind.to_string(),
                    mount: self.mounts.label(dev),
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
                    attribution: model::attribution(w.how).to_string(),
                    writer_alive: alive(w.tgid, &w.comm),
                    first_alloc: format::boot_time(w.first_ns),
                    last_alloc: format::boot_time(w.last_ns),
                    time: s.time.clone(),
                    final_,
                });
            }
            usage_out.insert(dev, files);
        }
        mounts_out.sort_by(|(_, a), (_, b)| {
            b.live_bytes.cmp(&a.live_bytes).then(a.mount.cmp(&b.mount))
        });

        // Writers: per task, from NR_SHMEM (or the allocation hook), with what they still
        // hold across all files.
        let mut held: HashMap<u32, (u64, usize)> = HashMap::new();
        for i in s.views.values().flat_map(|v| &v.inodes) {
            for w in &i.writers {
                let e = held.entry(w.tgid).or_default();
                e.0 += w.live();
                if w.live() > 0 {
                    e.1 += 1;
                }
            }
        }
        let mut tasks: Vec<&(u32, TaskStats)> = s.tasks.iter().collect();
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
            let cg = self.cgroups.name(t.cgroup_id);
            if !self.passes(*tgid, cg.as_deref()) {
                continue;
            }
            if writers_out.len() >= self.opts.top {
                break;
            }
            self.last_writer.insert(*tgid, (t.added_pages, t.removed_pages));
            writers_out.push(WriterRecord {
                tgid: *tgid,
                pid: t.pid,
                alive: alive(*tgid, &comm),
                comm,
                cgroup: cg,
                allocated_bytes: t.added_pages * page,
                freed_bytes: t.removed_pages * page,
                live_bytes: live.0 * page,
                files: live.1,
                source: if t.source == TASK_FROM_NR_SHMEM { "nr_shmem" } else { "alloc_hook" }
                    .to_string(),
                time: s.time.clone(),
                final_,
            });
        }

        // Reconciliation with /proc/meminfo.
        let attributed: u64 = s.views.values().map(|v| v.live() * page).sum();
        let preexisting: u64 = mounts_out.iter().filter_map(|(_, m)| m.preexisting_bytes).sum();
        let pending = s.pending_pages * page;
        let reconcile = Reconcile {
            meminfo_shmem_bytes: s.meminfo,
            meminfo_shmem_start_bytes: self.meminfo_start,
            attributed_live_bytes: attributed,
            preexisting_bytes: preexisting,
            pending_lru_bytes: pending,
            unexplained_bytes: s
                .meminfo
                .map(|m| model::unexplained(m, attributed + pending, preexisting)),
            tmpfs_df_used_bytes: mounts_out
                .iter()
                .filter(|(_, m)| m.kind == "tmpfs")
                .filter_map(|(_, m)| m.df_used_bytes)
                .sum(),
            time: s.time.clone(),
            final_,
        };

        for (dev, m) in mounts_out {
            out.emit(&ShmemRecord::Mount(m));
            for u in usage_out.remove(&dev).into_iter().flatten() {
                out.emit(&ShmemRecord::Usage(u));
            }
        }
        for w in writers_out {
            out.emit(&ShmemRecord::Writer(w));
        }
        if final_ {
            out.emit(&ShmemRecord::Accuracy(self.accuracy(&s)));
        }
        out.emit(&ShmemRecord::Reconcile(reconcile));
    }

    fn accuracy(&self, s: &Sample) -> Accuracy {
        let c = |i: u32| s.counters.get(i as usize).copied().unwrap_or(0);
        Accuracy {
            alloc_folios: c(counter::ALLOC_FOLIOS),
            run_attributed: c(counter::RUN_ATTRIBUTED),
            drain_attributed: c(counter::DRAIN_ATTRIBUTED),
            lru_reinserted: c(counter::LRU_REINSERTED),
            lru_truncated: c(counter::LRU_TRUNCATED),
            freed_before_lru: c(counter::FREED_BEFORE_LRU),
            unseen_freed_pages: c(counter::UNSEEN_FREED_PAGES),
            nr_shmem_events: c(counter::NR_SHMEM_EVENTS),
            alloc_failed: c(counter::ALLOC_FAILED),
            runs_merged: c(counter::RUNS_MERGED),
            retired_inodes: self.retired_inodes,
            time: s.time.clone(),
        }
    }
}

/// A task record: the cgroup path BPF read, learned for its id. False when it does not
/// decode.
pub(super) fn task_record(cgroups: &mut cgroup::Names, bytes: &[u8]) -> bool {
    let Some(ev) = decode::<ShmemTaskEvent>(bytes) else { return false };
    if let Some(path) = cgroup::render(&ev.cgroup) {
        // The path read in BPF belongs to the id when they agree (the classic memcg
        // tracepoint reads the path of the current task's memcg).
        if ev.cgroup.id == ev.cgroup_id || ev.cgroup_id == 0 {
            cgroups.learn(ev.cgroup.id, &path);
        }
    }
    true
}

impl Agent for ShmemAgent {
    fn record(&mut self, kind: u32, bytes: &[u8], _out: &mut Out) -> bool {
        kind == KIND_TASK && task_record(&mut self.cgroups, bytes)
    }

    /// Reads the maps with the system's numbers (new mounts first: their `df` before the
    /// maps), and retires idle freed inodes when the maps crowd.
    fn collect(&mut self) {
        let time = format::now();
        let found = self.mounts.scan();
        let snap = self.snapshot();
        let views = model::analyze(&snap, &self.retired);
        let page = self.page;
        for dev in self.mounts.add(found, |d| views.get(&d).map_or(0, |v| v.live() * page)) {
            self.register_dev(dev);
        }
        let df = self.mounts.df();
        // The views were computed before this retirement: they still count the retired
        // inodes one by one (the next sample counts them in `retired`).
        self.retire(&views, &snap);
        self.sample = Some(Sample {
            time,
            views,
            tasks: snap.tasks,
            df,
            meminfo: self.procfs.meminfo_bytes("Shmem"),
            pending_pages: self.pending_pages(),
            counters: self.counters(),
        });
    }

    fn interval(&mut self, out: &mut Out) {
        self.report(false, out);
    }

    fn finish(&mut self, out: &mut Out, _end: End) {
        self.report(true, out);
    }
}
