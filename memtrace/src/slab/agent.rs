//! The slab agent. The kernel counts allocations and frees per cache and per cache x call
//! site x process x memory cgroup in cumulative per-CPU maps (memtrace-ebpf/src/slab).
//! Every collection (each second) the agent reads them, turns them into deltas for the
//! current period and the totals, and prunes idle caller rows so the kernel map keeps room
//! however long the output interval. Every interval (and at the end, with the totals) it
//! emits the period's records: each cache that changed, ranked by net growth, with its top
//! callers (symbolized, named), reconciled with /proc/slabinfo and, for dentry, with
//! /proc/sys/fs/dentry-state and the directories the lookups hit.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use memtrace_common::slab::{
    CACHE_NAME_FAILED, CACHE_SIZE_ONLY, CACHE_SLOTS, CALLER_SLOTS, CacheCounters, CacheInfo,
    CacheSlot, CallerCounts, CallerKey, CallerSlot, DirKey, S_CACHE_NAME_FAILED, S_CACHES_FULL,
    S_CALLERS_FULL, S_CGROUP_READ_FAILED, S_DIR_JOINED, S_DIR_NO_PATH, S_DIR_READ_FAILED,
    S_DIRS_FULL, S_LIVE_FAILED, S_LIVE_HITS, S_LIVE_INSERTS, S_LIVE_MISSES, S_LIVE_REPLACED,
    S_PATHS_RECORDED, SLAB_CACHE_COUNTS, SLAB_CACHE_INFO, SLAB_CACHE_SLOTS, SLAB_CALLER_SLOTS,
    SLAB_CALLERS, SLAB_DIRS, SLAB_LIVE, SLAB_STATS,
};

use super::{
    args::Options,
    config::callers_max,
    model::{Counts, Cumulative, group_by, ranked_by_net, top_by_frees, top_by_net},
    names::Names,
    report::{
        CacheRecord, DentryRecord, DirRecord, GrowthRecord, LiveSummary, PeriodRecord, Scope,
        SlabRecord, SummaryRecord,
    },
};
use crate::{
    engine::{
        family::{Agent, End, Filter},
        format,
        loader::take_map as take,
        sink::Out,
    },
    error::Error,
    kernel::{
        cstr,
        kallsyms::Kallsyms,
        procfs::{DentryState, Procfs, SlabinfoRow},
    },
};

/// What the kernel told us about a cache key.
#[derive(Clone, Debug)]
struct CacheMeta {
    name: String,
    /// `kmem_cache.size`: what one object takes in its slab (slabinfo's objsize).
    size: u32,
}

/// A caller row as emitted: keys of the same cache name merged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RowId {
    cache: String,
    call_site: u64,
    tgid: u32,
    memcg: u64,
}

/// A directory row as emitted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DirId {
    dir: String,
    tgid: u32,
}

type Slabinfo = HashMap<String, SlabinfoRow>;

/// /proc readings taken at a period's ends.
#[derive(Clone)]
struct Readings {
    slabinfo: Option<Slabinfo>,
    dentry: Option<DentryState>,
}

impl Readings {
    fn read(procfs: &Procfs) -> Readings {
        Readings { slabinfo: procfs.slabinfo(), dentry: procfs.dentry_state() }
    }
}

/// One period to emit: its deltas (or totals) and the readings at both ends.
struct Period<'a> {
    scope: Scope,
    seconds: f64,
    caches: &'a HashMap<u64, Counts>,
    callers: &'a HashMap<CallerKey, Counts>,
    dirs: &'a HashMap<DirKey, Counts>,
    then: &'a Readings,
    now: &'a Readings,
    /// Dentry allocations with and without a directory.
    dentry_counts: (u64, u64),
}

struct Maps {
    info: BpfHashMap<MapData, u64, CacheInfo>,
    counts: PerCpuHashMap<MapData, u64, CacheCounters>,
    cache_slots: PerCpuArray<MapData, CacheSlot>,
    caller_slots: PerCpuArray<MapData, CallerSlot>,
    callers: PerCpuHashMap<MapData, CallerKey, CallerCounts>,
    live: BpfHashMap<MapData, u64, CallerKey>,
    dirs: PerCpuHashMap<MapData, DirKey, u64>,
    stats: PerCpuArray<MapData, u64>,
}

