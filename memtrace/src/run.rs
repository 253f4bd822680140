//! A tracing session: load, attach, announce readiness, stream and decode ring-buffer
//! records until SIGINT/SIGTERM or --duration, then detach and print the stats.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use memtrace_common::{EventHeader, Family, event_family, stats};
use serde::Serialize;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::TraceConfig,
    error::Error,
    family::{self, FamilyAgent, FamilyOptions},
    hooks, output,
    probes::{self, Attached, Probes},
    system::Kernel,
};

#[derive(Serialize)]
struct Ready<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    probes: Vec<&'a Attached>,
    gaps: Vec<Gap<'a>>,
}

#[derive(Serialize)]
struct Gap<'a> {
    family: &'a str,
    hook: &'a str,
    reasons: Vec<String>,
}

/// Per-family counters for the final stats line.
#[derive(Default, Serialize, Clone, Copy)]
pub struct FamilyStats {
    /// Events the kernel saw.
    pub events: u64,
    /// Records the agent decoded.
    pub received: u64,
    /// Records lost: ring buffer full.
    pub ringbuf_drops: u64,
    /// Records sent with fields that failed to read.
    pub read_errors: u64,
    /// Aggregation map updates that failed (map full).
    pub map_full: u64,
    /// Records the agent could not decode.
    pub undecodable: u64,
}

#[derive(Serialize)]
struct Stats {
    #[serde(rename = "type")]
    kind: &'static str,
    duration_s: f64,
    families: BTreeMap<&'static str, FamilyStats>,
}

/// Period of `FamilyAgent::tick`.
pub const HOUSEKEEPING: std::time::Duration = std::time::Duration::from_millis(100);

/// What a subcommand traces and how.
pub struct Session {
    pub families: Vec<Family>,
    pub cfg: TraceConfig,
    pub opts: FamilyOptions,
    /// Period of `FamilyAgent::interval` calls, if any.
    pub interval: Option<std::time::Duration>,
    /// Stop after this many intervals.
    pub count: Option<u64>,
}

pub async fn trace(kernel: Kernel, session: Session) -> Result<(), Error> {
    let Session { families, cfg, opts, interval, count } = session;
    let globals = family::globals_with(&kernel, &families, &cfg, &opts);
    let mut probes = probes::load_and_attach(&kernel, &families, &globals)?;
    if probes.attached().next().is_none() {
        let why: Vec<String> = probes
            .gaps()
            .map(|g| {
                let reasons: Vec<&str> = g.refused.iter().map(|r| r.reason.as_str()).collect();
                format!("{}: {}", g.hook, reasons.join("; "))
            })
            .collect();
        return Err(Error::Environment(format!(
            "no hook could be attached on this kernel ({}); see `memtrace doctor`",
            why.join(", ")
        )));
    }
    let ring = RingBuf::try_from(probes.ebpf.take_map("EVENTS").expect("EVENTS map"))
        .map_err(|e| Error::bpf("opening the EVENTS ring buffer", e))?;
    let stats_map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(probes.ebpf.take_map("STATS").expect("STATS map"))
            .map_err(|e| Error::bpf("opening the STATS map", e))?;
    let traced: Vec<Family> = families
        .iter()
        .copied()
        .filter(|f| probes.attached().any(|a| a.family == f.name()))
        .collect();
    let mut agents = family::agents(&mut probes.ebpf, &traced, &cfg, &opts)?;
    announce(&probes, &cfg);

    // SAFETY: the ring buffer owns its fd and outlives the registration (both live in
    // the AsyncFd until the end of this function).
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::bpf("polling the ring buffer", e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::bpf("SIGINT handler", e))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| Error::bpf("SIGTERM handler", e))?;
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = interval.map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
    let mut ticks = 0u64;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let started = std::time::Instant::now();
    let mut counts: BTreeMap<&'static str, FamilyStats> =
        traced.iter().map(|f| (f.name(), FamilyStats::default())).collect();

    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep => break,
            () = tick => {
                drain(ring.get_mut(), &mut agents, &mut counts);
                agents.iter_mut().for_each(|a| a.interval());
                ticks += 1;
                if count.is_some_and(|c| ticks >= c) {
                    break;
                }
            }
            _ = housekeeping.tick() => agents.iter_mut().for_each(|a| a.tick()),
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::bpf("polling the ring buffer", e))?;
                drain(guard.get_inner_mut(), &mut agents, &mut counts);
                guard.clear_ready();
            }
        }
    }
    // Detach everything, then take what arrived before the stop.
    drop(probes);
    drain(ring.get_mut(), &mut agents, &mut counts);
    agents.iter_mut().for_each(|a| a.finish());
    emit_stats(&stats_map, &mut counts, started.elapsed().as_secs_f64(), &cfg);
    Ok(())
}

