//! Slab family: who grows which kmem cache. The kernel counts allocations and frees per
//! cache and per cache x call site x process x memory cgroup (memtrace-ebpf/src/slab.rs);
//! every interval the agent reads those maps, turns cumulative counters into deltas,
//! symbolizes call sites, reconciles with /proc/slabinfo and /proc/sys/fs/dentry-state,
//! and prints the top caches by net growth with their top callers.

mod kallsyms;
mod model;
mod procfs;
mod syscalls;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::OnceLock,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use clap::Args;
use memtrace_common::{
    CgroupPath, Family, TASK_COMM_LEN,
    layout::ABSENT,
    slab::{
        AT_FDCWD, CACHE_NAME_FAILED, CACHE_NAME_LEN, CACHE_SIZE_ONLY, CACHE_SLOTS, CALLER_SLOTS,
        CacheCounters, CacheInfo, CacheSlot, CallerCounts, CallerKey, CallerSlot, DIRS_OFF,
        DIRS_REGS, DIRS_SYSCALLS, DirKey, MAX_FILTER, NSYS, S_CACHE_NAME_FAILED, S_CACHES_FULL,
        S_CALLERS_FULL, S_CGROUP_READ_FAILED, S_DIR_JOINED, S_DIR_NO_PATH, S_DIR_READ_FAILED,
        S_DIRS_FULL, S_LIVE_FAILED, S_LIVE_HITS, S_LIVE_INSERTS, S_LIVE_MISSES, S_LIVE_REPLACED,
        S_PATHS_RECORDED, SYS_NAMES, SlabConfig,
    },
};
use serde::Serialize;

use self::{
    kallsyms::Kallsyms,
    model::{Counts, Cumulative, group_by, top_by_frees, top_by_net},
};
use crate::{
    cgroup,
    cli::{TraceArgs, TraceConfig},
    error::Error,
    family::{FamilyAgent, Global},
    hooks::Strategy,
    output::{self, cstr},
    system::Kernel,
};

/// `memtrace slab` options beyond the common ones.
#[derive(Debug, Args)]
pub struct SlabArgs {
    #[command(flatten)]
    pub trace: TraceArgs,

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

    /// Print the growth of every interval of SECS seconds.
    #[arg(short, long, value_name = "SECS", default_value = "5", value_parser = parse_interval)]
    pub interval: Duration,

    /// Stop after N intervals.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

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
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.1..=86_400.0).contains(&secs) {
        return Err(format!("`{s}`: the interval must be between 0.1 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
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
    pub interval: Duration,
    pub count: Option<u64>,
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
            interval: Duration::from_secs(5),
            count: None,
            top: 5,
            top_caches: 10,
            dirs: true,
        }
    }
}

const SYS_SLAB: &str = "/sys/kernel/slab";

