//! Loads the embedded BPF object with the kernel layout as globals, then walks the hook
//! table: for each hook, the first strategy whose checks pass and which loads and attaches
//! wins; every refusal is kept as a reason for doctor.

use aya::{
    Ebpf, EbpfLoader,
    programs::Program,
};
use memtrace_common::Family;
use serde::Serialize;

use crate::{
    error::Error,
    family::Global,
    hooks::{self, Candidate, Strategy},
    system::Kernel,
};

static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// A hook that is being traced.
#[derive(Clone, Debug, Serialize)]
pub struct Attached {
    pub family: &'static str,
    pub hook: &'static str,
    pub strategy: &'static str,
    pub program: &'static str,
    /// What this strategy cannot see, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<&'static str>,
}

/// A strategy that was not used, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    pub strategy: &'static str,
    pub reason: String,
}

/// The outcome for one hook.
#[derive(Clone, Debug, Serialize)]
pub struct HookOutcome {
    pub family: &'static str,
    pub hook: &'static str,
    /// The strategy in use, or None: a coverage gap.
    pub chosen: Option<Attached>,
    pub refused: Vec<Refusal>,
}

pub struct Probes {
    pub ebpf: Ebpf,
    pub outcomes: Vec<HookOutcome>,
}

impl Probes {
    pub fn attached(&self) -> impl Iterator<Item = &Attached> {
        self.outcomes.iter().filter_map(|o| o.chosen.as_ref())
    }

    pub fn gaps(&self) -> impl Iterator<Item = &HookOutcome> {
        self.outcomes.iter().filter(|o| o.chosen.is_none())
    }
}

/// Loads the object with `globals` set and attaches the hooks of `families`.
pub fn load_and_attach(
    kernel: &Kernel,
    families: &[Family],
    globals: &[Global],
) -> Result<Probes, Error> {
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&kernel.aya_btf));
    for g in globals {
        loader.override_global(g.name, g.bytes.as_slice(), true);
    }
    for (name, n) in crate::family::map_sizes(families) {
        loader.map_max_entries(name, n);
    }
    let mut ebpf =
        loader.load(BPF_OBJECT).map_err(|e| Error::bpf("loading memtrace's BPF object", e))?;
    let mut outcomes = Vec::new();
    for hook in hooks::for_families(families) {
        let mut refused = Vec::new();
        let mut chosen = None;
        for c in &hook.candidates {
            let result = (c.check)(kernel).and_then(|()| attach(&mut ebpf, kernel, c));
            match result {
                Ok(()) => {
                    chosen = Some(Attached {
                        family: hook.family.name(),
                        hook: hook.name,
                        strategy: c.strategy.name(),
                        program: c.program,
                        limits: (!c.limits.is_empty()).then_some(c.limits),
                    });
                    break;
                }
                Err(reason) => {
                    log::debug!("{} via {}: {reason}", hook.name, c.strategy.name());
                    refused.push(Refusal { strategy: c.strategy.name(), reason });
                }
            }
        }
        outcomes.push(HookOutcome {
            family: hook.family.name(),
            hook: hook.name,
            chosen,
            refused,
        });
    }
    Ok(Probes { ebpf, outcomes })
}

/// First line of an error chain plus the tail of a verifier log, short enough for doctor.
fn describe(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let mut lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() > 4 {
        let tail = lines.split_off(lines.len() - 3);
        lines.truncate(1);
        lines.push("...");
        lines.extend(tail);
    }
    lines.join(" | ")
}

fn attach(ebpf: &mut Ebpf, kernel: &Kernel, c: &Candidate) -> Result<(), String> {
    let prog = ebpf
        .program_mut(c.program)
        .ok_or_else(|| format!("program {} is not in the BPF object", c.program))?;
    match (c.strategy, prog) {
        (Strategy::TpBtf, Program::BtfTracePoint(p)) => {
            p.load(c.target, &kernel.aya_btf).map_err(|e| format!("load: {}", describe(e)))?;
            p.attach().map_err(|e| format!("attach: {}", describe(e)))?;
        }
        (Strategy::RawTracepoint, Program::RawTracePoint(p)) => {
            p.load().map_err(|e| format!("load: {}", describe(e)))?;
            p.attach(c.target).map_err(|e| format!("attach: {}", describe(e)))?;
        }
        (Strategy::Tracepoint, Program::TracePoint(p)) => {
            let (cat, name) = c.target.split_once(':').ok_or("bad tracepoint target")?;
            p.load().map_err(|e| format!("load: {}", describe(e)))?;
            p.attach(cat, name).map_err(|e| format!("attach: {}", describe(e)))?;
        }
        (Strategy::Kprobe | Strategy::Kretprobe, Program::KProbe(p)) => {
            p.load().map_err(|e| format!("load: {}", describe(e)))?;
            p.attach(c.target, 0).map_err(|e| format!("attach: {}", describe(e)))?;
        }
        (Strategy::Fentry, Program::FEntry(p)) => {
            p.load(c.target, &kernel.aya_btf).map_err(|e| format!("load: {}", describe(e)))?;
            p.attach().map_err(|e| format!("attach: {}", describe(e)))?;
        }
        (Strategy::Fexit, Program::FExit(p)) => {
            p.load(c.target, &kernel.aya_btf).map_err(|e| format!("load: {}", describe(e)))?;
            p.attach().map_err(|e| format!("attach: {}", describe(e)))?;
        }
        (s, _) => return Err(format!("program {} is not a {} program", c.program, s.name())),
    }
    Ok(())
}

