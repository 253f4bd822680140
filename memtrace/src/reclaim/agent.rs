//! The reclaim agent: per-interval and whole-run HDR latency histograms per (kind,
//! process) and per (kind, cgroup) from the kernel's per-CPU log-linear buckets, slow
//! stalls streamed with context, and the system context that explains them.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap},
};
use memtrace_common::{
    reclaim::{
        Hist, HistKey, KIND_COMPACTION, KIND_DIRECT, KIND_MEMCG, KIND_NODE, KIND_THROTTLE,
        KIND_STALL, KswapdNode, MAX_NODES, ReclaimStallEvent, STALL_NO_ALLOC_INFO, kind_name,
    },
};
use serde::Serialize;

use super::{
    args::Options,
    context::{self as ctx, Kswapd, Snapshot, StallTotals},
    model::{Latency, Summed, log2_bars},
};
use crate::{
    engine::{
        family::{Agent, Filter, decode},
        format,
        loader::take_map,
        sink::{Out, Text},
    },
    error::Error,
    kernel::{self, cgroup, cstr, gfp::Gfp, procfs::Procfs},
};

/// Rows kept per table; further keys are folded into one "other" row (counted).
const MAX_ROWS: usize = 4096;
const OTHER_TGID: u32 = u32::MAX;
const OTHER_MEMCG: u64 = u64::MAX;
/// Time given to programs that read the old buffer index to finish before it is read.
const FLIP_GRACE: Duration = Duration::from_millis(2);

/// Throttle reason bits (enum vmscan_throttle_state).
const THROTTLE_REASONS: [&str; 4] = ["writeback", "isolated", "noprogress", "congested"];

#[derive(Default)]
struct ProcRow {
    lat: Latency,
    comm: String,
    /// Stall counts per memcg id: the row's cgroup is the most frequent.
    cgroups: HashMap<u64, u64>,
}

impl ProcRow {
    fn memcg(&self) -> u64 {
        self.cgroups.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))).map_or(0, |(id, _)| *id)
    }
}

#[derive(Default)]
struct Tables {
    procs: HashMap<(u32, u32), ProcRow>,
    cgroups: HashMap<(u32, u64), Latency>,
    /// Keys folded into the "other" rows because the tables were full.
    folded: u64,
}

impl Tables {
    fn add(&mut self, k: &HistKey, s: &Summed) {
        let full = self.procs.len() >= MAX_ROWS;
        let pk = if full && !self.procs.contains_key(&(k.kind, k.tgid)) {
            self.folded += 1;
            (k.kind, OTHER_TGID)
        } else {
            (k.kind, k.tgid)
        };
        let row = self.procs.entry(pk).or_default();
        row.lat.add(s);
        if row.comm.is_empty() {
            row.comm = if pk.1 == OTHER_TGID { "(other)".into() } else { cstr(&s.comm) };
        }
        *row.cgroups.entry(k.memcg_id).or_default() += s.count;
        let full = self.cgroups.len() >= MAX_ROWS;
        let ck = if full && !self.cgroups.contains_key(&(k.kind, k.memcg_id)) {
            self.folded += 1;
            (k.kind, OTHER_MEMCG)
        } else {
            (k.kind, k.memcg_id)
        };
        self.cgroups.entry(ck).or_default().add(s);
    }

    fn stalls(&self) -> (u64, u64) {
        self.cgroups.values().fold((0, 0), |(n, t), l| (n + l.count, t + l.total_ns))
    }

    fn kind_count(&self, kind: u32) -> u64 {
        self.cgroups.iter().filter(|((k, _), _)| *k == kind).map(|(_, l)| l.count).sum()
    }

