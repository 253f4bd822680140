//! Bounded label sets: per metric at most N values of its unbounded label (a cgroup, a
//! comm, a cache, a mount) keep their own series; the rest fold into one `other` series,
//! and every fold is counted. Values fold by adding, so a sum over all series stays what
//! it was (counters stay monotonic), and the exporter's memory stays bounded however many
//! cgroups come and go.

use std::collections::BTreeMap;

/// The label value of what was folded.
pub const OTHER: &str = "other";

/// A value that folds into another by adding; `weight` ranks series for the top N.
pub trait Fold: Default {
    fn add(&mut self, other: &Self);
    fn weight(&self) -> f64;
}

impl Fold for u64 {
    fn add(&mut self, other: &Self) {
        *self += other;
    }

    fn weight(&self) -> f64 {
        *self as f64
    }
}

impl Fold for i64 {
    fn add(&mut self, other: &Self) {
        *self += other;
    }

    fn weight(&self) -> f64 {
        self.unsigned_abs() as f64
    }
}

/// Upper bounds of the stall histogram's finite buckets: 2^10 .. 2^35 ns (1.024 µs to
/// 34.4 s, log2). Every power of two is a boundary of the kernel's log-linear buckets, so
/// a kernel bucket falls in exactly one of these.
pub const BUCKET_LOG2_NS: std::ops::RangeInclusive<u32> = 10..=35;
const FINITE: usize = 26;

/// A latency histogram: counts per bucket (the last is +Inf), the sum in seconds, the count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist {
    pub buckets: [u64; FINITE + 1],
    pub sum_s: f64,
    pub count: u64,
}

impl Hist {
    /// The upper bound of bucket `i` in seconds (infinity for the last).
    pub fn bound(i: usize) -> f64 {
        if i < FINITE {
            (1u64 << (BUCKET_LOG2_NS.start() + i as u32)) as f64 * 1e-9
        } else {
            f64::INFINITY
        }
    }

    /// Adds a kernel bucket `[low_ns, high_ns)` of `n` stalls: into the first bucket whose
    /// bound is at least `high_ns` (+Inf past the last, and for the open-ended kernel bucket).
    pub fn add_kernel_bucket(&mut self, _low_ns: u64, high_ns: u64, n: u64) {
        let i = (0..FINITE).find(|&i| (1u64 << (BUCKET_LOG2_NS.start() + i as u32)) >= high_ns).unwrap_or(FINITE);
        self.buckets[i] += n;
    }
}

impl Fold for Hist {
    fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_s += other.sum_s;
        self.count += other.count;
    }

    fn weight(&self) -> f64 {
        self.count as f64
    }
}

/// One metric's series: keyed by the unbounded label's value, then by the values of its
/// other (bounded) labels.
#[derive(Debug)]
pub struct Bounded<V> {
    top: usize,
    kept: BTreeMap<String, BTreeMap<Vec<String>, V>>,
    other: BTreeMap<Vec<String>, V>,
    /// Label values folded into `other` (refused for want of room, evicted, or dead).
    pub dropped: u64,
}

impl<V: Fold> Bounded<V> {
    pub fn new(top: usize) -> Bounded<V> {
        Bounded { top, kept: BTreeMap::new(), other: BTreeMap::new(), dropped: 0 }
    }

    fn total(m: &BTreeMap<Vec<String>, V>) -> f64 {
        m.values().map(Fold::weight).sum()
    }

