//! Reclaim latency histograms in the agent and the view: the kernel's per-CPU log-linear
//! buckets (see `memtrace_common::reclaim::bucket`) summed exactly, turned into HDR
//! histograms for percentiles and log2-style bars; and the per-process and per-cgroup
//! tables a window aggregates into.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use memtrace_common::reclaim::{BUCKETS, Hist, HistKey, bucket, bucket_low, bucket_width};

use crate::kernel::cstr;

/// HDR precision: 2 significant digits (1%), finer than the kernel buckets (<= 1/32 from
/// a bucket's midpoint), so the conversion adds little error.
const SIGFIG: u8 = 2;

/// A latency distribution: the kernel's buckets plus the exact count, total, max and pages
/// reclaimed. Sums exactly; an HDR histogram is made from it only for percentiles and bars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
    pub buckets: Vec<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { count: 0, total_ns: 0, max_ns: 0, nr_reclaimed: 0, buckets: vec![0; BUCKETS] }
    }
}

/// Percentiles of a distribution, in ns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    /// Sums the per-CPU copies of one kernel histogram entry; with the first comm found.
    pub fn from_cpus<'a>(cpus: impl IntoIterator<Item = &'a Hist>) -> (Latency, [u8; 16]) {
        let mut l = Latency::default();
        let mut comm = [0; 16];
        for h in cpus {
            if h.count == 0 {
                continue;
            }
            l.count += h.count;
            l.total_ns += h.total_ns;
            l.max_ns = l.max_ns.max(h.max_ns);
            l.nr_reclaimed += h.nr_reclaimed;
            if comm[0] == 0 {
                comm = h.comm;
            }
            for (a, b) in l.buckets.iter_mut().zip(h.buckets.iter()) {
                *a += u64::from(*b);
            }
        }
        (l, comm)
    }

    /// Buckets a list of durations the way the kernel does (tests).
    #[cfg(test)]
    pub fn from_durations(ns: &[u64]) -> Latency {
        let mut l = Latency::default();
        for &v in ns {
            l.count += 1;
            l.total_ns += v;
            l.max_ns = l.max_ns.max(v);
            l.buckets[bucket(v)] += 1;
        }
        l
    }

    pub fn merge(&mut self, o: &Latency) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
        self.nr_reclaimed += o.nr_reclaimed;
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
    }

    /// The non-empty buckets as `[low_ns, high_ns, count]` (a record's `histogram`).
    pub fn histogram(&self) -> Vec<[u64; 3]> {
        (self.buckets.iter().enumerate())
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| [bucket_low(i), bucket_low(i) + bucket_width(i), *c])
            .collect()
    }

    /// Adds a record's `histogram` (buckets known by their low bound).
    pub fn add_histogram(&mut self, h: &[[u64; 3]]) {
        for [low, _, c] in h {
            self.buckets[bucket(*low)] += c;
        }
    }

    /// The HDR histogram (ns): each bucket's count at the bucket's midpoint, except one
    /// count of the highest non-empty bucket, recorded at the exact maximum.
    pub fn hdr(&self) -> Histogram<u64> {
        let mut h = Histogram::new(SIGFIG).expect("valid sigfig");
        // Records with auto-resize (`saturating_record*` would clamp to the current top).
        let mut record = |v: u64, n: u64| {
            if n > 0 && h.record_n(v, n).is_err() {
                h.saturating_record_n(v, n);
            }
        };
        let top = self.buckets.iter().rposition(|&c| c > 0);
        for (i, &c) in self.buckets.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let mid = (bucket_low(i) + bucket_width(i) / 2).max(1);
            if Some(i) == top && self.max_ns > 0 {
                record(mid, c - 1);
                record(self.max_ns.max(1), 1);
            } else {
                record(mid, c);
            }
        }
        // Bucket counts are u32 per CPU and could in theory disagree with the u64 count;
        // the count shown is the kernel's.
        h
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = self.hdr();
        let q = |x: f64| h.value_at_quantile(x).min(self.max_ns.max(1));
        Percentiles { p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: self.max_ns }
    }
}

