//! The reclaim agent: drains the kernel's double-buffered per-CPU log-linear histograms
//! every collection tick into per-(kind, process) and per-(kind, cgroup) tables for the
//! interval and the whole run, streams slow stalls, and emits each window's records with
//! the system context that explains them.
//!
//! The buffer flip: programs add a stall to the buffer `RECLAIM_SWITCH` names, inside a
//! window marked by their CPU's `RECLAIM_INFLIGHT` counter (incremented before the index is
//! read, decremented after the update, both fully ordered atomics). After switching the
//! index the agent reads the retired buffer only once every CPU's counter has been seen at
//! zero: a program that read the old index had then finished, and any later one reads the
//! new index. If that takes longer than [`QUIESCE_DEADLINE`] the retired buffer is left
//! alone (counted in `flip_timeouts`) and read after a later flip: nothing is lost.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{Ordering, fence},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap},
};
use memtrace_common::reclaim::{
    Hist, HistKey, KIND_COMPACTION, KIND_DIRECT, KIND_MEMCG, KIND_NODE, KIND_STALL,
    KIND_THROTTLE, KswapdNode, MAX_NODES, RECLAIM_HIST0, RECLAIM_HIST1, RECLAIM_INFLIGHT,
    RECLAIM_KSWAPD, RECLAIM_SWITCH, RECLAIM_THROTTLE, ReclaimStallEvent, STALL_NO_ALLOC_INFO,
    kind_name,
};

use super::{
    args::Options,
    context::{self as ctx, Kswapd, Snapshot, StallTotals},
    model::{Latency, MAX_ROWS, OTHER_MEMCG, OTHER_TGID, Tables},
    records::{ContextRecord, ReclaimRecord, Stall, Summary, Throttle},
    report::view_options,
};
use crate::{
    engine::{
        family::{Agent, End, Filter, decode},
        format,
        loader::take_map,
        sink::Out,
    },
    error::Error,
    kernel::{self, cgroup, cstr, gfp::Gfp, procfs::Procfs},
};

/// How long a flip waits for the programs that may still write the retired buffer.
/// Programs run for microseconds with preemption off; this only expires when a CPU (a
/// virtual one, say) stops for that long in the middle of one.
const QUIESCE_DEADLINE: Duration = Duration::from_millis(100);

/// Throttle reason bits (enum vmscan_throttle_state).
const THROTTLE_REASONS: [&str; 4] = ["writeback", "isolated", "noprogress", "congested"];

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
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

