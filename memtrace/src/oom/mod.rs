//! OOM family: each OOM kill and the decision behind it. The kill, the candidates,
//! memory.oom.group members, the victim's exit and the reaper arrive as ring-buffer
//! records; the agent assembles one `oom_kill` record per decision (the model says what it
//! holds), and the view prints it as a block of text.

mod agent;
mod args;
mod config;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod fuzz;
mod hooks;
mod model;
mod report;

use aya::Ebpf;

pub use self::args::{Args, Options};
use self::args::TOP_CANDIDATES;
use crate::{
    engine::{
        family::{Agent, AgentContext, Family, Filter, smallest},
        hook::Hook,
        loader::Global,
        rings::Ring,
        sink::View,
    },
    error::Error,
    kernel::Kernel,
};

struct Oom {
    opts: Options,
}

pub fn family(opts: Options) -> Box<dyn Family> {
    Box::new(Oom { opts })
}

impl Family for Oom {
    fn id(&self) -> memtrace_common::Family {
        memtrace_common::Family::Oom
    }

    fn hooks(&self) -> Vec<Hook> {
        hooks::hooks()
    }

    fn globals(&self, kernel: &Kernel, _filter: &Filter) -> Vec<Global> {
        config::globals(kernel)
    }

    fn map_sizes(&self, traced: bool) -> Vec<(&'static str, u32)> {
        use memtrace_common::oom::{MAP_NAMES, OOM_CANDIDATES, OOM_KILLS};
        // The ring buffers are sized by ring_buffers (one page when not traced).
        let maps: Vec<&'static str> =
            MAP_NAMES.iter().copied().filter(|m| ![OOM_KILLS, OOM_CANDIDATES].contains(m)).collect();
        if traced { Vec::new() } else { smallest(&maps) }
    }

    fn ring_buffers(&self, kernel: &Kernel, _traced: bool) -> Vec<Ring> {
        config::ring_buffers(kernel)
    }

    fn agent(&self, _ebpf: &mut Ebpf, ctx: &AgentContext) -> Result<Box<dyn Agent>, Error> {
        Ok(Box::new(agent::OomAgent::new(ctx.filter.clone(), model::Env::new(Some(ctx.kernel)))))
    }

    /// Each `oom_kill` as its block: the top 10 candidates, or all with --all-candidates.
    fn view(&self) -> Box<dyn View> {
        let page_kib = (crate::kernel::page_size() / 1024) as i64;
        let top = (!self.opts.all_candidates).then_some(TOP_CANDIDATES);
        Box::new(report::OomView::new(page_kib, top))
    }
}
