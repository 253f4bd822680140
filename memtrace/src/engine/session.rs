//! A tracing session: signals first, then load and attach, announce readiness, stream and
//! decode ring-buffer records, drain every traced family's kernel maps on one collection
//! cadence, emit summaries on the output interval, until SIGINT/SIGTERM, --duration, the
//! interval count or a closed output; then detach and print the stats.

use std::{
    collections::BTreeMap,
    task::{Context, Poll},
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use memtrace_common::{EventHeader, event_family, stats};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

use super::{
    family::{Agent, AgentContext, Family, Filter},
    loader::{self, Global},
    records::{EngineRecord, FamilyStats, Gap, Ready, Stats},
    select::{self, HookOutcome},
    sink::{Out, Sinks},
};
use crate::{error::Error, kernel::Kernel};

/// Period of [`Agent::tick`].
pub const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Period of [`Agent::collect`]: every traced family's kernel maps are drained this often,
/// whatever the output interval.
pub const COLLECT: Duration = Duration::from_secs(1);

/// What a command traces and how.
pub struct Plan {
    /// Every family of this build (their globals and map sizes are set even when not traced).
    pub families: Vec<Box<dyn Family>>,
    /// The names of the families to trace.
    pub traced: Vec<&'static str>,
    pub filter: Filter,
    pub duration: Option<Duration>,
    /// Period of [`Agent::interval`], if any.
    pub interval: Option<Duration>,
    /// Stop after this many intervals.
    pub count: Option<u64>,
    pub sinks: Sinks,
}

/// SIGINT and SIGTERM, installed before anything is loaded: a stop at any moment is seen.
pub struct Stop {
    int: Signal,
    term: Signal,
}

impl Stop {
    pub fn install() -> Result<Stop, Error> {
        let int = signal(SignalKind::interrupt()).map_err(|e| Error::bpf("SIGINT handler", e))?;
        let term = signal(SignalKind::terminate()).map_err(|e| Error::bpf("SIGTERM handler", e))?;
        Ok(Stop { int, term })
    }

    /// Whether a stop signal has arrived (without waiting).
    pub fn requested(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.int.poll_recv(&mut cx), Poll::Ready(_))
            || matches!(self.term.poll_recv(&mut cx), Poll::Ready(_))
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Loads the object with every family's globals and map sizes, then attaches the hooks of
/// the `traced` families. Returns the object and each hook's outcome.
pub fn load_and_attach(
    kernel: &Kernel,
    families: &[Box<dyn Family>],
    traced: &[&str],
    filter: &Filter,
) -> Result<(aya::Ebpf, Vec<HookOutcome>), Error> {
    let btf = loader::aya_btf(kernel)?;
    let mut globals = vec![Global::of("LAYOUT", &kernel.layout.layout)];
    let mut sizes = Vec::new();
    for f in families {
        globals.extend(f.globals(kernel, filter));
        sizes.extend(f.map_sizes(traced.contains(&f.name())));
    }
    let mut ebpf = loader::load(&btf, &globals, &sizes)?;
    let mut outcomes = Vec::new();
    for f in families.iter().filter(|f| traced.contains(&f.name())) {
        outcomes.extend(select::attach_hooks(&mut ebpf, &btf, kernel, f.name(), &f.hooks()));
    }
    Ok((ebpf, outcomes))
}

struct Traced {
    id: memtrace_common::Family,
    name: &'static str,
    agent: Box<dyn Agent>,
}

pub async fn run(kernel: Kernel, plan: Plan) -> Result<(), Error> {
    let mut stop = Stop::install()?;
    let started = std::time::Instant::now();
    let Plan { families, traced, filter, duration, interval, count, mut sinks } = plan;
    let (mut ebpf, outcomes) = load_and_attach(&kernel, &families, &traced, &filter)?;
    let attached: Vec<_> = outcomes.iter().filter_map(|o| o.chosen.clone()).collect();
    if attached.is_empty() {
        let why: Vec<String> = outcomes
            .iter()
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
    let ring: RingBuf<MapData> = loader::take_map(&mut ebpf, stats::EVENTS_MAP)?;
    let stats_map: PerCpuArray<MapData, u64> = loader::take_map(&mut ebpf, stats::STATS_MAP)?;
    let ctx = AgentContext { kernel: &kernel, filter: &filter };
    let mut agents = Vec::new();
    for f in families.iter().filter(|f| attached.iter().any(|a| a.family == f.name())) {
        agents.push(Traced { id: f.id(), name: f.name(), agent: f.agent(&mut ebpf, &ctx)? });
    }
    let mut counts: BTreeMap<String, FamilyStats> =
        agents.iter().map(|a| (a.name.to_string(), FamilyStats::default())).collect();
    sinks.engine(&EngineRecord::Ready(ready(&outcomes)));

    // SAFETY: the ring buffer owns its fd and outlives the registration (both live in the
    // AsyncFd until the end of this function).
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::bpf("polling the ring buffer", e))?;
    let now = tokio::time::Instant::now();
    let deadline = duration.map(|d| now + d);
    let mut ticker = interval.map(|d| tokio::time::interval_at(now + d, d));
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut collect = tokio::time::interval_at(now + COLLECT, COLLECT);
    let mut ticks = 0u64;
    let stopped_early = stop.requested();

    while !stopped_early && sinks.broken.is_none() {
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
            () = stop.wait() => break,
            () = sleep => break,
            () = tick => {
                drain(ring.get_mut(), &mut agents, &mut counts, &mut sinks);
                for a in &mut agents {
                    a.agent.collect();
                    a.agent.interval(&mut Out::new(a.name, &mut sinks));
                }
                ticks += 1;
                if count.is_some_and(|c| ticks >= c) {
                    break;
                }
            }
            _ = collect.tick() => {
                agents.iter_mut().for_each(|a| a.agent.collect());
                kernel_counts(&stats_map, &agents, &mut counts);
                sinks.tick(&Stats { duration_s: started.elapsed().as_secs_f64(), families: counts.clone() });
            }
            _ = housekeeping.tick() => {
                for a in &mut agents {
                    a.agent.tick(&mut Out::new(a.name, &mut sinks));
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::bpf("polling the ring buffer", e))?;
                drain(guard.get_inner_mut(), &mut agents, &mut counts, &mut sinks);
                guard.clear_ready();
            }
        }
    }
    // Detach every program (the agents hold the maps they read), then take what arrived
    // before the stop.
    drop(ebpf);
    drain(ring.get_mut(), &mut agents, &mut counts, &mut sinks);
    for a in &mut agents {
        a.agent.collect();
        a.agent.finish(&mut Out::new(a.name, &mut sinks));
    }
    kernel_counts(&stats_map, &agents, &mut counts);
    sinks.engine(&EngineRecord::Stats(Stats {
        duration_s: started.elapsed().as_secs_f64(),
        families: counts,
    }));
    sinks.finish();
    Ok(())
}

fn ready(outcomes: &[HookOutcome]) -> Ready {
    Ready {
        probes: outcomes.iter().filter_map(|o| o.chosen.clone()).collect(),
        gaps: outcomes
            .iter()
            .filter(|o| o.chosen.is_none())
            .map(|g| Gap {
                family: g.family.clone(),
                hook: g.hook.clone(),
                reasons: g.refused.iter().map(|r| format!("{}: {}", r.strategy, r.reason)).collect(),
            })
            .collect(),
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    agents: &mut [Traced],
    counts: &mut BTreeMap<String, FamilyStats>,
    sinks: &mut Sinks,
) {
    while let Some(item) = ring.next() {
        let bytes: &[u8] = &item;
        let family = (bytes.len() >= std::mem::size_of::<EventHeader>())
            .then(|| u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .and_then(|kind| Some((kind, event_family(kind)?)));
        let Some((kind, family)) = family else {
            log::warn!("undecodable record of {} bytes", bytes.len());
            counts.entry("unknown".into()).or_default().undecodable += 1;
            continue;
        };
        let c = counts.entry(family.name().into()).or_default();
        let decoded = agents
            .iter_mut()
            .find(|a| a.id == family)
            .is_some_and(|a| a.agent.record(kind, bytes, &mut Out::new(a.name, sinks)));
        if decoded {
            c.received += 1;
        } else {
            c.undecodable += 1;
        }
    }
}

/// The kernel's per-family counters (per-CPU sums) into `counts`.
fn kernel_counts(
    map: &PerCpuArray<MapData, u64>,
    agents: &[Traced],
    counts: &mut BTreeMap<String, FamilyStats>,
) {
    let read = |idx: u32| -> u64 {
        map.get(&idx, 0).map(|v| v.iter().copied().sum()).unwrap_or_else(|e| {
            log::warn!("reading STATS[{idx}]: {e}");
            0
        })
    };
    for a in agents {
        let Some(c) = counts.get_mut(a.name) else { continue };
        c.events = read(stats::index(a.id, stats::EVENTS));
        c.ringbuf_drops = read(stats::index(a.id, stats::RINGBUF_DROPS));
        c.read_errors = read(stats::index(a.id, stats::READ_ERRORS));
        c.map_full = read(stats::index(a.id, stats::MAP_FULL));
    }
}
