//! Reclaim family: how long tasks stall in direct, memcg, soft-limit and node reclaim,
//! reclaim throttling, direct compaction and memory.high; per process and per cgroup as
//! HDR histograms, slow stalls listed, with the system context that explains them.
//!
//! Files: args.rs (options), hooks.rs (the hook table), config.rs (BPF global, map sizes),
//! agent.rs (kernel maps -> records), model.rs (histograms, tables), context.rs (vmstat,
//! PSI, zones, sysctls, notes), records.rs (the records), report.rs (records -> text).

mod agent;
mod args;
mod config;
mod context;
#[cfg(test)]
mod fuzz;
mod hooks;
mod model;
mod records;
mod report;

use aya::Ebpf;

pub use self::args::{Args, Options};
use crate::{
    engine::{
        family::{Agent, AgentContext, Family, Filter},
        hook::Hook,
        loader::Global,
        sink::View,
    },
    error::Error,
    kernel::Kernel,
};

struct Reclaim {
    opts: Options,
}

pub fn family(opts: Options) -> Box<dyn Family> {
    Box::new(Reclaim { opts })
}

impl Family for Reclaim {
    fn id(&self) -> memtrace_common::Family {
        memtrace_common::Family::Reclaim
    }

    fn hooks(&self) -> Vec<Hook> {
        hooks::hooks()
    }

    fn globals(&self, kernel: &Kernel, filter: &Filter) -> Vec<Global> {
        config::globals(kernel, filter, &self.opts)
    }

    fn map_sizes(&self, traced: bool) -> Vec<(&'static str, u32)> {
        config::map_sizes(traced)
    }

    fn agent(&self, ebpf: &mut Ebpf, ctx: &AgentContext) -> Result<Box<dyn Agent>, Error> {
        Ok(Box::new(agent::ReclaimAgent::new(ebpf, ctx.kernel, ctx.filter, self.opts.clone())?))
    }

    fn view(&self) -> Box<dyn View> {
        Box::new(report::ReclaimView::new(&self.opts))
    }
}