/// bcc-style log2 bars of a distribution, in us (or ms).
pub fn log2_bars(l: &Latency, ms: bool, title: &str) -> String {
    let unit = if ms { 1_000_000 } else { 1_000 };
    let label = if ms { "msecs" } else { "usecs" };
    // Counts per power-of-two range of the display unit: [2^k, 2^(k+1)) units; k = -1 for
    // values below one unit.
    let mut slots: Vec<u64> = Vec::new();
    let mut below = 0u64;
    for v in l.hdr().iter_recorded() {
        let n = v.count_at_value();
        let units = v.value_iterated_to() / unit;
        if units == 0 {
            below += n;
            continue;
        }
        let k = 63 - units.leading_zeros() as usize;
        if slots.len() <= k {
            slots.resize(k + 1, 0);
        }
        slots[k] += n;
    }
    let peak = slots.iter().copied().chain([below]).max().unwrap_or(0).max(1);
    let bar = |n: u64| "*".repeat(((n * 40).div_ceil(peak)) as usize);
    let mut s = format!("{title}\n{:>24} : {:<8} distribution\n", label, "count");
    if below > 0 {
        s += &format!("{:>10} -> {:<10} : {:<8} |{:<40}|\n", 0, 0, below, bar(below));
    }
    let first = slots.iter().position(|&c| c > 0).unwrap_or(0);
    for (k, &n) in slots.iter().enumerate().skip(first) {
        let lo = 1u64 << k;
        let hi = (1u64 << (k + 1)) - 1;
        s += &format!("{lo:>10} -> {hi:<10} : {n:<8} |{:<40}|\n", bar(n));
    }
    s
}

/// Rows kept per table; further keys are folded into one "other" row (counted).
pub const MAX_ROWS: usize = 4096;
pub const OTHER_TGID: u32 = u32::MAX;
pub const OTHER_MEMCG: u64 = u64::MAX;

/// One (kind, process) row.
#[derive(Default)]
pub struct ProcRow {
    pub lat: Latency,
    pub comm: String,
    /// Stall counts per memcg id: the row's cgroup is the most frequent.
    pub cgroups: HashMap<u64, u64>,
}

impl ProcRow {
    pub fn memcg(&self) -> u64 {
        self.cgroups.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))).map_or(0, |(id, _)| *id)
    }
}

/// A window's stalls per (kind, process) and per (kind, cgroup), bounded.
#[derive(Default)]
pub struct Tables {
    pub procs: HashMap<(u32, u32), ProcRow>,
    pub cgroups: HashMap<(u32, u64), Latency>,
    /// Keys folded into the "other" rows because the tables were full.
    pub folded: u64,
}

impl Tables {
    /// One kernel histogram entry (its process's `comm`).
    pub fn add(&mut self, k: &HistKey, l: &Latency, comm: &[u8; 16]) {
        let full = self.procs.len() >= MAX_ROWS;
        let pk = if full && !self.procs.contains_key(&(k.kind, k.tgid)) {
            self.folded += 1;
            (k.kind, OTHER_TGID)
        } else {
            (k.kind, k.tgid)
        };
        let row = self.procs.entry(pk).or_default();
        row.lat.merge(l);
        if row.comm.is_empty() {
            row.comm = if pk.1 == OTHER_TGID { "(other)".into() } else { cstr(comm) };
        }
        *row.cgroups.entry(k.memcg_id).or_default() += l.count;
        let full = self.cgroups.len() >= MAX_ROWS;
        let ck = if full && !self.cgroups.contains_key(&(k.kind, k.memcg_id)) {
            self.folded += 1;
            (k.kind, OTHER_MEMCG)
        } else {
            (k.kind, k.memcg_id)
        };
        self.cgroups.entry(ck).or_default().merge(l);
    }

