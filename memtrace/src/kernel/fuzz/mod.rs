//! A small fuzzer, run as unit tests, for the readers of bytes memtrace does not control:
//! BTF ([`btf`]: the reader, the layout resolution, aya's parser), tracefs format files
//! and their print formats ([`text`]), and each family's ring-buffer record decoders (in
//! the family, with this driver).
//!
//! It is not coverage-guided: each target mutates real inputs (this machine's BTF and
//! format files, the families' record fixtures) with mutations that know the format (type
//! ids pointing back at their own type, kinds and counts changed, huge sizes, deep
//! nesting, truncation) plus plain byte flips, and checks that the reader returns
//! (an error or a value) without panicking. Deterministic per seed.
//!
//! - `MEMTRACE_FUZZ_SECS`: seconds per target (default 0.3: a smoke run inside every
//!   `cargo test`; `cargo xtask test` gives each target its share of a bounded budget).
//! - `MEMTRACE_FUZZ_SEED`: the seed (default: from the clock; printed at the start).
//! - A panic fails the target after saving the input under the system's temp directory
//!   (`memtrace-fuzz/`); the failure names the file, the seed and the iteration.

pub mod btf;
pub mod text;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::{Duration, Instant},
};

/// splitmix64: tiny, fast, and the same sequence for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.u64() % n as u64) as usize
        }
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    /// Values that break arithmetic and bounds: zero, one, the edges of every width.
    pub fn interesting(&mut self) -> u64 {
        const V: [u64; 16] = [
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            u64::MAX - 1,
        ];
        if self.one_in(4) {
            self.u64()
        } else {
            *self.pick(&V)
        }
    }
}

/// Seconds each target runs.
pub fn budget() -> Duration {
    let secs = std::env::var("MEMTRACE_FUZZ_SECS").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(secs.unwrap_or(0.3).clamp(0.0, 600.0))
}

fn seed() -> u64 {
    std::env::var("MEMTRACE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64
    })
}

/// Runs `check` on inputs made by `make` until the budget is spent (at least once). A
/// panic in `check` saves the input (`bytes` of it) and fails with where it is. `check`
/// returns whether the input got past the first check (it is counted: a target whose
/// inputs are all refused at once tests little).
pub fn run<T>(
    target: &str,
    mut make: impl FnMut(&mut Rng) -> T,
    bytes: impl Fn(&T) -> Vec<u8>,
    check: impl Fn(&T) -> bool,
) {
    let seed = seed();
    // Printed before the first input: a stack overflow aborts without unwinding.
    eprintln!("fuzz {target}: seed {seed} (MEMTRACE_FUZZ_SEED={seed} repeats this run)");
    let mut rng = Rng::new(seed);
    let (start, budget) = (Instant::now(), budget());
    let (mut n, mut deep) = (0u64, 0u64);
    loop {
        let input = make(&mut rng);
        n += 1;
        let result = catch_unwind(AssertUnwindSafe(|| check(&input)));
        deep += u64::from(matches!(result, Ok(true)));
        if result.is_err() {
            let dir = std::env::temp_dir().join("memtrace-fuzz");
            let path = dir.join(format!("{target}-{seed}-{n}"));
            let saved =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes(&input)));
            panic!(
                "fuzz {target}: input {n} of seed {seed} panicked (above); the input is {}",
                match saved {
                    Ok(()) => format!("saved at {}", path.display()),
                    Err(e) => format!("not saved ({e})"),
                }
            );
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    println!(
        "fuzz {target}: {n} inputs ({deep} accepted by the first check) in {:.1} s, no panic \
         (seed {seed})",
        start.elapsed().as_secs_f64()
    );
}

/// Plain byte mutations, 1 to 4 of them: bit flips, interesting bytes and words, a
/// truncation, random bytes appended, inserted or copied over, a range deleted.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        let at = rng.below(len);
        match rng.below(9) {
            0 if len > 0 => data[at] ^= 1 << rng.below(8),
            1 if len > 0 => data[at] = rng.interesting() as u8,
            2 if len >= 4 => {
                let at = rng.below(len / 4) * 4;
                data[at..at + 4].copy_from_slice(&(rng.interesting() as u32).to_le_bytes());
            }
            3 if len >= 8 => {
                let at = rng.below(len / 8) * 8;
                data[at..at + 8].copy_from_slice(&rng.interesting().to_le_bytes());
            }
            4 => data.truncate(at),
            5 => data.extend((0..1 + rng.below(64)).map(|_| rng.u64() as u8)),
            6 if len > 0 => {
                let n = rng.below(16.min(len - at)) + 1;
                let bytes: Vec<u8> = (0..n).map(|_| rng.u64() as u8).collect();
                data.splice(at..at, bytes);
            }
            7 if len > 0 => {
                let end = (at + 1 + rng.below(64)).min(len);
                data.drain(at..end);
            }
            _ if len > 1 => {
                let (from, to) = (rng.below(len), rng.below(len));
                let n = rng.below(64).min(len - from).min(len - to);
                data.copy_within(from..from + n, to);
            }
            _ => data.push(rng.u64() as u8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_repeats_per_seed_and_mutations_stay_in_bounds() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!((a.u64(), a.u64()), (b.u64(), b.u64()));
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let mut d: Vec<u8> = (0..rng.below(40)).map(|i| i as u8).collect();
            mutate_bytes(&mut rng, &mut d);
            assert!(d.len() <= 40 + 4 * 64);
        }
        assert_eq!(rng.below(0), 0);
    }
}