pub struct SlabAgent {
    filter: Filter,
    opts: Options,
    maps: Maps,
    names: Names,
    syms: Kallsyms,
    procfs: Procfs,
    aliases: BTreeMap<String, Vec<String>>,
    meta: HashMap<u64, CacheMeta>,
    caches: Cumulative<u64>,
    callers: Cumulative<CallerKey>,
    dirs: Cumulative<DirKey>,
    /// Readings at the start and at the end of the last interval.
    start: Readings,
    prev: Readings,
    /// Dentry allocations with and without a directory, at the end of the last interval.
    dentry_counts_prev: (u64, u64),
    started: Instant,
    last: Instant,
    callers_max: u32,
    pruned: u64,
}

impl SlabAgent {
    pub fn new(ebpf: &mut Ebpf, filter: Filter, opts: Options) -> Result<SlabAgent, Error> {
        let maps = Maps {
            info: take(ebpf, SLAB_CACHE_INFO)?,
            counts: take(ebpf, SLAB_CACHE_COUNTS)?,
            cache_slots: take(ebpf, SLAB_CACHE_SLOTS)?,
            caller_slots: take(ebpf, SLAB_CALLER_SLOTS)?,
            callers: take(ebpf, SLAB_CALLERS)?,
            live: take(ebpf, SLAB_LIVE)?,
            dirs: take(ebpf, SLAB_DIRS)?,
            stats: take(ebpf, SLAB_STATS)?,
        };
        let procfs = Procfs::system();
        for (asked, c) in &opts.resolved {
            log::warn!("--cache {asked}: merged into cache {c}; tracing {c}");
        }
        let start = Readings::read(&procfs);
        let now = Instant::now();
        Ok(SlabAgent {
            filter,
            opts,
            maps,
            names: Names::new(ebpf, procfs.clone())?,
            syms: Kallsyms::load(),
            aliases: procfs.slab_aliases(),
            procfs,
            meta: HashMap::new(),
            caches: Cumulative::new(4096),
            callers: Cumulative::new(65_536),
            dirs: Cumulative::new(4096),
            prev: start.clone(),
            start,
            dentry_counts_prev: (0, 0),
            started: now,
            last: now,
            callers_max: callers_max(),
            pruned: 0,
        })
    }

    fn stat(&self, slot: u32) -> u64 {
        self.maps.stats.get(&slot, 0).map(|v| v.iter().copied().sum()).unwrap_or(0)
    }

    /// Dentry allocations joined with a directory, and those without one, since the start.
    fn dentry_counts(&self) -> (u64, u64) {
        let unjoined =
            self.stat(S_DIR_NO_PATH) + self.stat(S_DIR_READ_FAILED) + self.stat(S_DIRS_FULL);
        (self.stat(S_DIR_JOINED), unjoined)
    }

    /// New cache keys: names and sizes.
    fn read_meta(&mut self) {
        for item in self.maps.info.iter() {
            let Ok((key, info)) = item else { continue };
            if self.meta.contains_key(&key) {
                continue;
            }
            let name = if info.flags & CACHE_SIZE_ONLY != 0 {
                format!("size-{}", info.size)
            } else if info.flags & CACHE_NAME_FAILED != 0 {
                format!("?{key:#x}")
            } else {
                cstr(&info.name)
            };
            self.meta.insert(key, CacheMeta { name, size: info.size });
        }
    }

    fn read_counts(&mut self) {
        let mut cur: HashMap<u64, Counts> = HashMap::new();
        for item in self.maps.counts.iter() {
            let Ok((key, vals)) = item else { continue };
            let c = cur.entry(key).or_default();
            for v in vals.iter() {
                c.add(Counts { allocs: v.allocs, frees: v.frees });
            }
        }
        for i in 0..CACHE_SLOTS {
            let Ok(vals) = self.maps.cache_slots.get(&i, 0) else {
                continue;
            };
            for v in vals.iter().filter(|v| v.key != 0) {
                cur.entry(v.key).or_default().add(Counts { allocs: v.allocs, frees: v.frees });
            }
        }
        self.caches.update(cur);
    }