    fn by_kind(&self) -> Vec<(u32, Latency)> {
        let mut v: Vec<(u32, Latency)> = Vec::new();
        for ((k, _), l) in &self.cgroups {
            match v.iter_mut().find(|(kk, _)| kk == k) {
                Some((_, acc)) => acc.merge(l),
                None => v.push((*k, l.clone())),
            }
        }
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

/// `{"type":"reclaim_summary",...}`: one row per (kind, process) or (kind, cgroup).
#[derive(Debug, Serialize)]
pub struct SummaryRow {
    #[serde(rename = "type")]
    pub kind_type: &'static str,
    pub time: String,
    /// true for the whole-run summary, false for an interval.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub interval_s: f64,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    pub count: u64,
    pub total_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub nr_reclaimed: u64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// `{"type":"reclaim_stall",...}`: one stall at or above --min-latency.
#[derive(Debug, Serialize)]
pub struct StallRecord {
    #[serde(rename = "type")]
    pub kind_type: &'static str,
    pub time: String,
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The thread's own name when it differs from the process's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_comm: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    pub duration_us: f64,
    pub order: Option<i32>,
    pub gfp_flags: Option<String>,
    pub gfp_mask: Option<u64>,
    pub nr_reclaimed: u64,
    /// Throttle reasons (throttle kind only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Throttle reason bits to names.
pub fn reason_names(r: u32) -> String {
    if r == 0 {
        return "none".into();
    }
    let mut v: Vec<String> = THROTTLE_REASONS
        .iter()
        .enumerate()
        .filter(|(i, _)| r & (1 << i) != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let rest = r & !0xf;
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    v.join("|")
}

pub fn decode_stall(bytes: &[u8], gfp: &Gfp) -> Option<StallRecord> {
    let ev: ReclaimStallEvent = decode(bytes)?;
    let alloc = ev.flags & STALL_NO_ALLOC_INFO == 0;
    let comm = cstr(&ev.leader_comm);
    let thread = cstr(&ev.comm);
    let comm_shown = if comm.is_empty() { thread.clone() } else { comm };
    let cg = cgroup::render(&ev.cgroup);
    Some(StallRecord {
        kind_type: "reclaim_stall",
        time: format::boot_time(ev.header.boot_ns),
        kind: kind_name(ev.kind),
        pid: ev.tgid,
        tid: ev.tid,
        thread_comm: (thread != comm_shown).then_some(thread),
        comm: comm_shown,
        cgroup_id: cg.as_ref().map(|_| ev.cgroup.id).or((ev.memcg_id != 0).then_some(ev.memcg_id)),
        cgroup: cg,
        duration_us: us(ev.duration_ns),
        order: alloc.then_some(ev.order),
        gfp_flags: alloc.then(|| gfp.render(ev.gfp_flags)),
        gfp_mask: alloc.then_some(ev.gfp_flags),
        nr_reclaimed: ev.nr_reclaimed,
        reason: (ev.kind == KIND_THROTTLE).then(|| reason_names(ev.reason)),
    })
}

#[derive(Serialize)]
struct ThrottleJson {
    count: u64,
    ms: f64,
}

#[derive(Serialize)]
struct ContextJson<'a> {
    #[serde(rename = "type")]
    kind_type: &'static str,
    time: String,
    #[serde(rename = "final")]
    is_final: bool,
    interval_s: f64,
    /// Throttle sleeps by reason.
    throttle: BTreeMap<&'static str, ThrottleJson>,
    #[serde(flatten)]
    context: &'a ctx::Context,
}

pub struct ReclaimAgent {
    opts: Options,
    hist: [PerCpuHashMap<MapData, HistKey, Hist>; 2],
    switch: Array<MapData, u32>,
    active: u32,
    kswapd: Array<MapData, KswapdNode>,
    kswapd_prev: Vec<KswapdNode>,
    kswapd_base: Vec<KswapdNode>,
    throttle: PerCpuArray<MapData, u64>,
    throttle_prev: Vec<u64>,
    throttle_base: Vec<u64>,
    interval: Tables,
    total: Tables,
    names: cgroup::Names,
    gfp: Gfp,
    procfs: Procfs,
    /// The -c cgroup's directory, for its memory.pressure (cgroup v2).
    cg_dir: Option<PathBuf>,
    snap_base: Snapshot,
    snap_prev: Snapshot,
    started: Instant,
    last: Instant,
    page_kb: u64,
    ticks: u64,
}

impl ReclaimAgent {
    pub fn new(ebpf: &mut Ebpf, k: &kernel::Kernel, cfg: &Filter, opts: Options) -> Result<ReclaimAgent, Error> {
        let h0 = take_map(ebpf, "RECLAIM_HIST0")?;
        let h1 = take_map(ebpf, "RECLAIM_HIST1")?;
        let switch = take_map(ebpf, "RECLAIM_SWITCH")?;
        let kswapd = take_map(ebpf, "RECLAIM_KSWAPD")?;
        let throttle = take_map(ebpf, "RECLAIM_THROTTLE")?;
        let procfs = k.procfs.clone();
        let names = cgroup::Names::new(&procfs);
        let cg_dir = cfg
            .cgroup
            .as_deref()
            .filter(|c| *c != "/")
            .and_then(|c| names.hierarchy().map(|h| h.dir(c)))
            .filter(|d| d.join("memory.pressure").exists());
        let page_kb = kernel::page_size() / 1024;
        let snap = Snapshot::take(&procfs, cg_dir.as_deref(), page_kb);
        let mut a = ReclaimAgent {
            opts,
            hist: [h0, h1],
            switch,
            active: 0,
            kswapd,
            kswapd_prev: Vec::new(),
            kswapd_base: Vec::new(),
            throttle,
            throttle_prev: Vec::new(),
            throttle_base: Vec::new(),
            interval: Tables::default(),
            total: Tables::default(),
            names,
            gfp: Gfp::load(&k.tracefs),
            procfs,
            cg_dir,
            snap_base: snap.clone(),
            snap_prev: snap,
            started: Instant::now(),
            last: Instant::now(),
            page_kb,
            ticks: 0,
        };
        a.kswapd_base = a.read_kswapd();
        a.kswapd_prev = a.kswapd_base.clone();
        a.throttle_base = a.read_throttle();
        a.throttle_prev = a.throttle_base.clone();
        Ok(a)
    }

    fn read_kswapd(&self) -> Vec<KswapdNode> {
        (0..MAX_NODES).map(|i| self.kswapd.get(&i, 0).unwrap_or_default()).collect()
    }

    fn read_throttle(&self) -> Vec<u64> {
        (0..16u32)
            .map(|i| self.throttle.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }

    /// Empties histogram buffer `b` into the interval and total tables.
    fn drain_buffer(&mut self, b: usize) {
        let keys: Vec<HistKey> = self.hist[b].keys().filter_map(Result::ok).collect();
        for k in keys {
            match self.hist[b].get(&k, 0) {
                Ok(values) => {
                    let s = Summed::from_cpus(values.iter());
                    self.interval.add(&k, &s);
                    self.total.add(&k, &s);
                }
                Err(e) => log::warn!("reading reclaim histogram: {e}"),
            }
            if let Err(e) = self.hist[b].remove(&k) {
                log::warn!("clearing reclaim histogram: {e}");
            }
        }
    }

    /// Swaps buffers and drains the one programs no longer write.
    fn flip_and_drain(&mut self) {
        let old = self.active;
        let new = 1 - old;
        match self.switch.set(0, new, 0) {
            Ok(()) => {
                self.active = new;
                std::thread::sleep(FLIP_GRACE);
                self.drain_buffer(old as usize);
            }
            Err(e) => {
                log::warn!("switching reclaim buffers: {e}");
                self.drain_buffer(old as usize);
            }
        }
    }

    fn kswapd_delta(a: &[KswapdNode], b: &[KswapdNode]) -> Kswapd {
        let mut k = Kswapd::default();
        for (x, y) in a.iter().zip(b) {
            k.wakes += y.wakes.saturating_sub(x.wakes);
            k.awake_ms += y.awake_ns.saturating_sub(x.awake_ns) as f64 / 1e6;
        }
        k.awake_ms = (k.awake_ms * 10.0).round() / 10.0;
        k
    }

    fn throttle_delta(a: &[u64], b: &[u64]) -> HashMap<&'static str, (u64, f64)> {
        let mut m = HashMap::new();
        for (bit, name) in THROTTLE_REASONS.iter().enumerate().chain([(7, &"none")]) {
            let n = b[2 * bit].saturating_sub(a[2 * bit]);
            let ns = b[2 * bit + 1].saturating_sub(a[2 * bit + 1]);
            if n > 0 {
                m.insert(*name, (n, (ns as f64 / 1e5).round() / 10.0));
            }
        }
        m
    }

    fn stall_totals(&mut self, t: &Tables, thr: &HashMap<&'static str, (u64, f64)>) -> StallTotals {
        let (wb, wb_ms) = thr.get("writeback").copied().unwrap_or((0, 0.0));
        let top = t
            .cgroups
            .iter()
            .filter(|((k, id), _)| *k == KIND_MEMCG && *id != OTHER_MEMCG)
            .max_by_key(|(_, l)| l.count)
            .map(|((_, id), _)| *id);
        let top_memcg = top.and_then(|id| self.names.name(id)).map(|name| {
            let limit = self.names.hierarchy().and_then(|h| cgroup::limit(&h.dir(&name)));
            (name, limit)
        });
        StallTotals {
            direct: t.kind_count(KIND_DIRECT),
            memcg: t.kind_count(KIND_MEMCG),
            node: t.kind_count(KIND_NODE),
            compaction: t.kind_count(KIND_COMPACTION),
            throttle: t.kind_count(KIND_THROTTLE),
            throttle_writeback: wb,
            throttle_writeback_ms: wb_ms,
            top_memcg,
        }
    }

    fn rows(&mut self, t: &Tables, is_final: bool, secs: f64) -> (Vec<SummaryRow>, Vec<SummaryRow>) {
        let time = format::now();
        let mut procs = Vec::new();
        for ((kind, tgid), r) in &t.procs {
            let memcg = r.memcg();
            let p = r.lat.percentiles();
            procs.push(SummaryRow {
                kind_type: "reclaim_summary",
                time: time.clone(),
                is_final,
                interval_s: secs,
                kind: kind_name(*kind),
                pid: (*tgid != OTHER_TGID).then_some(*tgid),
                comm: Some(r.comm.clone()),
                cgroup: (memcg != OTHER_MEMCG).then(|| self.names.name(memcg)).flatten(),
                cgroup_id: (memcg != 0).then_some(memcg),
                count: r.lat.count,
                total_us: us(r.lat.total_ns),
                p50_us: us(p.p50),
                p90_us: us(p.p90),
                p99_us: us(p.p99),
                p999_us: us(p.p999),
                max_us: us(p.max),
                nr_reclaimed: r.lat.nr_reclaimed,
            });
        }
        let mut cgs = Vec::new();
        for ((kind, id), l) in &t.cgroups {
            let p = l.percentiles();
            cgs.push(SummaryRow {
                kind_type: "reclaim_summary",
                time: time.clone(),
                is_final,
                interval_s: secs,
                kind: kind_name(*kind),
                pid: None,
                comm: None,
                cgroup: if *id == OTHER_MEMCG { Some("(other)".into()) } else { self.names.name(*id) },
                cgroup_id: (*id != 0 && *id != OTHER_MEMCG).then_some(*id),
                count: l.count,
                total_us: us(l.total_ns),
                p50_us: us(p.p50),
                p90_us: us(p.p90),
                p99_us: us(p.p99),
                p999_us: us(p.p999),
                max_us: us(p.max),
                nr_reclaimed: l.nr_reclaimed,
            });
        }
        let order = |a: &SummaryRow, b: &SummaryRow| b.total_us.total_cmp(&a.total_us).then(a.kind.cmp(b.kind));
        procs.sort_by(order);
        cgs.sort_by(order);
        (procs, cgs)
    }

    /// Emits one window: the interval (is_final false) or the whole run.
    fn report(&mut self, is_final: bool, out: &mut Out) {
        let now_snap = Snapshot::take(&self.procfs, self.cg_dir.as_deref(), self.page_kb);
        let ks = self.read_kswapd();
        let thr = self.read_throttle();
        let (base_snap, base_ks, base_thr, secs) = if is_final {
            (&self.snap_base, &self.kswapd_base, &self.throttle_base, self.started.elapsed().as_secs_f64())
        } else {
            (&self.snap_prev, &self.kswapd_prev, &self.throttle_prev, self.last.elapsed().as_secs_f64())
        };
        let kswapd = ReclaimAgent::kswapd_delta(base_ks, &ks);
        let throttle = ReclaimAgent::throttle_delta(base_thr, &thr);
        let base_snap = base_snap.clone();
        let tables = std::mem::take(if is_final { &mut self.total } else { &mut self.interval });
        let st = self.stall_totals(&tables, &throttle);
        let context = ctx::context(&base_snap, &now_snap, secs, kswapd, &st);
        let secs = (secs * 1000.0).round() / 1000.0;
        let (procs, cgs) = self.rows(&tables, is_final, secs);
        for r in procs.iter().chain(&cgs) {
            out.emit(r);
        }
        out.emit(&ContextJson {
            kind_type: "reclaim_context",
            time: format::now(),
            is_final,
            interval_s: secs,
            throttle: throttle.iter().map(|(k, (n, ms))| (*k, ThrottleJson { count: *n, ms: *ms })).collect(),
            context: &context,
        });
        out.legacy_text(Text::out(render_text(
            &tables, &procs, &cgs, &context, &throttle, &self.opts, is_final, secs,
        )));
        if tables.folded > 0 {
            log::warn!("reclaim: {} keys folded into (other) rows (more than {MAX_ROWS} rows)", tables.folded);
        }
        if !is_final {
            self.snap_prev = now_snap;
            self.kswapd_prev = ks;
            self.throttle_prev = thr;
            self.last = Instant::now();
        } else {
            self.total = tables;
        }
    }
}

/// The numeric columns shared by the per-process and per-cgroup tables (titles, then one
/// row's values, in the same widths).
fn stat_header(unit: &str) -> String {
    format!(
        "{:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "COUNT",
        format!("TOTAL {unit}"),
        format!("P50 {unit}"),
        format!("P90 {unit}"),
        format!("P99 {unit}"),
        format!("P99.9 {unit}"),
        format!("MAX {unit}"),
        "RECLAIMED",
    )
}

fn stat_cols(r: &SummaryRow, ms: bool) -> String {
    format!(
        "{:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        r.count,
        fmt_dur(r.total_us, ms),
        fmt_dur(r.p50_us, ms),
        fmt_dur(r.p90_us, ms),
        fmt_dur(r.p99_us, ms),
        fmt_dur(r.p999_us, ms),
        fmt_dur(r.max_us, ms),
        r.nr_reclaimed,
    )
}

fn fmt_dur(us_v: f64, ms: bool) -> String {
    if ms { format!("{:.2}", us_v / 1000.0) } else { format!("{:.0}", us_v) }
}

#[allow(clippy::too_many_arguments, reason = "one renderer for interval and final windows")]
fn render_text(
    t: &Tables,
    procs: &[SummaryRow],
    cgs: &[SummaryRow],
    c: &ctx::Context,
    throttle: &HashMap<&'static str, (u64, f64)>,
    o: &Options,
    is_final: bool,
    secs: f64,
) -> String {
    let unit = if o.ms { "ms" } else { "us" };
    let (n, _) = t.stalls();
    let clock = format::now();
    let clock = clock.get(11..19).unwrap_or("");
    // Per kind: kinds nest (throttle sleeps happen inside reclaim), so no grand total.
    let kinds: Vec<String> = t
        .by_kind()
        .iter()
        .map(|(k, l)| format!("{} {} ({:.3} s)", kind_name(*k), l.count, l.total_ns as f64 / 1e9))
        .collect();
    let what = if kinds.is_empty() { "no stalls".to_string() } else { kinds.join(", ") };
    let mut s = if is_final {
        format!("\nreclaim summary over {secs:.1} s: {what}\n")
    } else {
        format!("{clock}  reclaim in the last {secs:.1} s: {what}\n")
    };
    let v = &c.vmstat;
    let pct = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:.1}%"));
    s += &format!(
        "  context: allocstall +{}  pgscan direct +{} kswapd +{}  pgsteal direct +{} kswapd +{}  \
         compact_stall +{}  psi some {} full {}  kswapd {} wakes, {:.0} ms awake\n",
        v.allocstall,
        v.pgscan_direct,
        v.pgscan_kswapd,
        v.pgsteal_direct,
        v.pgsteal_kswapd,
        v.compact_stall,
        pct(c.psi.some_pct),
        pct(c.psi.full_pct),
        c.kswapd.wakes,
        c.kswapd.awake_ms,
    );
    if !throttle.is_empty() {
        let mut th: Vec<String> = throttle.iter().map(|(k, (n, ms))| format!("{k} {n} ({ms:.1} ms)")).collect();
        th.sort();
        s += &format!("  throttled: {}\n", th.join(", "));
    }
    if is_final {
        let sc = &c.sysctl;
        let o = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
        s += &format!(
            "  sysctl: vm.swappiness {}  vm.min_free_kbytes {}  vm.watermark_scale_factor {}  \
             vm.zone_reclaim_mode {}  vm.overcommit_memory {}  vm.dirty_ratio {}\n",
            o(sc.swappiness),
            o(sc.min_free_kbytes),
            o(sc.watermark_scale_factor),
            o(sc.zone_reclaim_mode),
            o(sc.overcommit_memory),
            o(sc.dirty_ratio),
        );
        for z in &c.zones {
            s += &format!(
                "  zone: node {} {:<8} free {} KiB  min {} low {} high {} KiB\n",
                z.node, z.zone, z.free_kb, z.min_kb, z.low_kb, z.high_kb
            );
        }
    }
    if n > 0 {
        s += &format!(
            "  {:<10} {:>7} {:<16} {:<28} {}\n",
            "KIND", "PID", "COMM", "CGROUP", stat_header(unit),
        );
        for r in procs.iter().take(o.top) {
            s += &format!(
                "  {:<10} {:>7} {:<16} {:<28} {}\n",
                r.kind,
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.comm.as_deref().unwrap_or(""),
                r.cgroup.as_deref().unwrap_or("?"),
                stat_cols(r, o.ms),
            );
        }
        if procs.len() > o.top {
            s += &format!("  ... {} more processes\n", procs.len() - o.top);
        }
        s += &format!("  {:<10} {:<53} {}\n", "BY CGROUP", "", stat_header(unit));
        for r in cgs.iter().take(o.top) {
            s += &format!(
                "  {:<10} {:<53} {}\n",
                r.kind,
                r.cgroup.clone().unwrap_or_else(|| r.cgroup_id.map_or("?".into(), |i| format!("id {i}"))),
                stat_cols(r, o.ms),
            );
        }
        if cgs.len() > o.top {
            s += &format!("  ... {} more cgroups\n", cgs.len() - o.top);
        }
        if o.histogram {
            for (k, l) in t.by_kind() {
                s += &log2_bars(&l, o.ms, &format!("\n  {} stalls:", kind_name(k)));
            }
        }
    }
    for note in &c.notes {
        s += &format!("  note: {note}\n");
    }
    s
}

fn render_stall(r: &StallRecord, ms: bool) -> String {
    let d = if ms { format!("{:.2} ms", r.duration_us / 1000.0) } else { format!("{:.0} us", r.duration_us) };
    let mut s = format!(
        "{}  STALL {:<10} {:>10}  pid {} ({}) tid {}  memcg {}",
        r.time.get(11..23).unwrap_or(&r.time),
        r.kind,
        d,
        r.pid,
        r.comm,
        r.tid,
        r.cgroup.as_deref().unwrap_or("?"),
    );
    if let (Some(o), Some(g)) = (r.order, &r.gfp_flags) {
        s += &format!("  order {o} {g}");
    }
    if let Some(reason) = &r.reason {
        s += &format!("  reason {reason}");
    }
    if r.nr_reclaimed > 0 {
        s += &format!("  reclaimed {} pages", r.nr_reclaimed);
    }
    s.push('\n');
    s
}

impl Agent for ReclaimAgent {
    fn record(&mut self, kind: u32, bytes: &[u8], out: &mut Out) -> bool {
        if kind != KIND_STALL {
            return false;
        }
        let Some(r) = decode_stall(bytes, &self.gfp) else { return false };
        if let (Some(id), Some(cg)) = (r.cgroup_id, r.cgroup.as_deref()) {
            self.names.learn(id, cg);
        }
        out.emit(&r);
        out.legacy_text(Text::out(render_stall(&r, self.opts.ms)));
        true
    }

    fn collect(&mut self) {
        self.flip_and_drain();
    }

    fn interval(&mut self, out: &mut Out) {
        self.ticks += 1;
        self.report(false, out);
    }

    fn finish(&mut self, out: &mut Out) {
        // Programs are detached: both buffers are final.
        self.drain_buffer(0);
        self.drain_buffer(1);
        // The partial last interval when the run was interrupted (not when COUNT intervals
        // ended it: stalls during the detach then show in the final summary only).
        let by_count = self.opts.count.is_some_and(|c| self.ticks >= c);
        if self.opts.interval.is_some() && !by_count {
            self.report(false, out);
        }
        self.report(true, out);
    }
}

/// Kind names in kernel-number order.
#[cfg(test)]
fn kinds() -> impl Iterator<Item = &'static str> {
    (0..memtrace_common::reclaim::KINDS).map(kind_name)
}

#[cfg(test)]
mod tests {
    use memtrace_common::{
        CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_NAME_LEN, CgroupPath, EventHeader,
        reclaim::{BUCKETS, KIND_HIGH},
    };

    use super::*;

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn stall(kind: u32) -> ReclaimStallEvent {
        let mut cg = CgroupPath { id: 77, depth: 1, status: CGROUP_COMPLETE, names: [[0; CGROUP_NAME_LEN]; CGROUP_DEPTH] };
        cg.names[0][..3].copy_from_slice(b"job");
        ReclaimStallEvent {
            header: EventHeader { kind: KIND_STALL, cpu: 0, boot_ns: 1 },
            kind,
            flags: 0,
            tid: 11,
            tgid: 10,
            order: 0,
            reason: 0,
            gfp_flags: 0xcc0,
            nr_reclaimed: 32,
            duration_ns: 12_345_678,
            memcg_id: 77,
            comm: comm("worker"),
            leader_comm: comm("dd"),
            cgroup: cg,
        }
    }

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: plain data viewed as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_a_stall() {
        let gfp = Gfp { table: vec![(0xcc0, "GFP_KERNEL".into())] };
        let r = decode_stall(&bytes(&stall(KIND_MEMCG)), &gfp).unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["type"], "reclaim_stall");
        assert_eq!(j["kind"], "memcg");
        assert_eq!(j["pid"], 10);
        assert_eq!(j["tid"], 11);
        assert_eq!(j["comm"], "dd");
        assert_eq!(j["thread_comm"], "worker");
        assert_eq!(j["cgroup"], "/job");
        assert_eq!(j["cgroup_id"], 77);
        assert_eq!(j["duration_us"], 12345.678);
        assert_eq!(j["order"], 0);
        assert_eq!(j["gfp_flags"], "GFP_KERNEL");
        assert_eq!(j["nr_reclaimed"], 32);
        assert!(j.get("reason").is_none());
        assert!(decode_stall(&bytes(&stall(KIND_MEMCG))[..64], &gfp).is_none());
    }

    #[test]
    fn throttle_and_high_stalls_have_no_alloc_info() {
        let mut ev = stall(KIND_THROTTLE);
        ev.flags = STALL_NO_ALLOC_INFO;
        ev.reason = 1 | 4;
        let r = decode_stall(&bytes(&ev), &Gfp::default()).unwrap();
        assert_eq!(r.kind, "throttle");
        assert_eq!(r.order, None);
        assert_eq!(r.gfp_flags, None);
        assert_eq!(r.reason.as_deref(), Some("writeback|noprogress"));
        ev.kind = KIND_HIGH;
        assert_eq!(decode_stall(&bytes(&ev), &Gfp::default()).unwrap().kind, "high");
        assert!(render_stall(&r, true).contains("12.35 ms"));
    }

    fn summed(n: u64, ns: u64, comm_s: &str) -> Summed {
        let mut s = Summed::from_durations(&vec![ns; n as usize]);
        s.comm = comm(comm_s);
        s.nr_reclaimed = n * 2;
        s
    }

    #[test]
    fn tables_split_by_process_and_cgroup() {
        let mut t = Tables::default();
        t.add(&HistKey { kind: KIND_MEMCG, tgid: 1, memcg_id: 5 }, &summed(3, 50_000, "a"));
        t.add(&HistKey { kind: KIND_MEMCG, tgid: 2, memcg_id: 5 }, &summed(2, 80_000, "b"));
        t.add(&HistKey { kind: KIND_DIRECT, tgid: 1, memcg_id: 6 }, &summed(1, 1_000_000, "a"));
        t.add(&HistKey { kind: KIND_MEMCG, tgid: 1, memcg_id: 5 }, &summed(1, 50_000, "a"));
        assert_eq!(t.procs.len(), 3);
        assert_eq!(t.cgroups.len(), 2);
        assert_eq!(t.procs[&(KIND_MEMCG, 1)].lat.count, 4);
        assert_eq!(t.procs[&(KIND_MEMCG, 1)].comm, "a");
        assert_eq!(t.cgroups[&(KIND_MEMCG, 5)].count, 6);
        assert_eq!(t.cgroups[&(KIND_MEMCG, 5)].nr_reclaimed, 12);
        assert_eq!(t.stalls(), (7, 4 * 50_000 + 2 * 80_000 + 1_000_000));
        assert_eq!(t.kind_count(KIND_DIRECT), 1);
        let kinds: Vec<u32> = t.by_kind().into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, vec![KIND_DIRECT, KIND_MEMCG]);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut t = Tables::default();
        for i in 0..(MAX_ROWS as u32 + 10) {
            t.add(&HistKey { kind: KIND_MEMCG, tgid: i + 1, memcg_id: u64::from(i) + 1 }, &summed(1, 10_000, "x"));
        }
        assert_eq!(t.procs.len(), MAX_ROWS + 1);
        assert_eq!(t.cgroups.len(), MAX_ROWS + 1);
        assert_eq!(t.procs[&(KIND_MEMCG, OTHER_TGID)].lat.count, 10);
        assert_eq!(t.folded, 20);
    }

    #[test]
    fn map_sizes_fit_the_budget() {
        use crate::reclaim::config::map_sizes;
        let s = map_sizes(true);
        let keys = s.iter().find(|(n, _)| *n == "RECLAIM_HIST0").unwrap().1;
        assert!((128..=4096).contains(&keys));
        assert_eq!(std::mem::size_of::<Hist>(), 48 + 4 * BUCKETS);
        assert!(map_sizes(false).iter().all(|(_, n)| *n == 1));
    }

    #[test]
    fn reason_bits() {
        assert_eq!(reason_names(0), "none");
        assert_eq!(reason_names(1), "writeback");
        assert_eq!(reason_names(8 | 0x20), "congested|0x20");
        assert_eq!(kinds().collect::<Vec<_>>(), ["direct", "memcg", "softlimit", "node", "compaction", "throttle", "high"]);
    }
}
