//! Cumulative kernel counters in, per-period deltas and totals out, with a bounded memory:
//! every reading's change is added to the current period until the period is taken; keys
//! the kernel map drops (pruned when the map fills) are folded into totals, and folded
//! keys beyond a cap collapse into one overflow key per group. Also the rankings the
//! records are emitted in.

use std::{collections::HashMap, hash::Hash};

/// Allocations and frees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allocs: u64,
    pub frees: u64,
}

impl Counts {
    pub fn net(&self) -> i64 {
        self.allocs as i64 - self.frees as i64
    }

    pub fn is_zero(&self) -> bool {
        self.allocs == 0 && self.frees == 0
    }

    pub fn add(&mut self, o: Counts) {
        self.allocs += o.allocs;
        self.frees += o.frees;
    }

    /// `self - prev`, or nothing when a counter reads lower than before: the kernel moves
    /// counts between two places the agent reads one after the other (a per-CPU slot and
    /// the hash map), so a reading can transiently miss some; the next one has them.
    pub fn since(&self, prev: Counts) -> Counts {
        Counts {
            allocs: self.allocs.saturating_sub(prev.allocs),
            frees: self.frees.saturating_sub(prev.frees),
        }
    }

    fn max(&self, o: Counts) -> Counts {
        Counts { allocs: self.allocs.max(o.allocs), frees: self.frees.max(o.frees) }
    }
}

/// Cumulative counters of one kernel map.
pub struct Cumulative<K> {
    /// Last values read from the kernel.
    prev: HashMap<K, Counts>,
    /// Changes since the period was last taken.
    period: HashMap<K, Counts>,
    /// Keys no longer in the kernel map, with their final values.
    folded: HashMap<K, Counts>,
    /// Most folded keys kept individually.
    fold_cap: usize,
}

impl<K: Hash + Eq + Clone> Cumulative<K> {
    pub fn new(fold_cap: usize) -> Self {
        Cumulative {
            prev: HashMap::new(),
            period: HashMap::new(),
            folded: HashMap::new(),
            fold_cap,
        }
    }

    /// Takes a new reading of the whole map; returns the change per key since the last one
    /// (also added to the period). Keys missing from the reading keep their last values.
    pub fn update(&mut self, cur: HashMap<K, Counts>) -> HashMap<K, Counts> {
        let mut delta = HashMap::new();
        for (k, v) in cur {
            let prev = self.prev.get(&k).copied().unwrap_or_default();
            let d = v.since(prev);
            if !d.is_zero() {
                self.period.entry(k.clone()).or_default().add(d);
                delta.insert(k.clone(), d);
            }
            self.prev.insert(k, v.max(prev));
        }
        delta
    }

    /// The changes since the last call (or the start): one period's deltas.
    pub fn take_period(&mut self) -> HashMap<K, Counts> {
        std::mem::take(&mut self.period)
    }

    /// Whether anything changed since the period was last taken.
    pub fn period_is_empty(&self) -> bool {
        self.period.is_empty()
    }

    /// Keeps room in a kernel map of `max` rows: past 80% full, every key that did not
    /// change in `delta` (the last reading's) and that `busy` does not hold back is removed
    /// with `remove` and, when that succeeds, folded (its total stays here, beyond the cap
    /// under `overflow(k)`). Returns how many were removed.
    pub fn prune(
        &mut self,
        delta: &HashMap<K, Counts>,
        max: u32,
        busy: impl Fn(&K) -> bool,
        mut remove: impl FnMut(&K) -> bool,
        overflow: impl Fn(&K) -> K,
    ) -> u64 {
        if self.prev.len() as u64 * 5 <= u64::from(max) * 4 {
            return 0;
        }
        let idle: Vec<K> = self.idle(delta).filter(|k| !busy(k)).cloned().collect();
        let mut removed = 0;
        for k in idle {
            if remove(&k) {
                removed += 1;
                self.fold(&k, &overflow);
            }
        }
        removed
    }

    /// Keys of the last reading that did not change in `delta` (prune candidates).
    pub fn idle<'a>(&'a self, delta: &'a HashMap<K, Counts>) -> impl Iterator<Item = &'a K> {
        self.prev.keys().filter(move |k| !delta.contains_key(*k))
    }