    fn read_callers(&mut self) {
        // The hash map first, then the per-CPU slots: a row written back in between is
        // missed by this reading, not counted twice.
        let mut cur: HashMap<CallerKey, Counts> = HashMap::new();
        for item in self.maps.callers.iter() {
            let Ok((key, vals)) = item else { continue };
            let c = cur.entry(key).or_default();
            for v in vals.iter() {
                c.add(Counts { allocs: v.allocs, frees: v.frees });
            }
        }
        let mut in_slots = HashSet::new();
        for i in 0..CALLER_SLOTS {
            let Ok(vals) = self.maps.caller_slots.get(&i, 0) else {
                continue;
            };
            for v in vals.iter().filter(|v| v.allocs | v.frees != 0) {
                cur.entry(v.key).or_default().add(Counts { allocs: v.allocs, frees: v.frees });
                in_slots.insert(v.key);
            }
        }
        let delta = self.callers.update(cur);
        // Keep room in the kernel map: rows that did not change since the last reading
        // and have nothing pending in a slot go (their totals stay here, folded per cache
        // beyond the cap).
        let map = &mut self.maps.callers;
        self.pruned += self.callers.prune(
            &delta,
            self.callers_max,
            |k| in_slots.contains(k),
            |k| map.remove(k).is_ok(),
            |k| CallerKey { cache: k.cache, ..CallerKey::default() },
        );
    }

    fn read_dirs(&mut self) {
        let mut cur = HashMap::new();
        for item in self.maps.dirs.iter() {
            let Ok((key, vals)) = item else { continue };
            cur.insert(key, Counts { allocs: vals.iter().copied().sum(), frees: 0 });
        }
        self.dirs.update(cur);
    }

    fn cache_name(&self, key: u64) -> String {
        self.meta.get(&key).map_or_else(|| format!("?{key:#x}"), |m| m.name.clone())
    }

    /// Cache rows and caller rows of a period, with the -c filter applied.
    fn rows(
        &mut self,
        caches: &HashMap<u64, Counts>,
        callers: &HashMap<CallerKey, Counts>,
    ) -> (HashMap<String, Counts>, HashMap<RowId, Counts>) {
        let mut by_row: HashMap<RowId, Counts> = HashMap::new();
        for (k, v) in callers {
            let id = RowId {
                cache: self.cache_name(k.cache),
                call_site: k.call_site,
                tgid: k.tgid,
                memcg: k.memcg,
            };
            by_row.entry(id).or_default().add(*v);
        }
        if let Some(filter) = self.filter.cgroup.clone() {
            by_row.retain(|r, _| self.names.cgroup_under(r.memcg, &filter));
            // Per-cache counters know no cgroup: sum the cgroup's rows instead.
            let by_cache = group_by(&by_row, |r| r.cache.clone());
            return (by_cache, by_row);
        }
        let by_cache = group_by(caches, |k| self.cache_name(*k));
        (by_cache, by_row)
    }

    /// What one object takes: from the kernel's cache (or the allocation record), else
    /// slabinfo's objsize (classic kmem_cache_free records carry no size).
    fn object_size(&self, cache: &str, slabinfo: Option<&Slabinfo>) -> u32 {
        let traced = self.meta.values().filter(|m| m.name == cache).map(|m| m.size).max();
        match traced {
            Some(s) if s > 0 => s,
            _ => slabinfo.and_then(|i| i.get(cache)).map_or(0, |r| r.objsize as u32),
        }
    }