    /// Stalls of one kind.
    pub fn kind_count(&self, kind: u32) -> u64 {
        self.cgroups.iter().filter(|((k, _), _)| *k == kind).map(|(_, l)| l.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers (xorshift64*), uniform in [0, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn exact(sorted: &[u64], q: f64) -> u64 {
        // The smallest value with at least q of the samples at or below it (HDR's rule).
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// Kernel buckets -> HDR must give every percentile within the kernel bucket's half
    /// width (1/32) plus HDR's 1%, i.e. within 4.5%, and the exact count, sum and max.
    fn check(name: &str, mut samples: Vec<u64>) {
        let l = Latency::from_durations(&samples);
        samples.sort_unstable();
        assert_eq!(l.count, samples.len() as u64);
        assert_eq!(l.hdr().len(), samples.len() as u64, "{name}: HDR holds every sample");
        assert_eq!(l.total_ns, samples.iter().sum::<u64>());
        assert_eq!(l.max_ns, *samples.last().unwrap());
        let p = l.percentiles();
        assert_eq!(p.max, *samples.last().unwrap(), "{name}: exact max");
        for (q, got) in [(0.5, p.p50), (0.9, p.p90), (0.99, p.p99), (0.999, p.p999)] {
            let want = exact(&samples, q);
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 0.045, "{name}: p{} = {got} ns, exact {want} ns ({:.2}%)", q * 100.0, err * 100.0);
        }
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max, "{name}: {p:?}");
    }

    #[test]
    fn uniform_distribution() {
        let mut r = Rng(0x1234_5678);
        // 10 us .. 10 ms.
        check("uniform", (0..200_000).map(|_| 10_000 + (r.next() * 9_990_000.0) as u64).collect());
    }

    #[test]
    fn exponential_distribution() {
        let mut r = Rng(42);
        // Mean 50 us, as page-cache reclaim stalls.
        check(
            "exponential",
            (0..200_000).map(|_| 5_000 + (-(1.0 - r.next()).ln() * 50_000.0) as u64).collect(),
        );
    }

    #[test]
    fn lognormal_with_slow_tail() {
        let mut r = Rng(7);
        // Log-normal around 100 us plus 0.5% writeback waits of 20-300 ms: the tail decides
        // p99.9.
        let samples: Vec<u64> = (0..100_000)
            .map(|i| {
                if i % 200 == 0 {
                    20_000_000 + (r.next() * 280_000_000.0) as u64
                } else {
                    let (u1, u2) = (r.next().max(1e-12), r.next());
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (100_000.0 * (0.8 * z).exp()) as u64 + 2_048
                }
            })
            .collect();
        check("lognormal+tail", samples);
    }

    #[test]
    fn single_values_are_exact_at_the_max() {
        let p = Latency::from_durations(&[1_500_000]).percentiles();
        assert_eq!(p.max, 1_500_000);
        // Every percentile of one sample is that sample (within HDR's 1%).
        assert!((p.p50 as f64 - 1_500_000.0).abs() / 1_500_000.0 < 0.01, "{p:?}");
    }

    #[test]
    fn sums_cpus() {
        let mut a = Hist { count: 2, total_ns: 30, max_ns: 20, nr_reclaimed: 5, comm: *b"dd\0\0\0\0\0\0\0\0\0\0\0\0\0\0", buckets: [0; BUCKETS] };
        a.buckets[0] = 2;
        let mut b = a;
        b.count = 1;
        b.max_ns = 90;
        b.buckets[0] = 0;
        b.buckets[1] = 1;
        b.comm = [0; 16];
        let empty = Hist { count: 0, total_ns: 0, max_ns: 0, nr_reclaimed: 0, comm: [0; 16], buckets: [0; BUCKETS] };
        let (s, comm) = Latency::from_cpus([&empty, &a, &b]);
        assert_eq!((s.count, s.total_ns, s.max_ns, s.nr_reclaimed), (3, 60, 90, 10));
        assert_eq!(&s.buckets[..2], &[2, 1]);
        assert_eq!(&comm[..3], b"dd\0");
    }

    #[test]
    fn bars_cover_every_sample() {
        let ns: Vec<u64> = [3_000u64, 5_000, 6_000, 100_000, 2_000_000].repeat(10);
        let l = Latency::from_durations(&ns);
        let text = log2_bars(&l, false, "memcg");
        let total: u64 = text
            .lines()
            .skip(2)
            .map(|line| line.split(':').nth(1).unwrap().split('|').next().unwrap().trim().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 50, "{text}");
        assert!(text.contains("2 -> 3"), "{text}");
        assert!(text.contains("1024 -> 2047"), "{text}");
    }

    /// Merging sums exactly; a record's histogram gives the same buckets back.
    #[test]
    fn merges_and_round_trips_through_records() {
        let a = Latency::from_durations(&[3_000, 5_000, 100_000]);
        let b = Latency::from_durations(&[5_000, 2_000_000]);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, Latency::from_durations(&[3_000, 5_000, 100_000, 5_000, 2_000_000]));
        let h = m.histogram();
        assert_eq!(h.iter().map(|[_, _, c]| c).sum::<u64>(), 5);
        assert!(h.iter().all(|[lo, hi, _]| lo < hi && bucket(*lo) == bucket(hi - 1)), "{h:?}");
        let mut back = Latency { count: m.count, total_ns: m.total_ns, max_ns: m.max_ns, nr_reclaimed: 0, ..Default::default() };
        back.add_histogram(&h);
        assert_eq!(back, m);
    }

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn lat(n: u64, ns: u64) -> Latency {
        let mut l = Latency::from_durations(&vec![ns; n as usize]);
        l.nr_reclaimed = n * 2;
        l
    }

    #[test]
    fn tables_split_by_process_and_cgroup() {
        use memtrace_common::reclaim::{KIND_DIRECT, KIND_MEMCG};
        let mut t = Tables::default();
        t.add(&HistKey { kind: KIND_MEMCG, tgid: 1, memcg_id: 5 }, &lat(3, 50_000), &comm("a"));
        t.add(&HistKey { kind: KIND_MEMCG, tgid: 2, memcg_id: 5 }, &lat(2, 80_000), &comm("b"));
        t.add(&HistKey { kind: KIND_DIRECT, tgid: 1, memcg_id: 6 }, &lat(1, 1_000_000), &comm("a"));
        t.add(&HistKey { kind: KIND_MEMCG, tgid: 1, memcg_id: 5 }, &lat(1, 50_000), &comm("a"));
        assert_eq!(t.procs.len(), 3);
        assert_eq!(t.cgroups.len(), 2);
        assert_eq!(t.procs[&(KIND_MEMCG, 1)].lat.count, 4);
        assert_eq!(t.procs[&(KIND_MEMCG, 1)].comm, "a");
        assert_eq!(t.procs[&(KIND_MEMCG, 1)].memcg(), 5);
        assert_eq!(t.cgroups[&(KIND_MEMCG, 5)].count, 6);
        assert_eq!(t.cgroups[&(KIND_MEMCG, 5)].nr_reclaimed, 12);
        assert_eq!(t.kind_count(KIND_DIRECT), 1);
        assert_eq!(t.kind_count(KIND_MEMCG), 6);
    }

    #[test]
    fn tables_stay_bounded() {
        use memtrace_common::reclaim::KIND_MEMCG;
        let mut t = Tables::default();
        for i in 0..(MAX_ROWS as u32 + 10) {
            t.add(&HistKey { kind: KIND_MEMCG, tgid: i + 1, memcg_id: u64::from(i) + 1 }, &lat(1, 10_000), &comm("x"));
        }
        assert_eq!(t.procs.len(), MAX_ROWS + 1);
        assert_eq!(t.cgroups.len(), MAX_ROWS + 1);
        assert_eq!(t.procs[&(KIND_MEMCG, OTHER_TGID)].lat.count, 10);
        assert_eq!(t.procs[&(KIND_MEMCG, OTHER_TGID)].comm, "(other)");
        assert_eq!(t.folded, 20);
    }
}