impl SlabArgs {
    pub fn validate(&self) -> Result<(TraceConfig, Options), Error> {
        let cfg = self.trace.validate()?;
        if self.caches.len() > MAX_FILTER {
            return Err(Error::Usage(format!(
                "--cache: at most {MAX_FILTER} caches can be filtered in the kernel ({} given)",
                self.caches.len()
            )));
        }
        let info = procfs::slabinfo();
        let aliases = procfs::aliases(Path::new(SYS_SLAB));
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
            let c = procfs::canonical(name, info.as_ref(), &aliases, Path::new(SYS_SLAB))
                .map_err(Error::Usage)?;
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
        let opts = Options {
            dirs: !self.no_dirs && (caches.is_empty() || caches.iter().any(|c| c == "dentry")),
            caches,
            resolved,
            live: self.live,
            live_max: self.live_max,
            interval: self.interval,
            count: self.count,
            top: self.top as usize,
            top_caches: self.top_caches as usize,
        };
        Ok((cfg, opts))
    }
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

/// Makes the slab options visible to hook selection and BPF globals (`memtrace slab`;
/// other subcommands trace slab with the defaults).
pub fn configure(o: Options) {
    let _ = OPTIONS.set(o);
}

fn options() -> Options {
    OPTIONS.get().cloned().unwrap_or_default()
}

/// Tests pin a strategy to exercise the fallbacks: MEMTRACE_SLAB_STRATEGY=raw_tp|tracepoint,
/// or tracepoint-noname (the classic kmem_cache_alloc as if its record had no name, as on
/// 6.1/6.12).
pub fn strategy_allowed(s: Strategy) -> Result<(), String> {
    match std::env::var("MEMTRACE_SLAB_STRATEGY") {
        Ok(want) if want.split('-').next() != Some(s.name()) => {
            Err(format!("skipped: MEMTRACE_SLAB_STRATEGY={want}"))
        }
        _ => Ok(()),
    }
}

fn forced_noname() -> bool {
    std::env::var("MEMTRACE_SLAB_STRATEGY").is_ok_and(|v| v == "tracepoint-noname")
}

/// Whether dentry directories come from `syscalls:sys_enter_*` hooks: only on
/// architectures whose syscall table memtrace lacks (elsewhere the path is read from the
/// syscall's registers at the dentry allocation, which costs the syscalls nothing), or when
/// a test forces it with MEMTRACE_SLAB_DIRS=syscalls.
pub fn dirs_via_syscall_hooks() -> bool {
    options().dirs
        && (syscalls::path_syscalls().is_empty()
            || std::env::var("MEMTRACE_SLAB_DIRS").is_ok_and(|v| v == "syscalls"))
}

/// How this kernel gives dentry allocations their directory.
fn dirs_mode(kernel: &Kernel, o: &Options) -> u32 {
    let l = &kernel.layout.layout;
    if !o.dirs {
        DIRS_OFF
    } else if dirs_via_syscall_hooks() {
        DIRS_SYSCALLS
    } else if kernel.btf.enum_value("BPF_FUNC_task_pt_regs").is_some()
        && l.pt_regs_syscall_nr != ABSENT
        && l.pt_regs_args.iter().all(|&a| a != ABSENT)
    {
        DIRS_REGS
    } else {
        log::warn!("dentry directories unavailable: no bpf_task_pt_regs or pt_regs layout");
        DIRS_OFF
    }
}

/// The classic kmem_cache_alloc record carries the cache name (6.18; not 6.1/6.12).
pub fn classic_alloc_has_name(k: &Kernel) -> Result<(), String> {
    match crate::tracefs::format(&k.tracefs, "kmem", "kmem_cache_alloc") {
        Some(_) if forced_noname() => {
            Err("skipped: MEMTRACE_SLAB_STRATEGY=tracepoint-noname".into())
        }
        Some(f) if f.field("name").is_some() => Ok(()),
        Some(_) => Err("kmem:kmem_cache_alloc has no name field on this kernel".into()),
        None => Err("no tracepoint kmem:kmem_cache_alloc in tracefs".into()),
    }
}

/// The `SLAB_CONFIG` global: filter, options and classic tracepoint offsets.
pub fn config(kernel: &Kernel, cfg: &TraceConfig, o: &Options) -> SlabConfig {
    let mut c = SlabConfig::DEFAULT;
    c.nfilter = o.caches.len() as u32;
    for (i, name) in o.caches.iter().take(MAX_FILTER).enumerate() {
        let b = name.as_bytes();
        let n = b.len().min(CACHE_NAME_LEN - 1);
        c.names[i][..n].copy_from_slice(&b[..n]);
    }
    c.live = o.live as u32;
    c.dirs = dirs_mode(kernel, o);
    c.sys_table = syscalls::table();
    c.tgid = cfg.pid.unwrap_or(0);
    let off = |f: &crate::tracefs::Format, name: &str| f.field(name).map_or(ABSENT, |f| f.offset);
    if let Some(f) = crate::tracefs::format(&kernel.tracefs, "kmem", "kmem_cache_alloc") {
        c.tp_alloc_call_site = off(&f, "call_site");
        c.tp_alloc_ptr = off(&f, "ptr");
        c.tp_alloc_name = if forced_noname() { ABSENT } else { off(&f, "name") };
        c.tp_alloc_bytes_alloc = off(&f, "bytes_alloc");
    }
    if let Some(f) = crate::tracefs::format(&kernel.tracefs, "kmem", "kmem_cache_free") {
        c.tp_free_call_site = off(&f, "call_site");
        c.tp_free_ptr = off(&f, "ptr");
        c.tp_free_name = off(&f, "name");
    }
    for (i, sys) in SYS_NAMES.iter().enumerate().take(NSYS) {
        if let Some(f) =
            crate::tracefs::format(&kernel.tracefs, "syscalls", &format!("sys_enter_{sys}"))
        {
            c.sys_filename[i] = off(&f, "filename");
            c.sys_dfd[i] = off(&f, "dfd");
        }
    }
    c
}

pub fn globals(kernel: &Kernel, cfg: &TraceConfig) -> Vec<Global> {
    vec![Global::of("SLAB_CONFIG", &config(kernel, cfg, &options()))]
}

/// Caller rows the kernel keeps: bounded by memory, since every CPU has its own counters.
/// Tests lower it with MEMTRACE_SLAB_CALLERS_MAX to exercise the bound.
fn callers_max() -> u32 {
    let cpus = aya::util::nr_cpus().unwrap_or(64).max(1) as u64;
    let per_entry = 16 * cpus + 96;
    let by_memory = ((32u64 << 20) / per_entry).clamp(1024, 32_768);
    std::env::var("MEMTRACE_SLAB_CALLERS_MAX")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(by_memory, |v| v.clamp(1024, by_memory)) as u32
}

/// Map sizes chosen at load time.
pub fn map_sizes() -> Vec<(&'static str, u32)> {
    let o = options();
    vec![("SLAB_LIVE", if o.live { o.live_max } else { 1024 }), ("SLAB_CALLERS", callers_max())]
}

// ------------------------------------------------------------------------------ agent

/// What the kernel told us about a cache key.
#[derive(Clone, Debug)]
struct CacheMeta {
    name: String,
    /// `kmem_cache.size`: what one object takes in its slab (slabinfo's objsize).
    size: u32,
}

/// A caller row as shown: keys of the same cache name merged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RowId {
    cache: String,
    call_site: u64,
    tgid: u32,
    memcg: u64,
}

