//! A tracing session: signals first, then open the kernel, load and attach, announce
//! readiness, stream and decode the records of every ring buffer (the shared EVENTS and
//! the traced families' own), drain every traced family's kernel maps on one collection
//! cadence, emit summaries on the output interval, until SIGINT/SIGTERM, --duration, the
//! interval count or a closed output; then detach and print the stats.
//!
//! A stop is honoured at any moment: during the kernel checks and the load (blocking
//! calls: seen as soon as they return), between two hooks' loads and attaches (the
//! verifier can take seconds per program in a VM), and while tracing. Every stop detaches
//! what was attached, prints the `stats` record and exits 0.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    task::Poll,
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use memtrace_common::{EventHeader, event_family, stats};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

use super::{
    family::{Agent, AgentContext, End, Family, Filter},
    loader::{self, Global},
    records::{EngineRecord, FamilyStats, Gap, Ready, Stats},
    rings::{self, Planned},
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

/// Set by the first SIGINT or SIGTERM, in the signal handler itself: the blocking start-up
/// reads it without the runtime.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// SIGINT and SIGTERM. [`Stop::install`] comes first of all (before the kernel is even
/// opened): from then on the first signal only asks the session to stop, at the next
/// point that looks ([`Stop::requested`]); a second one exits at once (status 128 +
/// signal: the kernel detaches the programs as the process's descriptors close).
pub struct Stop {
    /// The runtime's view of the same signals, to wake the session loop.
    signals: Option<(Signal, Signal)>,
}

impl Stop {
    /// Installs the handlers. Needs no runtime.
    pub fn install() -> Result<Stop, Error> {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let action = move || {
                if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(128 + sig) };
                }
            };
            // SAFETY: the action only touches an atomic and calls _exit, both
            // async-signal-safe.
            unsafe { signal_hook_registry::register(sig, action) }
                .map_err(|e| Error::bpf("installing the SIGINT/SIGTERM handlers", e))?;
        }
        Ok(Stop { signals: None })
    }

    /// Whether a stop signal has arrived.
    pub fn requested(&self) -> bool {
        STOP_REQUESTED.load(Ordering::SeqCst)
    }

    /// Registers the signals with the runtime (inside it), for [`Stop::wait`].
    fn listen(&mut self) -> Result<(), Error> {
        let int = signal(SignalKind::interrupt()).map_err(|e| Error::bpf("SIGINT handler", e))?;
        let term = signal(SignalKind::terminate()).map_err(|e| Error::bpf("SIGTERM handler", e))?;
        self.signals = Some((int, term));
        Ok(())
    }

    /// Until a stop signal (at once when one came before [`Stop::listen`]).
    async fn wait(&mut self) {
        if self.requested() {
            return;
        }
        match self.signals.as_mut() {
            Some((int, term)) => tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            },
            None => std::future::pending().await,
        }
    }
}

/// Loads the object with every family's globals and map sizes, then attaches the hooks of
/// the `traced` families, until `stop` says to stop (the hooks not reached are left out).
/// Returns the object and each hook's outcome.
pub fn load_and_attach(
    kernel: &Kernel,
    families: &[Box<dyn Family>],
    traced: &[&str],
    filter: &Filter,
    stop: &dyn Fn() -> bool,
) -> Result<(aya::Ebpf, Vec<HookOutcome>), Error> {
    load(kernel, families, traced, filter, stop).map(|(ebpf, outcomes, _)| (ebpf, outcomes))
}

/// [`load_and_attach`], with the ring buffers of the session and their sizes.
fn load(
    kernel: &Kernel,
    families: &[Box<dyn Family>],
    traced: &[&str],
    filter: &Filter,
    stop: &dyn Fn() -> bool,
) -> Result<(aya::Ebpf, Vec<HookOutcome>, Vec<Planned>), Error> {
    let btf = loader::aya_btf(kernel)?;
    // memtrace's own process, dropped in the kernel (0: --include-self keeps it).
    let me = if filter.include_self { 0 } else { std::process::id() };
    let mut globals = vec![
        Global::of("LAYOUT", &kernel.layout.layout),
        Global::of(memtrace_common::SELF_FILTER, &memtrace_common::SelfFilter::of(me)),
    ];
    let mut sizes = Vec::new();
    for f in families {
        globals.extend(f.globals(kernel, filter));
        sizes.extend(f.map_sizes(traced.contains(&f.name())));
    }
    let rings = rings::plan(kernel, families, traced)?;
    sizes.extend(rings.iter().map(|p| (p.ring.name, p.ring.bytes)));
    let mut ebpf = loader::load(&btf, &globals, &sizes)?;
    let mut outcomes = Vec::new();
    for f in families.iter().filter(|f| traced.contains(&f.name())) {
        outcomes.extend(select::attach_hooks(&mut ebpf, &btf, kernel, f.name(), &f.hooks(), stop));
    }
    Ok((ebpf, outcomes, rings))
}

struct Traced {
    id: memtrace_common::Family,
    name: &'static str,
    agent: Box<dyn Agent>,
}