pub fn decode_stall(bytes: &[u8], gfp: &Gfp) -> Option<Stall> {
    let ev: ReclaimStallEvent = decode(bytes)?;
    let alloc = ev.flags & STALL_NO_ALLOC_INFO == 0;
    let comm = cstr(&ev.leader_comm);
    let thread = cstr(&ev.comm);
    let comm_shown = if comm.is_empty() { thread.clone() } else { comm };
    let cg = cgroup::render(&ev.cgroup);
    Some(Stall {
        time: format::boot_time(ev.header.boot_ns),
        kind: kind_name(ev.kind).into(),
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

/// The double-buffered histograms and the flip.
struct Buffers {
    hist: [PerCpuHashMap<MapData, HistKey, Hist>; 2],
    switch: Array<MapData, u32>,
    inflight: PerCpuArray<MapData, u64>,
    /// The buffer programs write.
    active: u32,
    /// Flips whose retired buffer was not quiet within the deadline.
    timeouts: u64,
}

impl Buffers {
    /// Points programs at the other buffer; returns the retired one once no program can
    /// still write it, None when that is not known (it is then read after a later flip).
    fn flip(&mut self) -> Option<usize> {
        let new = 1 - self.active;
        if let Err(e) = self.switch.set(0, new, 0) {
            log::warn!("switching reclaim buffers: {e}");
            return None;
        }
        let old = std::mem::replace(&mut self.active, new);
        if self.quiesce() {
            Some(old as usize)
        } else {
            self.timeouts += 1;
            log::warn!("reclaim: programs still in flight {QUIESCE_DEADLINE:?} after a buffer flip");
            None
        }
    }

    /// Waits until every CPU's in-flight counter has been seen at zero since now.
    fn quiesce(&self) -> bool {
        // Orders the switch written by the syscall above before the counters read below
        // (the programs' side: a fully ordered fetch-add before they read the index).
        fence(Ordering::SeqCst);
        let deadline = Instant::now() + QUIESCE_DEADLINE;
        let mut busy: Option<Vec<bool>> = None;
        loop {
            let counts = match self.inflight.get(&0, 0) {
                Ok(v) => v,
                Err(e) => {
                    log::warn!("reading {RECLAIM_INFLIGHT}: {e}");
                    return false;
                }
            };
            let now: Vec<bool> = match &busy {
                None => counts.iter().map(|&n| n != 0).collect(),
                Some(b) => b.iter().zip(counts.iter()).map(|(&was, &n)| was && n != 0).collect(),
            };
            if !now.contains(&true) {
                // The programs' histogram writes before the agent's reads of them.
                fence(Ordering::SeqCst);
                return true;
            }
            busy = Some(now);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

pub struct ReclaimAgent {
    opts: Options,
    /// The `reclaim_options` record was emitted.
    announced: bool,
    buffers: Buffers,
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
    /// Intervals emitted.
    ticks: u64,
}

impl ReclaimAgent {
    pub fn new(ebpf: &mut Ebpf, k: &kernel::Kernel, cfg: &Filter, opts: Options) -> Result<ReclaimAgent, Error> {
        let buffers = Buffers {
            hist: [take_map(ebpf, RECLAIM_HIST0)?, take_map(ebpf, RECLAIM_HIST1)?],
            switch: take_map(ebpf, RECLAIM_SWITCH)?,
            inflight: take_map(ebpf, RECLAIM_INFLIGHT)?,
            active: 0,
            timeouts: 0,
        };
        let kswapd = take_map(ebpf, RECLAIM_KSWAPD)?;
        let throttle = take_map(ebpf, RECLAIM_THROTTLE)?;
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
            announced: false,
            buffers,
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

    /// `reclaim_options` before any other record of the family.
    fn announce(&mut self, out: &mut Out) {
        if !self.announced {
            self.announced = true;
            out.emit(&ReclaimRecord::Options(view_options(&self.opts)));
        }
    }

    fn read_kswapd(&self) -> Vec<KswapdNode> {
        (0..MAX_NODES).map(|i| self.kswapd.get(&i, 0).unwrap_or_default()).collect()
    }

    fn read_throttle(&self) -> Vec<u64> {
        (0..16u32)
            .map(|i| self.throttle.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }

    /// Empties histogram buffer `b` (no program writes it) into the interval and total
    /// tables.
    fn drain_buffer(&mut self, b: usize) {
        let map = &mut self.buffers.hist[b];
        let keys: Vec<HistKey> = map.keys().filter_map(Result::ok).collect();
        for k in keys {
            match map.get(&k, 0) {
                Ok(values) => {
                    let (l, comm) = Latency::from_cpus(values.iter());
                    self.interval.add(&k, &l, &comm);
                    self.total.add(&k, &l, &comm);
                }
                Err(e) => log::warn!("reading reclaim histogram: {e}"),
            }
            if let Err(e) = map.remove(&k) {
                log::warn!("clearing reclaim histogram: {e}");
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

    fn throttle_delta(a: &[u64], b: &[u64]) -> BTreeMap<String, Throttle> {
        let mut m = BTreeMap::new();
        for (bit, name) in THROTTLE_REASONS.iter().enumerate().chain([(7, &"none")]) {
            let n = b[2 * bit].saturating_sub(a[2 * bit]);
            let ns = b[2 * bit + 1].saturating_sub(a[2 * bit + 1]);
            if n > 0 {
                m.insert(name.to_string(), Throttle { count: n, ms: (ns as f64 / 1e5).round() / 10.0 });
            }
        }
        m
    }

    fn stall_totals(&mut self, t: &Tables, thr: &BTreeMap<String, Throttle>) -> StallTotals {
        let wb = thr.get("writeback").copied().unwrap_or(Throttle { count: 0, ms: 0.0 });
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
            throttle_writeback: wb.count,
            throttle_writeback_ms: wb.ms,
            top_memcg,
        }
    }

    /// A window's rows: per (kind, process), then per (kind, cgroup), each by total time.
    fn rows(&mut self, t: &Tables, time: &str, is_final: bool, secs: f64) -> Vec<Summary> {
        let row = |kind: u32, lat: &Latency| {
            let p = lat.percentiles();
            Summary {
                time: time.to_string(),
                is_final,
                interval_s: secs,
                kind: kind_name(kind).into(),
                pid: None,
                comm: None,
                cgroup: None,
                cgroup_id: None,
                count: lat.count,
                total_us: us(lat.total_ns),
                p50_us: us(p.p50),
                p90_us: us(p.p90),
                p99_us: us(p.p99),
                p999_us: us(p.p999),
                max_us: us(p.max),
                nr_reclaimed: lat.nr_reclaimed,
                histogram: None,
            }
        };
        let mut procs = Vec::new();
        for ((kind, tgid), r) in &t.procs {
            let memcg = r.memcg();
            procs.push(Summary {
                pid: (*tgid != OTHER_TGID).then_some(*tgid),
                comm: Some(r.comm.clone()),
                cgroup: (memcg != OTHER_MEMCG).then(|| self.names.name(memcg)).flatten(),
                cgroup_id: (memcg != 0).then_some(memcg),
                ..row(*kind, &r.lat)
            });
        }
        let mut cgs = Vec::new();
        for ((kind, id), l) in &t.cgroups {
            cgs.push(Summary {
                cgroup: if *id == OTHER_MEMCG { Some("(other)".into()) } else { self.names.name(*id) },
                cgroup_id: (*id != 0 && *id != OTHER_MEMCG).then_some(*id),
                histogram: Some(l.histogram()),
                ..row(*kind, l)
            });
        }
        let order = |a: &Summary, b: &Summary| b.total_us.total_cmp(&a.total_us).then(a.kind.cmp(&b.kind));
        procs.sort_by(order);
        cgs.sort_by(order);
        procs.extend(cgs);
        procs
    }

    /// Emits one window: the interval (is_final false) or the whole run; its
    /// `reclaim_context` comes last and closes it.
    fn report(&mut self, is_final: bool, out: &mut Out) {
        let time = format::now();
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
        for r in self.rows(&tables, &time, is_final, secs) {
            out.emit(&ReclaimRecord::Summary(r));
        }
        out.emit(&ReclaimRecord::Context(ContextRecord {
            time,
            is_final,
            interval_s: secs,
            throttle,
            context,
            flip_timeouts: self.buffers.timeouts,
        }));
        if tables.folded > 0 {
            log::warn!("reclaim: {} keys folded into (other) rows (more than {MAX_ROWS} rows)", tables.folded);
        }
        if is_final {
            self.total = tables;
        } else {
            self.snap_prev = now_snap;
            self.kswapd_prev = ks;
            self.throttle_prev = thr;
            self.last = Instant::now();
        }
    }
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
        self.announce(out);
        out.emit(&ReclaimRecord::Stall(r));
        true
    }

    fn tick(&mut self, out: &mut Out) {
        self.announce(out);
    }

    /// Flips the buffers and drains the retired one (every second, whatever the output
    /// interval: a buffer only ever holds about a second of keys).
    fn collect(&mut self) {
        if let Some(b) = self.buffers.flip() {
            self.drain_buffer(b);
        }
    }

    fn interval(&mut self, out: &mut Out) {
        self.announce(out);
        self.ticks += 1;
        self.report(false, out);
    }

    fn finish(&mut self, out: &mut Out, end: End) {
        self.announce(out);
        // Programs are detached: once quiet, both buffers are final.
        if !self.buffers.quiesce() {
            self.buffers.timeouts += 1;
        }
        self.drain_buffer(0);
        self.drain_buffer(1);
        // The partial last interval when intervals ran and the run did not end with its
        // COUNTth (stalls during the detach then show in the final summary only).
        if self.ticks > 0 && !end.by_count {
            self.report(false, out);
        }
        self.report(true, out);
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::{
        CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_NAME_LEN, CgroupPath, EventHeader,
        reclaim::{BUCKETS, KIND_HIGH},
    };

    use super::*;
    use crate::reclaim::report::stall_line;

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
        let j = serde_json::to_value(ReclaimRecord::Stall(r)).unwrap();
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
        assert!(stall_line(&r, true).contains("12.35 ms"));
    }

    #[test]
    fn map_sizes_fit_the_budget() {
        use crate::reclaim::config::map_sizes;
        let s = map_sizes(true);
        let keys = s.iter().find(|(n, _)| *n == RECLAIM_HIST0).unwrap().1;
        assert!((128..=4096).contains(&keys));
        assert_eq!(std::mem::size_of::<Hist>(), 48 + 4 * BUCKETS);
        assert!(map_sizes(false).iter().all(|(_, n)| *n == 1));
    }

    #[test]
    fn reason_bits() {
        assert_eq!(reason_names(0), "none");
        assert_eq!(reason_names(1), "writeback");
        assert_eq!(reason_names(8 | 0x20), "congested|0x20");
        let kinds: Vec<&str> = (0..memtrace_common::reclaim::KINDS).map(kind_name).collect();
        assert_eq!(kinds, ["direct", "memcg", "softlimit", "node", "compaction", "throttle", "high"]);
    }

    #[test]
    fn throttle_deltas_by_reason() {
        let a = vec![0u64; 16];
        let mut b = vec![0u64; 16];
        (b[0], b[1]) = (205, 348_000_000);
        (b[14], b[15]) = (1, 50_000);
        let d = ReclaimAgent::throttle_delta(&a, &b);
        assert_eq!(d["writeback"], Throttle { count: 205, ms: 348.0 });
        assert_eq!(d["none"], Throttle { count: 1, ms: 0.1 });
        assert_eq!(d.len(), 2);
    }
}