/// A directory row as shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DirId {
    dir: String,
    tgid: u32,
}

#[derive(Serialize)]
struct SlabCacheLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    scope: &'static str,
    time: &'a str,
    seconds: f64,
    cache: &'a str,
    object_size: u32,
    allocs: u64,
    frees: u64,
    net: i64,
    net_bytes: i64,
    /// Other names merged into this cache (/sys/kernel/slab symlinks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aliases: Vec<String>,
    /// /proc/slabinfo active objects now, and their change over the same period.
    #[serde(skip_serializing_if = "Option::is_none")]
    slabinfo_active: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slabinfo_delta: Option<i64>,
}

#[derive(Serialize)]
struct SlabGrowthLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    scope: &'static str,
    time: &'a str,
    cache: &'a str,
    call_site: String,
    /// True with --live: `frees` are this caller's objects freed since the start (by
    /// anyone). False: frees are not attributed to callers (0), only to caches.
    live: bool,
    tgid: u32,
    comm: String,
    cgroup: Option<String>,
    allocs: u64,
    frees: u64,
    net: i64,
    net_bytes: i64,
}

#[derive(Serialize)]
struct DirLine {
    dir: String,
    tgid: u32,
    comm: String,
    allocs: u64,
}

#[derive(Serialize)]
struct SlabDentryLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    scope: &'static str,
    time: &'a str,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_dentry: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nr_negative: Option<i64>,
    /// Change of nr_negative and of nr_dentry - nr_negative over the period.
    #[serde(skip_serializing_if = "Option::is_none")]
    negative_growth: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    positive_growth: Option<i64>,
    /// Dentry allocations joined with a path syscall, and those without one.
    joined: u64,
    unjoined: u64,
    dirs: Vec<DirLine>,
}

#[derive(Serialize, Default)]
struct LiveSummary {
    enabled: bool,
    max: u32,
    inserts: u64,
    hits: u64,
    misses: u64,
    replaced: u64,
    failed: u64,
    entries: u64,
    /// inserts - hits - entries: objects forgotten because the map was full.
    evicted: u64,
}

#[derive(Serialize)]
struct SlabSummaryLine {
    #[serde(rename = "type")]
    kind: &'static str,
    caches_seen: usize,
    caller_rows: usize,
    caller_rows_max: u32,
    caller_rows_full: u64,
    caller_rows_pruned: u64,
    caches_full: u64,
    cache_name_failed: u64,
    cgroup_read_failed: u64,
    live: LiveSummary,
    paths_recorded: u64,
    dirs_joined: u64,
    dirs_no_path: u64,
    dirs_read_failed: u64,
    dirs_full: u64,
    notes: Vec<String>,
}

type Slabinfo = HashMap<String, procfs::SlabinfoRow>;

/// One period to print: its deltas (or totals) and the procfs readings at both ends.
#[derive(Clone, Copy)]
struct Period<'a> {
    scope: &'static str,
    seconds: f64,
    caches: &'a HashMap<u64, Counts>,
    callers: &'a HashMap<CallerKey, Counts>,
    dirs: &'a HashMap<DirKey, Counts>,
    /// /proc/slabinfo (now, then).
    slabinfo: Option<(&'a Slabinfo, &'a Slabinfo)>,
    /// dentry-state (now, then).
    dentry: Option<(procfs::DentryState, procfs::DentryState)>,
    /// Dentry allocations with and without a directory.
    dentry_counts: (u64, u64),
}