/// The session of `plan`: opens the kernel (BTF at `btf`), loads, attaches and traces
/// until a stop; `stop` was installed before anything else.
pub async fn run(btf: &Path, plan: Plan, mut stop: Stop) -> Result<(), Error> {
    let started = std::time::Instant::now();
    stop.listen()?;
    let Plan { families, traced, filter, duration, interval, count, mut sinks } = plan;
    let kernel = Kernel::open(btf)?;
    // Stopped before anything was loaded, or while the programs loaded and attached: what
    // was attached is detached (dropped), nothing was traced.
    let stopped_in_startup = |mut sinks: Sinks| {
        log::info!("stopped during start-up, after {:.2}s", started.elapsed().as_secs_f64());
        sinks.engine(&EngineRecord::Stats(Stats {
            duration_s: started.elapsed().as_secs_f64(),
            families: BTreeMap::new(),
            before_tracing: true,
        }));
        sinks.finish();
        Ok(())
    };
    if stop.requested() {
        return stopped_in_startup(sinks);
    }
    let (mut ebpf, outcomes, planned) =
        load(&kernel, &families, &traced, &filter, &|| stop.requested())?;
    if stop.requested() {
        drop(ebpf);
        return stopped_in_startup(sinks);
    }
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
    let stats_map: PerCpuArray<MapData, u64> = loader::take_map(&mut ebpf, stats::STATS_MAP)?;
    let ctx = AgentContext { kernel: &kernel, filter: &filter };
    let mut agents = Vec::new();
    for f in families.iter().filter(|f| attached.iter().any(|a| a.family == f.name())) {
        agents.push(Traced { id: f.id(), name: f.name(), agent: f.agent(&mut ebpf, &ctx)? });
    }
    let mut counts: BTreeMap<String, FamilyStats> =
        agents.iter().map(|a| (a.name.to_string(), FamilyStats::default())).collect();
    // EVENTS and the rings of the families that have an agent, in the plan's order (the
    // order every drain reads them in).
    let mut rings = Vec::new();
    let polled = |p: &&Planned| p.family.is_none_or(|f| agents.iter().any(|a| a.name == f));
    for p in planned.iter().filter(polled) {
        let ring: RingBuf<MapData> = loader::take_map(&mut ebpf, p.ring.name)?;
        // SAFETY: the ring buffer owns its fd and outlives the registration (both live in
        // the AsyncFd until the end of this function).
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| Error::bpf(format!("polling the ring buffer {}", p.ring.name), e))?;
        rings.push(fd);
    }
    sinks.engine(&EngineRecord::Ready(ready(&kernel, &outcomes)));
    let now = tokio::time::Instant::now();
    let deadline = duration.map(|d| now + d);
    let mut ticker = interval.map(|d| tokio::time::interval_at(now + d, d));
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut collect = tokio::time::interval_at(now + COLLECT, COLLECT);
    let mut ticks = 0u64;
    let mut end = End::default();

    while !stop.requested() && sinks.broken.is_none() {
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
                drain(&mut rings, &mut agents, &mut counts, &mut sinks);
                for a in &mut agents {
                    a.agent.collect();
                    a.agent.interval(&mut Out::new(a.name, &mut sinks));
                }
                ticks += 1;
                if count.is_some_and(|c| ticks >= c) {
                    end.by_count = true;
                    break;
                }
            }
            _ = collect.tick() => {
                agents.iter_mut().for_each(|a| a.agent.collect());
                kernel_counts(&stats_map, &agents, &mut counts);
                sinks.tick(&Stats { duration_s: started.elapsed().as_secs_f64(), families: counts.clone(), before_tracing: false });
            }
            _ = housekeeping.tick() => {
                for a in &mut agents {
                    a.agent.tick(&mut Out::new(a.name, &mut sinks));
                }
                // A reader that left stops the session even when nothing is written.
                sinks.check();
            }
            ready = readable(&mut rings) => {
                ready.map_err(|e| Error::bpf("polling the ring buffers", e))?;
                drain(&mut rings, &mut agents, &mut counts, &mut sinks);
            }
        }
    }
    // Detach every program (the agents hold the maps they read), then take what arrived
    // before the stop.
    drop(ebpf);
    drain(&mut rings, &mut agents, &mut counts, &mut sinks);
    for a in &mut agents {
        a.agent.collect();
        a.agent.finish(&mut Out::new(a.name, &mut sinks), end);
    }
    kernel_counts(&stats_map, &agents, &mut counts);
    sinks.engine(&EngineRecord::Stats(Stats {
        duration_s: started.elapsed().as_secs_f64(),
        families: counts,
        before_tracing: false,
    }));
    sinks.finish();
    Ok(())
}

fn ready(kernel: &Kernel, outcomes: &[HookOutcome]) -> Ready {
    let maps = kernel.procfs.bpf_maps();
    Ready {
        bpf_map_bytes: maps.bytes,
        bpf_maps: maps.maps,
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

/// Waits until one of the ring buffers has records, and clears the readiness of those
/// that do: the caller then drains them all (a record written meanwhile makes its ring
/// ready again).
async fn readable(rings: &mut [AsyncFd<RingBuf<MapData>>]) -> std::io::Result<()> {
    std::future::poll_fn(|cx| {
        let mut any = false;
        for r in rings.iter_mut() {
            match r.poll_read_ready_mut(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    guard.clear_ready();
                    any = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        if any { Poll::Ready(Ok(())) } else { Poll::Pending }
    })
    .await
}

/// Every record of every ring buffer to the agent of the family its header names.
fn drain(
    rings: &mut [AsyncFd<RingBuf<MapData>>],
    agents: &mut [Traced],
    counts: &mut BTreeMap<String, FamilyStats>,
    sinks: &mut Sinks,
) {
    for ring in rings {
        drain_one(ring.get_mut(), agents, counts, sinks);
    }
}

fn drain_one(
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
        c.sent = read(stats::index(a.id, stats::SENT));
    }
}