fn announce(probes: &Probes, cfg: &TraceConfig) {
    let attached: Vec<&Attached> = probes.attached().collect();
    let gaps: Vec<Gap> = probes
        .gaps()
        .map(|g| Gap {
            family: g.family,
            hook: g.hook,
            reasons: g.refused.iter().map(|r| format!("{}: {}", r.strategy, r.reason)).collect(),
        })
        .collect();
    if cfg.json {
        output::json_line(&Ready { kind: "ready", probes: attached, gaps });
    } else {
        let list: Vec<String> = attached
            .iter()
            .map(|a| format!("{} via {}", a.hook, a.strategy))
            .collect();
        eprintln!("memtrace: tracing {}. Ctrl-C to stop.", list.join(", "));
        for a in probes.attached().filter(|a| a.limits.is_some()) {
            eprintln!("memtrace: coverage gap: {}: {}", a.hook, a.limits.unwrap_or_default());
        }
        for g in &gaps {
            eprintln!("memtrace: coverage gap: {} not traced: {}", g.hook, g.reasons.join("; "));
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    agents: &mut [Box<dyn FamilyAgent>],
    counts: &mut BTreeMap<&'static str, FamilyStats>,
) {
    while let Some(item) = ring.next() {
        let bytes: &[u8] = &item;
        let kind = (bytes.len() >= std::mem::size_of::<EventHeader>())
            .then(|| u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        let Some((kind, family)) = kind.and_then(|k| Some((k, event_family(k)?))) else {
            log::warn!("undecodable record of {} bytes", bytes.len());
            counts.entry("unknown").or_default().undecodable += 1;
            continue;
        };
        let c = counts.entry(family.name()).or_default();
        let decoded = agents
            .iter_mut()
            .find(|a| a.family() == family)
            .is_some_and(|a| a.record(kind, bytes));
        if decoded {
            c.received += 1;
        } else {
            c.undecodable += 1;
        }
    }
}

fn emit_stats(
    map: &PerCpuArray<MapData, u64>,
    counts: &mut BTreeMap<&'static str, FamilyStats>,
    secs: f64,
    cfg: &TraceConfig,
) {
    let read = |idx: u32| -> u64 {
        map.get(&idx, 0).map(|v| v.iter().copied().sum()).unwrap_or_else(|e| {
            log::warn!("reading STATS[{idx}]: {e}");
            0
        })
    };
    for f in Family::ALL {
        let Some(c) = counts.get_mut(f.name()) else { continue };
        c.events = read(stats::index(f, stats::EVENTS));
        c.ringbuf_drops = read(stats::index(f, stats::RINGBUF_DROPS));
        c.read_errors = read(stats::index(f, stats::READ_ERRORS));
        c.map_full = read(stats::index(f, stats::MAP_FULL));
    }
    if cfg.json {
        output::json_line(&Stats { kind: "stats", duration_s: secs, families: counts.clone() });
    } else {
        eprintln!("memtrace: stopped after {secs:.1}s");
        for (name, c) in counts.iter() {
            eprintln!(
                "memtrace: {name}: {} events, {} received, {} dropped (ring buffer full), {} with \
                 read errors, {} map-full, {} undecodable",
                c.events, c.received, c.ringbuf_drops, c.read_errors, c.map_full, c.undecodable
            );
        }
    }
}

/// Families a subcommand traces, keeping only those this build implements.
pub fn families_for_watch() -> Vec<Family> {
    hooks::implemented()
}