struct Maps {
    info: BpfHashMap<MapData, u64, CacheInfo>,
    counts: PerCpuHashMap<MapData, u64, CacheCounters>,
    cache_slots: PerCpuArray<MapData, CacheSlot>,
    caller_slots: PerCpuArray<MapData, CallerSlot>,
    callers: PerCpuHashMap<MapData, CallerKey, CallerCounts>,
    comms: BpfHashMap<MapData, u32, [u8; TASK_COMM_LEN]>,
    cgroups: BpfHashMap<MapData, u64, CgroupPath>,
    live: BpfHashMap<MapData, u64, CallerKey>,
    dirs: PerCpuHashMap<MapData, DirKey, u64>,
    stats: PerCpuArray<MapData, u64>,
}

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T::Error: Into<anyhow::Error>,
{
    let m = ebpf.take_map(name).ok_or_else(|| {
        Error::bpf(format!("map {name}"), anyhow::anyhow!("not in the BPF object"))
    })?;
    T::try_from(m).map_err(|e| Error::bpf(format!("opening map {name}"), e))
}

pub struct Agent {
    cfg: TraceConfig,
    opts: Options,
    maps: Maps,
    syms: Kallsyms,
    meta: HashMap<u64, CacheMeta>,
    caches: Cumulative<u64>,
    callers: Cumulative<CallerKey>,
    dirs: Cumulative<DirKey>,
    comms: HashMap<u32, String>,
    cgroups: HashMap<u64, Option<String>>,
    cwds: HashMap<u32, Option<String>>,
    aliases: BTreeMap<String, Vec<String>>,
    slabinfo_start: Option<Slabinfo>,
    slabinfo_prev: Option<Slabinfo>,
    dentry_start: Option<procfs::DentryState>,
    dentry_prev: Option<procfs::DentryState>,
    stats_prev: [u64; 16],
    started: Instant,
    last: Instant,
    callers_max: u32,
    pruned: u64,
}

impl Agent {
    pub fn new(ebpf: &mut Ebpf, cfg: TraceConfig, opts: Options) -> Result<Agent, Error> {
        let maps = Maps {
            info: take(ebpf, "SLAB_CACHE_INFO")?,
            counts: take(ebpf, "SLAB_CACHE_COUNTS")?,
            cache_slots: take(ebpf, "SLAB_CACHE_SLOTS")?,
            caller_slots: take(ebpf, "SLAB_CALLER_SLOTS")?,
            callers: take(ebpf, "SLAB_CALLERS")?,
            comms: take(ebpf, "SLAB_COMMS")?,
            cgroups: take(ebpf, "SLAB_CGROUPS")?,
            live: take(ebpf, "SLAB_LIVE")?,
            dirs: take(ebpf, "SLAB_DIRS")?,
            stats: take(ebpf, "SLAB_STATS")?,
        };
        let slabinfo = procfs::slabinfo();
        let dentry = procfs::dentry_state();
        for (asked, c) in &opts.resolved {
            log::warn!("--cache {asked}: merged into cache {c}; tracing {c}");
        }
        let now = Instant::now();
        Ok(Agent {
            cfg,
            opts,
            maps,
            syms: Kallsyms::load(),
            meta: HashMap::new(),
            caches: Cumulative::new(4096),
            callers: Cumulative::new(65_536),
            dirs: Cumulative::new(4096),
            comms: HashMap::new(),
            cgroups: HashMap::new(),
            cwds: HashMap::new(),
            aliases: procfs::aliases(Path::new(SYS_SLAB)),
            slabinfo_start: slabinfo.clone(),
            slabinfo_prev: slabinfo,
            dentry_start: dentry,
            dentry_prev: dentry,
            stats_prev: [0; 16],
            started: now,
            last: now,
            callers_max: callers_max(),
            pruned: 0,
        })
    }