    /// Emits one period: every cache that changed, largest net growth first, each with its
    /// top callers (and the dentry context after dentry's), then the closing record.
    fn emit(&mut self, p: &Period, out: &mut Out) {
        // Names are looked up again each period: processes rename themselves, ids are reused.
        self.names.forget();
        self.read_meta();
        let time = format::now();
        let scope = p.scope;
        let (by_cache, by_row) = self.rows(p.caches, p.callers);
        let ranked = ranked_by_net(&by_cache);
        let mut rows_of: HashMap<String, HashMap<RowId, Counts>> = HashMap::new();
        for (r, v) in by_row {
            rows_of.entry(r.cache.clone()).or_default().insert(r, v);
        }
        for (name, c) in &ranked {
            let size = self.object_size(name, p.now.slabinfo.as_ref());
            let (slabinfo_active, slabinfo_delta) =
                match (p.now.slabinfo.as_ref().and_then(|i| i.get(name)), &p.then.slabinfo) {
                    (Some(r), Some(then)) => (
                        Some(r.active_objs),
                        Some(
                            r.active_objs as i64
                                - then.get(name).map_or(0, |t| t.active_objs as i64),
                        ),
                    ),
                    _ => (None, None),
                };
            out.emit(&SlabRecord::Cache(CacheRecord {
                scope,
                time: time.clone(),
                seconds: p.seconds,
                cache: name.clone(),
                object_size: size,
                allocs: c.allocs,
                frees: c.frees,
                net: c.net(),
                net_bytes: c.net() * i64::from(size),
                aliases: self.aliases.get(name).cloned().unwrap_or_default(),
                slabinfo_active,
                slabinfo_delta,
            }));
            // The cache's callers, in the direction the cache moved.
            let mine = rows_of.remove(name).unwrap_or_default();
            // A shrinking cache with --live: whose objects were released.
            let rows = if c.net() < 0 && self.opts.live {
                top_by_frees(&mine, self.opts.top)
            } else {
                top_by_net(&mine, self.opts.top)
            };
            for (r, v) in rows {
                out.emit(&SlabRecord::Growth(GrowthRecord {
                    scope,
                    time: time.clone(),
                    cache: name.clone(),
                    call_site: self.syms.resolve(r.call_site),
                    live: self.opts.live,
                    tgid: r.tgid,
                    comm: self.names.comm(r.tgid),
                    cgroup: self.names.cgroup(r.memcg),
                    allocs: v.allocs,
                    frees: v.frees,
                    net: v.net(),
                    net_bytes: v.net() * i64::from(size),
                }));
            }
            if name == "dentry" {
                let d = self.dentry(p, &time);
                out.emit(&SlabRecord::Dentry(d));
            }
        }
        out.emit(&SlabRecord::Period(PeriodRecord {
            scope,
            time,
            seconds: p.seconds,
            caches: ranked.len(),
            top_caches: self.opts.top_caches,
        }));
    }

    fn dentry(&mut self, p: &Period, time: &str) -> DentryRecord {
        let mut by_dir: HashMap<DirId, Counts> = HashMap::new();
        for (k, v) in p.dirs {
            by_dir.entry(DirId { dir: self.names.dir(k), tgid: k.tgid }).or_default().add(*v);
        }
        let dirs = top_by_net(&by_dir, self.opts.top)
            .into_iter()
            .map(|(d, c)| DirRecord {
                comm: self.names.comm(d.tgid),
                dir: d.dir,
                tgid: d.tgid,
                allocs: c.allocs,
            })
            .collect();
        let (now, then) = (p.now.dentry, p.then.dentry);
        let both = now.zip(then);
        DentryRecord {
            scope: p.scope,
            time: time.to_string(),
            seconds: p.seconds,
            nr_dentry: now.map(|n| n.nr_dentry),
            nr_negative: now.map(|n| n.nr_negative),
            negative_growth: both.map(|(n, t)| n.nr_negative - t.nr_negative),
            positive_growth: both.map(|(n, t)| n.positive() - t.positive()),
            joined: p.dentry_counts.0,
            unjoined: p.dentry_counts.1,
            dirs,
        }
    }

    /// The period since the last interval: what the collections gathered.
    fn emit_interval(&mut self, out: &mut Out) {
        let now = Readings::read(&self.procfs);
        let then = std::mem::replace(&mut self.prev, now.clone());
        let seconds = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let counts = self.dentry_counts();
        let (prev_joined, prev_unjoined) = std::mem::replace(&mut self.dentry_counts_prev, counts);
        let caches = self.caches.take_period();
        let callers = self.callers.take_period();
        let dirs = self.dirs.take_period();
        let p = Period {
            scope: Scope::Interval,
            seconds,
            caches: &caches,
            callers: &callers,
            dirs: &dirs,
            then: &then,
            now: &now,
            dentry_counts: (counts.0 - prev_joined, counts.1 - prev_unjoined),
        };
        self.emit(&p, out);
    }

