//! Strategy selection: for each hook, the first candidate whose checks pass and whose
//! program loads and attaches wins; every refusal is kept as a reason for doctor.

use aya::{Ebpf, programs::Program};
use serde::{Deserialize, Serialize};

use super::hook::{Candidate, Hook, Strategy};
use crate::kernel::Kernel;

/// A hook that is being traced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attached {
    pub family: String,
    pub hook: String,
    pub strategy: String,
    pub program: String,
    /// What this strategy cannot see, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
}

/// A strategy that was not used, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Refusal {
    pub strategy: String,
    pub reason: String,
}

/// The outcome for one hook.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HookOutcome {
    pub family: String,
    pub hook: String,
    /// The strategy in use, or None: a coverage gap.
    pub chosen: Option<Attached>,
    pub refused: Vec<Refusal>,
}

/// The test-only switch that forces fallbacks in every family:
/// `MEMTRACE_DISABLE=tp_btf,fexit,slab_alloc_tp:named,...` names strategies, programs,
/// `program:variant` candidates, or family switches that a family asks about with
/// [`disabled`].
pub const DISABLE_ENV: &str = "MEMTRACE_DISABLE";

/// Whether `name` is listed in `MEMTRACE_DISABLE`.
pub fn disabled(name: &str) -> bool {
    std::env::var(DISABLE_ENV).is_ok_and(|l| l.split(',').map(str::trim).any(|d| d == name))
}

fn candidate_disabled(c: &Candidate) -> Result<(), String> {
    let variant = format!("{}:{}", c.program, c.variant);
    if disabled(c.strategy.name())
        || disabled(c.program)
        || (!c.variant.is_empty() && disabled(&variant))
    {
        Err(format!("disabled by {DISABLE_ENV}"))
    } else {
        Ok(())
    }
}

/// Walks the hooks of `family`: checks, then load and attach, first success wins. Stops
/// walking as soon as `stop` says so (a signal during start-up): the hooks not reached get
/// no outcome.
pub fn attach_hooks(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    kernel: &Kernel,
    family: &str,
    hooks: &[Hook],
    stop: &dyn Fn() -> bool,
) -> Vec<HookOutcome> {
    let mut outcomes = Vec::new();
    for hook in hooks.iter().filter(|h| h.needed) {
        if stop() {
            break;
        }
        let mut refused = Vec::new();
        let mut chosen = None;
        for c in &hook.candidates {
            let result = candidate_disabled(c)
                .and_then(|()| c.requires.iter().try_for_each(|check| check.eval(kernel)))
                .and_then(|()| attach(ebpf, btf, c));
            match result {
                Ok(()) => {
                    chosen = Some(Attached {
                        family: family.to_string(),
                        hook: hook.name.to_string(),
                        strategy: c.strategy.name().to_string(),
                        program: c.program.to_string(),
                        limits: (!c.limits.is_empty()).then(|| c.limits.to_string()),
                    });
                    break;
                }
                Err(reason) => {
                    log::debug!("{} via {}: {reason}", hook.name, c.strategy.name());
                    refused.push(Refusal { strategy: c.strategy.name().to_string(), reason });
                }
            }
        }
        outcomes.push(HookOutcome {
            family: family.to_string(),
            hook: hook.name.to_string(),
            chosen,
            refused,
        });
    }
    outcomes
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

fn attach(ebpf: &mut Ebpf, btf: &aya::Btf, c: &Candidate) -> Result<(), String> {
    let prog = ebpf
        .program_mut(c.program)
        .ok_or_else(|| format!("program {} is not in the BPF object", c.program))?;
    let load = |e| format!("load: {}", describe(e));
    let attach = |e| format!("attach: {}", describe(e));
    match (c.strategy, prog) {
        (Strategy::TpBtf, Program::BtfTracePoint(p)) => {
            p.load(c.target, btf).map_err(load)?;
            p.attach().map_err(attach)?;
        }
        (Strategy::RawTracepoint, Program::RawTracePoint(p)) => {
            p.load().map_err(load)?;
            p.attach(c.target).map_err(attach)?;
        }
        (Strategy::Tracepoint, Program::TracePoint(p)) => {
            let (cat, name) = c.target.split_once(':').ok_or("bad tracepoint target")?;
            p.load().map_err(load)?;
            p.attach(cat, name).map_err(attach)?;
        }
        (Strategy::Kprobe | Strategy::Kretprobe, Program::KProbe(p)) => {
            p.load().map_err(load)?;
            p.attach(c.target, 0).map_err(attach)?;
        }
        (Strategy::Fentry, Program::FEntry(p)) => {
            p.load(c.target, btf).map_err(load)?;
            p.attach().map_err(attach)?;
        }
        (Strategy::Fexit, Program::FExit(p)) => {
            p.load(c.target, btf).map_err(load)?;
            p.attach().map_err(attach)?;
        }
        (s, _) => return Err(format!("program {} is not a {} program", c.program, s.name())),
    }
    Ok(())
}
