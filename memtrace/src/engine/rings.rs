//! Ring buffers: the shared `EVENTS` and the families' own, every one sized here at load
//! (a BPF ring buffer's max_entries is its size in bytes: a power of two and a multiple
//! of the page size). The session polls EVENTS and the rings of every traced family, and
//! hands each record to the family its header names, whichever ring it came on.

use memtrace_common::stats::EVENTS_MAP;

use super::family::Family;
use crate::{error::Error, kernel::Kernel};

/// A ring buffer and its size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub name: &'static str,
    pub bytes: u32,
}

/// A ring of this session, with the family that owns it (None: the shared EVENTS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub family: Option<&'static str>,
    pub ring: Ring,
}

/// Test only: `MEMTRACE_RING_BYTES_<NAME>=BYTES` sets ring buffer NAME's size (e.g.
/// `MEMTRACE_RING_BYTES_EVENTS=4096`), to make drops happen.
pub const BYTES_ENV: &str = "MEMTRACE_RING_BYTES_";

/// EVENTS per CPU: every CPU may write at once while the agent sleeps.
const EVENTS_PER_CPU: u64 = 128 << 10;
const EVENTS_MIN: u64 = 1 << 20;
const EVENTS_MAX: u64 = 16 << 20;
/// The kernel's header in front of every record (8 bytes; records are 8-byte aligned).
const RECORD_HEADER: u64 = 8;

fn page() -> u64 {
    crate::kernel::page_size().max(4096)
}

/// The smallest ring buffer: one page (the rings of a family that is not traced).
pub fn smallest() -> u32 {
    page() as u32
}

/// Room for `records` records of `size` bytes: rounded up to a power of two, at least one
/// page, at most `max` bytes (itself rounded down to a power of two).
pub fn bytes_for(records: u64, size: usize, max: u64) -> u32 {
    let record = (size as u64).div_ceil(8) * 8 + RECORD_HEADER;
    let max = max.clamp(page(), 1 << 31);
    let max = 1u64 << (63 - max.leading_zeros());
    let want = records.saturating_mul(record).clamp(page(), max);
    want.next_power_of_two().min(max) as u32
}

/// EVENTS: [`EVENTS_PER_CPU`] per CPU, from 1 MiB to 16 MiB.
pub fn events_bytes(cpus: u64) -> u32 {
    let want = cpus.max(1).saturating_mul(EVENTS_PER_CPU);
    want.clamp(EVENTS_MIN, EVENTS_MAX).next_power_of_two().min(EVENTS_MAX) as u32
}

/// A ring's size from `MEMTRACE_RING_BYTES_<NAME>` when set (`get` reads the variable).
fn overridden(
    name: &str,
    bytes: u32,
    get: impl Fn(&str) -> Option<String>,
) -> Result<u32, Error> {
    let var = format!("{BYTES_ENV}{name}");
    let Some(v) = get(&var) else { return Ok(bytes) };
    match v.trim().parse::<u32>() {
        Ok(n) if n.is_power_of_two() && u64::from(n) >= page() => Ok(n),
        _ => Err(Error::Usage(format!(
            "{var}={v}: a ring buffer's size is a power of two of at least {} bytes",
            page()
        ))),
    }
}

/// Every ring of the session: EVENTS (sized from the CPUs), then each family's own
/// (sized by the family; as small as possible when it is not traced), each overridden
/// by its `MEMTRACE_RING_BYTES_<NAME>`.
pub fn plan(
    kernel: &Kernel,
    families: &[Box<dyn Family>],
    traced: &[&str],
) -> Result<Vec<Planned>, Error> {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n as u64);
    let mut out = vec![Planned {
        family: None,
        ring: Ring { name: EVENTS_MAP, bytes: events_bytes(cpus) },
    }];
    for f in families {
        let on = traced.contains(&f.name());
        for mut ring in f.ring_buffers(kernel, on) {
            if !on {
                ring.bytes = smallest();
            }
            out.push(Planned { family: Some(f.name()), ring });
        }
    }
    for p in &mut out {
        p.ring.bytes = overridden(p.ring.name, p.ring.bytes, |v| std::env::var(v).ok())?;
        log::info!("ring buffer {}: {} KiB", p.ring.name, p.ring.bytes / 1024);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_of_whole_pages() {
        assert_eq!(bytes_for(0, 120, 8 << 20), 4096, "at least a page");
        // 128 bytes a record (120 + header): 10,000 of them in 2 MiB.
        assert_eq!(bytes_for(10_000, 120, 8 << 20), 2 << 20);
        assert_eq!(bytes_for(8192, 120, 8 << 20), 1 << 20, "exactly 1 MiB");
        assert_eq!(bytes_for(1 << 20, 120, 8 << 20), 8 << 20, "capped");
        assert_eq!(bytes_for(1 << 20, 120, 6 << 20), 4 << 20, "the cap rounded down");
        assert_eq!(events_bytes(2), 1 << 20);
        assert_eq!(events_bytes(12), 2 << 20);
        assert_eq!(events_bytes(1024), 16 << 20);
        for n in [bytes_for(3, 2600, 1 << 20), events_bytes(3)] {
            assert!(n.is_power_of_two() && n % 4096 == 0, "{n}");
        }
    }

    #[test]
    fn the_test_override_is_checked() {
        let env = |v: &'static str| {
            move |name: &str| (name == "MEMTRACE_RING_BYTES_X").then(|| v.to_string())
        };
        assert_eq!(overridden("X", 1 << 20, env("4096")).unwrap(), 4096);
        assert_eq!(overridden("Y", 1 << 20, env("4096")).unwrap(), 1 << 20, "another ring");
        for bad in ["4095", "1024", "0", "lots", "6144"] {
            let e = overridden("X", 1 << 20, env(bad)).unwrap_err();
            assert!(e.to_string().starts_with(&format!("MEMTRACE_RING_BYTES_X={bad}: ")), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }
}
