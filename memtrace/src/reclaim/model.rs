//! Reclaim latency histograms in the agent: the kernel's log-linear buckets (see
//! `memtrace_common::reclaim::bucket`) folded into HDR histograms, percentiles, and
//! log2-style bars for the terminal.

use hdrhistogram::Histogram;
#[cfg(test)]
use memtrace_common::reclaim::bucket;
use memtrace_common::reclaim::{BUCKETS, Hist, bucket_low, bucket_width};

/// HDR precision: 2 significant digits (1%), finer than the kernel buckets (<= 1/32 from
/// a bucket's midpoint), so the conversion adds little error.
const SIGFIG: u8 = 2;

/// One kernel histogram entry summed over CPUs.
#[derive(Clone, Debug)]
pub struct Summed {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
    pub comm: [u8; 16],
    pub buckets: Vec<u64>,
}

impl Summed {
    pub fn empty() -> Summed {
        Summed { count: 0, total_ns: 0, max_ns: 0, nr_reclaimed: 0, comm: [0; 16], buckets: vec![0; BUCKETS] }
    }

    /// Sums the per-CPU copies of one key.
    pub fn from_cpus<'a>(cpus: impl IntoIterator<Item = &'a Hist>) -> Summed {
        let mut s = Summed::empty();
        for h in cpus {
            if h.count == 0 {
                continue;
            }
            s.count += h.count;
            s.total_ns += h.total_ns;
            s.max_ns = s.max_ns.max(h.max_ns);
            s.nr_reclaimed += h.nr_reclaimed;
            if s.comm[0] == 0 {
                s.comm = h.comm;
            }
            for (a, b) in s.buckets.iter_mut().zip(h.buckets.iter()) {
                *a += u64::from(*b);
            }
        }
        s
    }

    /// Buckets a list of durations the way the kernel does (tests).
    #[cfg(test)]
    pub fn from_durations(ns: &[u64]) -> Summed {
        let mut s = Summed::empty();
        for &v in ns {
            s.count += 1;
            s.total_ns += v;
            s.max_ns = s.max_ns.max(v);
            s.buckets[bucket(v)] += 1;
        }
        s
    }
}

/// A latency distribution: HDR histogram (ns) plus exact count, total and max.
#[derive(Clone, Debug)]
pub struct Latency {
    pub hist: Histogram<u64>,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub nr_reclaimed: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hist: Histogram::new(SIGFIG).expect("valid sigfig"),
            count: 0,
            total_ns: 0,
            max_ns: 0,
            nr_reclaimed: 0,
        }
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
    /// Adds a kernel histogram: each bucket's count at the bucket's midpoint, except one
    /// count of the highest non-empty bucket, recorded at the exact maximum.
    pub fn add(&mut self, s: &Summed) {
        if s.count == 0 {
            return;
        }
        self.count += s.count;
        self.total_ns += s.total_ns;
        self.max_ns = self.max_ns.max(s.max_ns);
        self.nr_reclaimed += s.nr_reclaimed;
        let top = s.buckets.iter().rposition(|&c| c > 0);
        for (i, &c) in s.buckets.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let mid = (bucket_low(i) + bucket_width(i) / 2).max(1);
            if Some(i) == top && s.max_ns > 0 {
                self.record(mid, c - 1);
                self.record(s.max_ns.max(1), 1);
            } else {
                self.record(mid, c);
            }
        }
        // Bucket counts are u32 per CPU and could in theory disagree with the u64 count;
        // the count shown is the kernel's.
    }

    /// Records with auto-resize (`saturating_record*` would clamp to the current top).
    fn record(&mut self, v: u64, n: u64) {
        if n > 0 && self.hist.record_n(v, n).is_err() {
            self.hist.saturating_record_n(v, n);
        }
    }

    pub fn merge(&mut self, o: &Latency) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
        self.nr_reclaimed += o.nr_reclaimed;
        let _ = self.hist.add(&o.hist);
    }

    pub fn percentiles(&self) -> Percentiles {
        let q = |x: f64| self.hist.value_at_quantile(x).min(self.max_ns.max(1));
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
    for v in l.hist.iter_recorded() {
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
        let s = Summed::from_durations(&samples);
        let mut l = Latency::default();
        l.add(&s);
        samples.sort_unstable();
        assert_eq!(l.count, samples.len() as u64);
        assert_eq!(l.hist.len(), samples.len() as u64, "{name}: HDR holds every sample");
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
        let s = Summed::from_durations(&[1_500_000]);
        let mut l = Latency::default();
        l.add(&s);
        let p = l.percentiles();
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
        let s = Summed::from_cpus([&empty, &a, &b]);
        assert_eq!((s.count, s.total_ns, s.max_ns, s.nr_reclaimed), (3, 60, 90, 10));
        assert_eq!(&s.buckets[..2], &[2, 1]);
        assert_eq!(&s.comm[..3], b"dd\0");
    }

    #[test]
    fn bars_cover_every_sample() {
        let ns: Vec<u64> = [3_000u64, 5_000, 6_000, 100_000, 2_000_000].repeat(10);
        let mut l = Latency::default();
        l.add(&Summed::from_durations(&ns));
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
}