    /// Adds `delta` to the series (`key`, `rest`). A new key when N are kept takes the
    /// place of the lightest one if it weighs more (that one folds into `other`), else it
    /// folds into `other` itself.
    pub fn add(&mut self, key: &str, rest: Vec<String>, delta: &V) {
        if key == OTHER {
            return self.add_other(rest, delta);
        }
        if let Some(m) = self.kept.get_mut(key) {
            m.entry(rest).or_default().add(delta);
            return;
        }
        if self.kept.len() >= self.top {
            let lightest = self
                .kept
                .iter()
                .map(|(k, m)| (Self::total(m), k))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(w, k)| (w, k.clone()));
            match lightest {
                Some((w, k)) if delta.weight() > w => self.fold(&k),
                _ => return self.add_other(rest, delta),
            }
        }
        self.kept.entry(key.to_string()).or_default().entry(rest).or_default().add(delta);
    }

    /// Adds `delta` to `other` (a value without room, or without a name), counted as folded.
    pub fn add_other(&mut self, rest: Vec<String>, delta: &V) {
        self.dropped += 1;
        self.other.entry(rest).or_default().add(delta);
    }

    /// Folds every series of `key` into `other`.
    pub fn fold(&mut self, key: &str) {
        if let Some(m) = self.kept.remove(key) {
            self.dropped += 1;
            for (rest, v) in m {
                self.other.entry(rest).or_default().add(&v);
            }
        }
    }

    /// Folds the keys `alive` says are gone (dead cgroups).
    pub fn fold_dead(&mut self, alive: impl Fn(&str) -> bool) {
        let dead: Vec<String> = self.kept.keys().filter(|k| !alive(k)).cloned().collect();
        for k in dead {
            self.fold(&k);
        }
    }

    /// Every series: (key, other labels, value), `other` last.
    pub fn series(&self) -> impl Iterator<Item = (&str, &[String], &V)> {
        let kept = self.kept.iter().flat_map(|(k, m)| m.iter().map(move |(r, v)| (k.as_str(), r.as_slice(), v)));
        kept.chain(self.other.iter().map(|(r, v)| (OTHER, r.as_slice(), v)))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.other.is_empty()
    }

    /// How many label values have their own series.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &Bounded<u64>) -> u64 {
        b.series().map(|(_, _, v)| *v).sum()
    }

    #[test]
    fn keeps_the_top_n_and_folds_the_rest_without_losing_counts() {
        let mut b: Bounded<u64> = Bounded::new(2);
        b.add("/a", vec!["memcg".into()], &10);
        b.add("/b", vec!["memcg".into()], &5);
        b.add("/c", vec!["memcg".into()], &1); // lighter than both: folds
        assert_eq!((b.kept(), b.dropped, sum(&b)), (2, 1, 16));
        b.add("/d", vec!["direct".into()], &7); // heavier than /b (5): /b folds
        assert_eq!((b.kept(), b.dropped, sum(&b)), (2, 2, 23));
        let names: Vec<(&str, &[String])> = b.series().map(|(k, r, _)| (k, r)).collect();
        assert_eq!(names.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["/a", "/d", "other"]);
        b.add("/a", vec!["direct".into()], &1);
        b.fold_dead(|k| k == "/a");
        assert_eq!((b.kept(), b.dropped, sum(&b)), (1, 3, 24));
        let other: u64 = b.series().filter(|(k, _, _)| *k == OTHER).map(|(_, _, v)| *v).sum();
        assert_eq!(other, 24 - 11, "other keeps each kind apart and adds");
        assert_eq!(b.series().filter(|(k, _, _)| *k == OTHER).count(), 2, "other per kind");
    }

    #[test]
    fn memory_stays_bounded_while_keys_churn() {
        let mut b: Bounded<Hist> = Bounded::new(50);
        for i in 0..10_000u64 {
            let mut h = Hist::default();
            h.add_kernel_bucket(0, 2048, 1 + i % 7);
            h.count = 1 + i % 7;
            b.add(&format!("/churn-{i}"), vec!["memcg".into()], &h);
            if i % 3 == 0 {
                b.fold(&format!("/churn-{i}"));
            }
        }
        assert!(b.kept() <= 50);
        assert_eq!(b.series().count(), b.kept() + 1);
        let total: u64 = b.series().map(|(_, _, h)| h.count).sum();
        assert_eq!(total, (0..10_000u64).map(|i| 1 + i % 7).sum::<u64>());
    }

    #[test]
    fn kernel_buckets_land_in_exactly_one_log2_bucket() {
        assert!((Hist::bound(0) - 1.024e-6).abs() < 1e-15);
        assert!((Hist::bound(25) - 34.359738368).abs() < 1e-9);
        assert_eq!(Hist::bound(26), f64::INFINITY);
        let mut h = Hist::default();
        h.add_kernel_bucket(0, 64, 1); // below 1.024 µs
        h.add_kernel_bucket(960, 1024, 1); // ends at the first bound
        h.add_kernel_bucket(1024, 1088, 1); // just above it
        h.add_kernel_bucket(14_155_776, 14_680_064, 1); // 14.2-14.7 ms: le 16.8 ms (2^24)
        h.add_kernel_bucket(1 << 36, u64::MAX, 1); // open-ended
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[14], 1);
        assert_eq!(h.buckets[26], 1);
    }
}