    fn summary(&mut self) -> SummaryRecord {
        let mut live = LiveSummary { enabled: self.opts.live, ..Default::default() };
        if self.opts.live {
            live.max = self.opts.live_max;
            live.inserts = self.stat(S_LIVE_INSERTS);
            live.hits = self.stat(S_LIVE_HITS);
            live.misses = self.stat(S_LIVE_MISSES);
            live.replaced = self.stat(S_LIVE_REPLACED);
            live.failed = self.stat(S_LIVE_FAILED);
            live.entries = self.maps.live.keys().filter(Result::is_ok).count() as u64;
            live.evicted = live.inserts.saturating_sub(live.hits + live.entries);
        }
        let mut notes = Vec::new();
        if !self.syms.usable() {
            notes.push("/proc/kallsyms shows no addresses: call sites are raw".to_string());
        }
        if self.filter.cgroup.is_some() {
            notes.push("with -c, cache rows are the sums of that cgroup's caller rows".into());
        }
        if self.meta.values().any(|m| m.name.starts_with("size-")) {
            notes.push("size-N rows: this kernel's classic kmem_cache_alloc names no cache".into());
        }
        notes.push(
            "kmalloc() and bulk allocations use other tracepoints and are not counted here".into(),
        );
        if !self.opts.live {
            notes.push(
                "frees count per cache; --cache NAME --live attributes them to the allocating caller"
                    .into(),
            );
        }
        SummaryRecord {
            caches_seen: self.meta.len(),
            caller_rows: self.callers.len(),
            caller_rows_max: self.callers_max,
            caller_rows_full: self.stat(S_CALLERS_FULL),
            caller_rows_pruned: self.pruned,
            caches_full: self.stat(S_CACHES_FULL),
            cache_name_failed: self.stat(S_CACHE_NAME_FAILED),
            cgroup_read_failed: self.stat(S_CGROUP_READ_FAILED),
            live,
            paths_recorded: self.stat(S_PATHS_RECORDED),
            dirs_joined: self.stat(S_DIR_JOINED),
            dirs_no_path: self.stat(S_DIR_NO_PATH),
            dirs_read_failed: self.stat(S_DIR_READ_FAILED),
            dirs_full: self.stat(S_DIRS_FULL),
            notes,
        }
    }
}

impl Agent for SlabAgent {
    /// Nothing is streamed per allocation.
    fn record(&mut self, _kind: u32, _bytes: &[u8], _out: &mut Out) -> bool {
        false
    }

    fn collect(&mut self) {
        self.read_counts();
        self.read_callers();
        self.read_dirs();
    }

    fn interval(&mut self, out: &mut Out) {
        self.emit_interval(out);
    }

    fn finish(&mut self, out: &mut Out, _end: End) {
        // The last partial interval (when it has anything, or lasted long enough to be
        // worth a line, or nothing was ever seen), then the totals.
        let pending = !(self.caches.period_is_empty()
            && self.callers.period_is_empty()
            && self.dirs.period_is_empty());
        if pending || self.last.elapsed() > Duration::from_millis(200) || self.caches.len() == 0 {
            self.emit_interval(out);
        }
        let now = Readings::read(&self.procfs);
        let start = self.start.clone();
        let (caches, callers, dirs) =
            (self.caches.totals(), self.callers.totals(), self.dirs.totals());
        let p = Period {
            scope: Scope::Total,
            seconds: self.started.elapsed().as_secs_f64(),
            caches: &caches,
            callers: &callers,
            dirs: &dirs,
            then: &start,
            now: &now,
            dentry_counts: self.dentry_counts(),
        };
        self.emit(&p, out);
        let s = self.summary();
        out.emit(&SlabRecord::Summary(s));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn name_keys_match_between_kernel_and_agent() {
        use memtrace_common::slab::{CACHE_NAME_LEN, name_hash};
        // The classic tracepoint hashes the NUL-padded record name.
        let mut padded = [0u8; CACHE_NAME_LEN];
        padded[..6].copy_from_slice(b"dentry");
        assert_eq!(name_hash(b"dentry\0garbage"), name_hash(&padded));
        assert_ne!(name_hash(b"dentry"), name_hash(b"filp"));
        // Name keys never look like kernel pointers (top bits 11) or size keys (01).
        assert_eq!(name_hash(b"x") >> 62, 2);
        assert_eq!(name_hash(b"") >> 62, 2);
    }
}