    fn stat(&self, slot: u32) -> u64 {
        self.maps.stats.get(&slot, 0).map(|v| v.iter().copied().sum()).unwrap_or(0)
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

    fn read_counts(&mut self) -> HashMap<u64, Counts> {
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
        self.caches.update(cur)
    }

    fn read_callers(&mut self) -> HashMap<CallerKey, Counts> {
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
        let mut in_slots = std::collections::HashSet::new();
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
        // Keep room in the kernel map: past 80% full, drop the rows that did not change
        // this interval and have nothing pending in a slot (their totals stay here).
        if self.callers.len() as u64 * 5 > self.callers_max as u64 * 4 {
            let idle: Vec<CallerKey> =
                self.callers.idle(&delta).filter(|k| !in_slots.contains(*k)).copied().collect();
            for k in idle {
                if self.maps.callers.remove(&k).is_ok() {
                    self.pruned += 1;
                    self.callers.fold(&k, |k| CallerKey {
                        cache: k.cache,
                        call_site: 0,
                        memcg: 0,
                        tgid: 0,
                        _pad: 0,
                    });
                }
            }
        }
        delta
    }

    fn read_dirs(&mut self) -> HashMap<DirKey, Counts> {
        let mut cur = HashMap::new();
        for item in self.maps.dirs.iter() {
            let Ok((key, vals)) = item else { continue };
            cur.insert(key, Counts { allocs: vals.iter().copied().sum(), frees: 0 });
        }
        self.dirs.update(cur)
    }

    fn cache_name(&self, key: u64) -> String {
        self.meta.get(&key).map_or_else(|| format!("?{key:#x}"), |m| m.name.clone())
    }

    fn comm(&mut self, tgid: u32) -> String {
        if let Some(c) = self.comms.get(&tgid) {
            return c.clone();
        }
        let c = self
            .maps
            .comms
            .get(&tgid, 0)
            .ok()
            .map(|c| cstr(&c))
            .or_else(|| {
                std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok().map(|s| s.trim().into())
            })
            .unwrap_or_else(|| "?".into());
        if self.comms.len() < 65_536 {
            self.comms.insert(tgid, c.clone());
        }
        c
    }

    fn cgroup(&mut self, memcg: u64) -> Option<String> {
        if memcg == 0 {
            return None;
        }
        if let Some(c) = self.cgroups.get(&memcg) {
            return c.clone();
        }
        let c = self.maps.cgroups.get(&memcg, 0).ok().and_then(|p| cgroup::render(&p));
        if c.is_some() && self.cgroups.len() < 65_536 {
            self.cgroups.insert(memcg, c.clone());
        }
        c
    }

    /// A directory of a dentry row: absolute as recorded, or resolved against the process's
    /// current directory (read when first shown). Paths relative to another dirfd stay
    /// "(fd N of PID)": the fd may have been reused since.
    fn dir_name(&mut self, k: &DirKey) -> String {
        let raw = cstr(&k.dir);
        if raw.starts_with('/') {
            return raw;
        }
        let base = if k.dfd == AT_FDCWD {
            if self.cwds.len() > 4096 {
                self.cwds.clear();
            }
            self.cwds
                .entry(k.tgid)
                .or_insert_with(|| {
                    std::fs::read_link(format!("/proc/{}/cwd", k.tgid))
                        .ok()
                        .map(|p| p.to_string_lossy().into_owned())
                })
                .clone()
                .unwrap_or_else(|| format!("(cwd of {})", k.tgid))
        } else {
            format!("(fd {} of {})", k.dfd, k.tgid)
        };
        join_dir(&base, &raw)
    }

    fn row_id(&self, k: &CallerKey) -> RowId {
        RowId {
            cache: self.cache_name(k.cache),
            call_site: k.call_site,
            tgid: k.tgid,
            memcg: k.memcg,
        }
    }

    /// Cache rows and caller rows of a period, with the -c filter applied.
    fn rows(
        &mut self,
        caches: &HashMap<u64, Counts>,
        callers: &HashMap<CallerKey, Counts>,
    ) -> (HashMap<String, Counts>, HashMap<RowId, Counts>) {
        let mut by_row: HashMap<RowId, Counts> = HashMap::new();
        for (k, v) in callers {
            let id = self.row_id(k);
            by_row.entry(id).or_default().add(*v);
        }
        if let Some(filter) = self.cfg.cgroup.clone() {
            let keep: Vec<RowId> = by_row
                .keys()
                .filter(|r| self.cgroup_under(r.memcg, &filter))
                .cloned()
                .collect::<Vec<_>>();
            by_row.retain(|r, _| keep.contains(r));
            // Per-cache counters know no cgroup: sum the cgroup's rows instead.
            let by_cache = group_by(&by_row, |r| r.cache.clone());
            return (by_cache, by_row);
        }
        let by_cache = group_by(caches, |k| self.cache_name(*k));
        (by_cache, by_row)
    }

    fn cgroup_under(&mut self, memcg: u64, filter: &str) -> bool {
        self.cgroup(memcg).is_some_and(|c| cgroup::under(&c, filter))
    }

    /// What one object takes: from the kernel's cache (or the allocation record), else
    /// slabinfo's objsize (classic kmem_cache_free records carry no size).
    fn object_size(&self, cache: &str) -> u32 {
        let traced = self.meta.values().filter(|m| m.name == cache).map(|m| m.size).max();
        match traced {
            Some(s) if s > 0 => s,
            _ => self
                .slabinfo_prev
                .as_ref()
                .and_then(|i| i.get(cache))
                .map_or(0, |r| r.objsize as u32),
        }
    }

    /// Emits one period: "interval" (since the last tick) or "total" (since the start).
    fn emit(&mut self, p: &Period) {
        let Period { scope, seconds, caches, callers, slabinfo, .. } = *p;
        let time = output::rfc3339(wall_now());
        let (by_cache, by_row) = self.rows(caches, callers);
        let mut cache_list: Vec<(String, Counts)> =
            by_cache.into_iter().filter(|(_, c)| !c.is_zero()).collect();
        cache_list.sort_by(|a, b| {
            b.1.net().cmp(&a.1.net()).then(b.1.allocs.cmp(&a.1.allocs)).then(a.0.cmp(&b.0))
        });
        let shown = if self.cfg.json { cache_list.len() } else { self.opts.top_caches };
        let mut text = String::new();
        if !self.cfg.json {
            text += &format!(
                "{time}  slab {scope} ({seconds:.1} s)\n{:<26} {:>7} {:>10} {:>10} {:>10} {:>11} {:>11}  {}\n",
                "CACHE",
                "OBJSIZE",
                "ALLOCS",
                "FREES",
                "NET",
                "NET BYTES",
                "SLABINFO Δ",
                "WHO (top caller)"
            );
        }
        let top = self.opts.top;
        for (name, c) in cache_list.iter().take(shown) {
            let size = self.object_size(name);
            let net_bytes = c.net() * size as i64;
            let (active, sdelta) = match slabinfo {
                Some((now, then)) => match now.get(name) {
                    Some(r) => (
                        Some(r.active_objs),
                        Some(
                            r.active_objs as i64
                                - then.get(name).map_or(0, |t| t.active_objs as i64),
                        ),
                    ),
                    None => (None, None),
                },
                None => (None, None),
            };
            let aliases = self.aliases.get(name).cloned().unwrap_or_default();
            // The cache's callers, in the direction the cache moved.
            let mine: HashMap<RowId, Counts> = by_row
                .iter()
                .filter(|(r, _)| &r.cache == name)
                .map(|(r, v)| (r.clone(), *v))
                .collect();
            // A shrinking cache with --live: whose objects were released.
            let rows = if c.net() < 0 && self.opts.live {
                top_by_frees(&mine, top)
            } else {
                top_by_net(&mine, top)
            };
            if self.cfg.json {
                output::json_line(&SlabCacheLine {
                    kind: "slab_cache",
                    scope,
                    time: &time,
                    seconds,
                    cache: name,
                    object_size: size,
                    allocs: c.allocs,
                    frees: c.frees,
                    net: c.net(),
                    net_bytes,
                    aliases,
                    slabinfo_active: active,
                    slabinfo_delta: sdelta,
                });
                for (r, v) in &rows {
                    let line = SlabGrowthLine {
                        kind: "slab_growth",
                        scope,
                        time: &time,
                        cache: name,
                        call_site: self.syms.resolve(r.call_site),
                        live: self.opts.live,
                        tgid: r.tgid,
                        comm: self.comm(r.tgid),
                        cgroup: self.cgroup(r.memcg),
                        allocs: v.allocs,
                        frees: v.frees,
                        net: v.net(),
                        net_bytes: v.net() * size as i64,
                    };
                    output::json_line(&line);
                }
            } else {
                let who = match rows.first() {
                    Some((r, v)) if c.allocs > 0 => {
                        format!("{}[{}] {}%", self.comm(r.tgid), r.tgid, v.allocs * 100 / c.allocs)
                    }
                    _ => "-".into(),
                };
                text += &format!(
                    "{:<26} {:>7} {:>10} {:>10} {:>+10} {:>11} {:>11}  {who}\n",
                    trunc(name, 26),
                    size,
                    c.allocs,
                    c.frees,
                    c.net(),
                    signed_bytes(net_bytes),
                    sdelta.map_or_else(|| "-".into(), |d| format!("{d:+}")),
                );
                if !aliases.is_empty() {
                    text += &format!("    merged: {}\n", aliases.join(", "));
                }
                for (r, v) in &rows {
                    let comm = self.comm(r.tgid);
                    let cg = self.cgroup(r.memcg).unwrap_or_else(|| "?".into());
                    text += &format!(
                        "    {:>+10}  {}[{}]  {}  cgroup {}\n",
                        v.net(),
                        comm,
                        r.tgid,
                        self.syms.resolve(r.call_site),
                        cg
                    );
                }
            }
            if name == "dentry" {
                self.emit_dentry(p, &time, &mut text);
            }
        }
        if !self.cfg.json {
            if cache_list.is_empty() {
                text += "    (no slab activity)\n";
            }
            text.push('\n');
            output::text(&text);
        }
    }

    fn emit_dentry(&mut self, p: &Period, time: &str, text: &mut String) {
        let Period { scope, seconds, dirs, dentry, dentry_counts: (joined, unjoined), .. } = *p;
        let mut by_dir: HashMap<DirId, Counts> = HashMap::new();
        for (k, v) in dirs {
            let id = DirId { dir: self.dir_name(k), tgid: k.tgid };
            by_dir.entry(id).or_default().add(*v);
        }
        let top = top_by_net(&by_dir, self.opts.top);
        let dirs: Vec<DirLine> = top
            .into_iter()
            .map(|(d, c)| DirLine {
                comm: self.comm(d.tgid),
                dir: d.dir,
                tgid: d.tgid,
                allocs: c.allocs,
            })
            .collect();
        let (now, then) = match dentry {
            Some((n, t)) => (Some(n), Some(t)),
            None => (None, None),
        };
        let neg = now.zip(then).map(|(n, t)| n.nr_negative - t.nr_negative);
        let pos = now.zip(then).map(|(n, t)| n.positive() - t.positive());
        if self.cfg.json {
            output::json_line(&SlabDentryLine {
                kind: "slab_dentry",
                scope,
                time,
                seconds,
                nr_dentry: now.map(|n| n.nr_dentry),
                nr_negative: now.map(|n| n.nr_negative),
                negative_growth: neg,
                positive_growth: pos,
                joined,
                unjoined,
                dirs,
            });
            return;
        }
        if let (Some(n), Some(neg), Some(pos)) = (now, neg, pos) {
            *text += &format!(
                "    dentry-state: negative {neg:+}, positive {pos:+} (nr_dentry {}, nr_negative {})\n",
                n.nr_dentry, n.nr_negative
            );
        }
        for d in &dirs {
            *text += &format!("    dir {:>10}  {}  {}[{}]\n", d.allocs, d.dir, d.comm, d.tgid);
        }
        if joined + unjoined > 0 && self.opts.dirs {
            *text += &format!(
                "    dirs known for {joined} of {} dentry allocations\n",
                joined + unjoined
            );
        }
    }

    fn tick(&mut self) {
        // Names and cgroups are looked up again each period: processes rename themselves,
        // ids are reused.
        self.comms.clear();
        self.cgroups.clear();
        self.cwds.clear();
        self.read_meta();
        let caches = self.read_counts();
        let callers = self.read_callers();
        let dirs = self.read_dirs();
        let slabinfo = procfs::slabinfo();
        let dentry = procfs::dentry_state();
        let seconds = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let joined = self.stat(S_DIR_JOINED);
        let unjoined =
            self.stat(S_DIR_NO_PATH) + self.stat(S_DIR_READ_FAILED) + self.stat(S_DIRS_FULL);
        let counts = (
            joined - self.stats_prev[S_DIR_JOINED as usize],
            unjoined - self.stats_prev[S_DIR_NO_PATH as usize],
        );
        self.stats_prev[S_DIR_JOINED as usize] = joined;
        self.stats_prev[S_DIR_NO_PATH as usize] = unjoined;
        let prev_info = self.slabinfo_prev.clone();
        let si = slabinfo.as_ref().zip(prev_info.as_ref());
        let de = dentry.zip(self.dentry_prev);
        self.emit(&Period {
            scope: "interval",
            seconds,
            caches: &caches,
            callers: &callers,
            dirs: &dirs,
            slabinfo: si,
            dentry: de,
            dentry_counts: counts,
        });
        self.slabinfo_prev = slabinfo;
        self.dentry_prev = dentry;
    }
}

fn join_dir(base: &str, rel: &str) -> String {
    if rel.is_empty() { base.to_string() } else { format!("{}/{rel}", base.trim_end_matches('/')) }
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn signed_bytes(b: i64) -> String {
    let k = b / 1024;
    if b.abs() < 1024 {
        format!("{b:+} B")
    } else {
        format!("{}{}", if b < 0 { "" } else { "+" }, output::kib(k))
    }
}

fn wall_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl FamilyAgent for Agent {
    fn family(&self) -> Family {
        Family::Slab
    }

    /// Nothing is streamed per allocation.
    fn record(&mut self, _kind: u32, _bytes: &[u8]) -> bool {
        false
    }

    fn interval(&mut self) {
        self.tick();
    }

    fn finish(&mut self) {
        // The last partial interval, then the totals.
        if self.last.elapsed() > Duration::from_millis(200) || self.caches.len() == 0 {
            self.tick();
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let caches = self.caches.totals();
        let callers = self.callers.totals();
        let dirs = self.dirs.totals();
        let slabinfo = procfs::slabinfo();
        let start = self.slabinfo_start.clone();
        let si = slabinfo.as_ref().zip(start.as_ref());
        let de = procfs::dentry_state().zip(self.dentry_start);
        let joined = self.stat(S_DIR_JOINED);
        let unjoined =
            self.stat(S_DIR_NO_PATH) + self.stat(S_DIR_READ_FAILED) + self.stat(S_DIRS_FULL);
        self.emit(&Period {
            scope: "total",
            seconds,
            caches: &caches,
            callers: &callers,
            dirs: &dirs,
            slabinfo: si,
            dentry: de,
            dentry_counts: (joined, unjoined),
        });
        self.summary();
    }
}

impl Agent {
    fn summary(&mut self) {
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
        if self.cfg.cgroup.is_some() {
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
        let s = SlabSummaryLine {
            kind: "slab_summary",
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
        };
        if self.cfg.json {
            output::json_line(&s);
        } else {
            let mut t = format!(
                "slab: {} caches seen, {} caller rows (max {}, {} lost to a full map, {} pruned)\n",
                s.caches_seen,
                s.caller_rows,
                s.caller_rows_max,
                s.caller_rows_full,
                s.caller_rows_pruned
            );
            if s.live.enabled {
                t += &format!(
                    "live: {} objects remembered, {} frees matched, {} frees of unknown objects, {} evicted (max {})\n",
                    s.live.inserts, s.live.hits, s.live.misses, s.live.evicted, s.live.max
                );
            }
            for n in &s.notes {
                t += &format!("note: {n}\n");
            }
            eprint!("{t}");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("memtrace").chain(args.iter().copied()))
    }

    #[test]
    fn parses_slab_options() {
        let cli = parse(&[
            "slab",
            "--json",
            "--cache",
            "dentry,inode_cache",
            "--cache",
            "filp",
            "--live",
            "--live-max",
            "4096",
            "-i",
            "0.5",
            "--count",
            "3",
            "--top",
            "7",
            "--no-dirs",
        ])
        .unwrap();
        let Command::Slab(a) = cli.command else { panic!("not slab") };
        assert_eq!(a.caches, vec!["dentry", "inode_cache", "filp"]);
        assert!(a.live && a.no_dirs && a.trace.json);
        assert_eq!(a.live_max, 4096);
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!((a.count, a.top), (Some(3), 7));
    }

    #[test]
    fn rejects_bad_slab_options() {
        for bad in [
            &["slab", "--live"][..],
            &["slab", "--cache", "dentry", "--live", "--live-max", "10"],
            &["slab", "-i", "0"],
            &["slab", "-i", "soon"],
            &["slab", "--count", "0"],
            &["slab", "--top", "0"],
            &["slab", "--top-caches", "-1"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} accepted"));
            assert_ne!(err.exit_code(), 0, "{bad:?}");
        }
    }

    #[test]
    fn validation_rejects_unusable_cache_names() {
        let mk = |caches: &[&str]| SlabArgs {
            trace: TraceArgs { json: true, duration: None, pid: None, cgroup: None },
            caches: caches.iter().map(|s| s.to_string()).collect(),
            live: false,
            live_max: 1024,
            interval: Duration::from_secs(1),
            count: None,
            top: 5,
            top_caches: 10,
            no_dirs: false,
        };
        let long = "x".repeat(80);
        for bad in [&[""][..], &[long.as_str()], &["a", "b", "c", "d", "e", "f", "g", "h", "i"]] {
            let e = mk(bad).validate().expect_err("accepted");
            assert_eq!(e.exit_code(), 2);
        }
        // Dentry directories follow the cache filter.
        if procfs::slabinfo().is_none() {
            let (_, o) = mk(&["filp"]).validate().unwrap();
            assert!(!o.dirs);
            let (_, o) = mk(&["dentry"]).validate().unwrap();
            assert!(o.dirs);
        }
        let (_, o) = mk(&[]).validate().unwrap();
        assert!(o.dirs && o.caches.is_empty());
    }

    #[test]
    fn name_keys_match_between_kernel_and_agent() {
        use memtrace_common::slab::name_hash;
        // The classic tracepoint hashes the NUL-padded record name.
        let mut padded = [0u8; CACHE_NAME_LEN];
        padded[..6].copy_from_slice(b"dentry");
        assert_eq!(name_hash(b"dentry\0garbage"), name_hash(&padded));
        assert_ne!(name_hash(b"dentry"), name_hash(b"filp"));
        // Name keys never look like kernel pointers (top bits 11) or size keys (01).
        assert_eq!(name_hash(b"x") >> 62, 2);
        assert_eq!(name_hash(b"") >> 62, 2);
    }

    #[test]
    fn formats_signed_sizes() {
        assert_eq!(signed_bytes(512), "+512 B");
        assert_eq!(signed_bytes(-512), "-512 B");
        assert_eq!(signed_bytes(19_200_000), "+18.3 MiB");
        assert_eq!(signed_bytes(-2 * 1024 * 1024), "-2.0 MiB");
        assert_eq!(trunc("kmalloc-cg-8k", 26), "kmalloc-cg-8k");
        assert_eq!(trunc("abcdef", 4), "abc…");
        assert_eq!(join_dir("/home/u", ""), "/home/u");
        assert_eq!(join_dir("/", "src"), "/src");
        assert_eq!(join_dir("/home/u/", "a/b"), "/home/u/a/b");
    }
}