    /// The kernel dropped `k` (after the last reading): keep its total. Beyond the cap the
    /// total goes to `overflow(k)` instead.
    pub fn fold(&mut self, k: &K, overflow: impl Fn(&K) -> K) {
        let Some(v) = self.prev.remove(k) else { return };
        let key = if self.folded.len() < self.fold_cap || self.folded.contains_key(k) {
            k.clone()
        } else {
            overflow(k)
        };
        self.folded.entry(key).or_default().add(v);
    }

    /// Totals since the start: folded keys plus the last reading.
    pub fn totals(&self) -> HashMap<K, Counts> {
        let mut t = self.folded.clone();
        for (k, v) in &self.prev {
            t.entry(k.clone()).or_default().add(*v);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.prev.len()
    }
}

/// Groups rows by `group(key)` and sums them.
pub fn group_by<K, G: Hash + Eq>(
    rows: &HashMap<K, Counts>,
    group: impl Fn(&K) -> G,
) -> HashMap<G, Counts> {
    let mut out: HashMap<G, Counts> = HashMap::new();
    for (k, v) in rows {
        out.entry(group(k)).or_default().add(*v);
    }
    out
}

/// The `n` entries with the largest net growth (then most allocations, then key order for
/// a stable output).
pub fn top_by_net<G: Ord + Clone>(rows: &HashMap<G, Counts>, n: usize) -> Vec<(G, Counts)> {
    let mut v: Vec<(G, Counts)> = rows.iter().map(|(k, c)| (k.clone(), *c)).collect();
    v.sort_by(|a, b| {
        b.1.net().cmp(&a.1.net()).then(b.1.allocs.cmp(&a.1.allocs)).then(a.0.cmp(&b.0))
    });
    v.truncate(n);
    v
}

/// Every non-zero entry, largest net growth first (the order caches are emitted in).
pub fn ranked_by_net<G: Ord + Clone>(rows: &HashMap<G, Counts>) -> Vec<(G, Counts)> {
    let mut v = top_by_net(rows, rows.len());
    v.retain(|(_, c)| !c.is_zero());
    v
}

/// A directory recorded relative to `base` (a cwd, or a dirfd's description).
pub fn join_dir(base: &str, rel: &str) -> String {
    if rel.is_empty() { base.to_string() } else { format!("{}/{rel}", base.trim_end_matches('/')) }
}

/// The `n` entries with the most frees (for a shrinking cache: who released it).
pub fn top_by_frees<G: Ord + Clone>(rows: &HashMap<G, Counts>, n: usize) -> Vec<(G, Counts)> {
    let mut v: Vec<(G, Counts)> = rows.iter().map(|(k, c)| (k.clone(), *c)).collect();
    v.sort_by(|a, b| b.1.frees.cmp(&a.1.frees).then(a.1.net().cmp(&b.1.net())).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(a: u64, f: u64) -> Counts {
        Counts { allocs: a, frees: f }
    }

    #[test]
    fn deltas_and_totals() {
        let mut m = Cumulative::new(10);
        let d = m.update(HashMap::from([("a", c(10, 2)), ("b", c(5, 5))]));
        assert_eq!(d["a"], c(10, 2));
        let d = m.update(HashMap::from([("a", c(15, 2)), ("b", c(5, 5)), ("c", c(1, 0))]));
        assert_eq!(d.len(), 2, "b did not change");
        assert_eq!(d["a"], c(5, 0));
        assert_eq!(d["c"], c(1, 0));
        assert_eq!(m.totals()["a"], c(15, 2));
        assert_eq!(c(15, 2).net(), 13);
        assert_eq!(c(1, 4).net(), -3);
    }

    #[test]
    fn transient_undercounts_are_not_counted_twice() {
        let mut m = Cumulative::new(10);
        m.update(HashMap::from([("a", c(100, 10))]));
        // 5 allocations are in flight between the two places the agent reads.
        let d = m.update(HashMap::from([("a", c(95, 10))]));
        assert!(d.is_empty());
        let d = m.update(HashMap::from([("a", c(103, 12))]));
        assert_eq!(d["a"], c(3, 2));
        assert_eq!(m.totals()["a"], c(103, 12));
        // Keys missing from a reading keep their totals.
        m.update(HashMap::new());
        assert_eq!(m.totals()["a"], c(103, 12));
    }

    #[test]
    fn folded_keys_keep_their_totals_within_a_bound() {
        let mut m = Cumulative::new(2);
        let first: HashMap<u32, Counts> = (0..5).map(|i| (i, c(10, 1))).collect();
        let d = m.update(first.clone());
        let d2 = m.update(first);
        assert!(d2.is_empty());
        let mut idle: Vec<u32> = m.idle(&d2).copied().collect();
        idle.sort();
        assert_eq!(idle, vec![0, 1, 2, 3, 4]);
        for k in &idle {
            m.fold(k, |_| 999);
        }
        assert_eq!(m.len(), 0);
        let t = m.totals();
        assert_eq!(t.len(), 3, "two kept individually, the rest in the overflow key: {t:?}");
        assert_eq!(t[&999], c(30, 3));
        let sum: u64 = t.values().map(|v| v.allocs).sum();
        assert_eq!(sum, 50, "nothing lost");
        assert!(!d.is_empty());
    }

    #[test]
    fn periods_add_up_to_the_totals_across_readings_and_prunes() {
        let mut m = Cumulative::new(1);
        m.update(HashMap::from([("a", c(10, 0)), ("b", c(4, 1))]));
        let d = m.update(HashMap::from([("a", c(15, 2)), ("b", c(4, 1))]));
        let first = m.take_period();
        assert_eq!(
            first,
            HashMap::from([("a", c(15, 2)), ("b", c(4, 1))]),
            "two readings, one period"
        );
        assert!(m.period_is_empty());
        // Under 80% of 3 rows: nothing pruned.
        assert_eq!(m.prune(&d, 3, |_| false, |_| true, |_| "other"), 0);
        // Over 80% of 2 rows: b (idle) goes, a (changed) and held-back keys stay.
        let mut removed = Vec::new();
        assert_eq!(
            m.prune(
                &d,
                2,
                |k| *k == "x",
                |k| {
                    removed.push(*k);
                    true
                },
                |_| "other"
            ),
            1
        );
        assert_eq!(removed, vec!["b"]);
        assert_eq!(m.len(), 1);
        // b comes back in the kernel from zero: its new counts are new changes.
        m.update(HashMap::from([("a", c(16, 2)), ("b", c(1, 0))]));
        let second = m.take_period();
        assert_eq!(second, HashMap::from([("a", c(1, 0)), ("b", c(1, 0))]));
        let t = m.totals();
        assert_eq!(t["a"], c(16, 2));
        assert_eq!(t["b"], c(5, 1), "folded total plus the new reading");
        // A failed removal keeps the row.
        let d = m.update(HashMap::from([("a", c(16, 2)), ("b", c(1, 0))]));
        assert_eq!(m.prune(&d, 2, |_| false, |_| false, |_| "other"), 0);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn ranks_by_net_growth() {
        let rows = HashMap::from([("x", c(100, 90)), ("y", c(50, 0)), ("z", c(5, 50))]);
        let top = top_by_net(&rows, 2);
        assert_eq!(top.iter().map(|r| r.0).collect::<Vec<_>>(), vec!["y", "x"]);
        let shrink = top_by_frees(&rows, 2);
        assert_eq!(shrink.iter().map(|r| r.0).collect::<Vec<_>>(), vec!["x", "z"]);
        let g = group_by(&rows, |k| *k != "z");
        assert_eq!(g[&true], c(150, 90));
        let mut all = rows.clone();
        all.insert("idle", c(0, 0));
        let ranked: Vec<&str> = ranked_by_net(&all).iter().map(|r| r.0).collect();
        assert_eq!(ranked, vec!["y", "x", "z"], "every changed entry, by net growth");
        assert_eq!(join_dir("/home/u", ""), "/home/u");
        assert_eq!(join_dir("/", "src"), "/src");
        assert_eq!(join_dir("/home/u/", "a/b"), "/home/u/a/b");
    }
}
