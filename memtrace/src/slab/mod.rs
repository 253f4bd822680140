//! Slab family: who grows which kmem cache, net of frees, with the kernel call sites,
//! processes and cgroups; for dentry, negative vs positive growth and the directories the
//! lookups hit.

mod agent;
mod args;
mod config;
mod hooks;
mod model;
mod names;
mod report;

use aya::Ebpf;

pub use self::args::{Args, Options};
use crate::{
    engine::{
        family::{Agent, AgentContext, Family, Filter, smallest},
        hook::Hook,
        loader::Global,
        sink::View,
    },
    error::Error,
    kernel::Kernel,
};

struct Slab {
    opts: Options,
}

pub fn family(opts: Options) -> Box<dyn Family> {
    Box::new(Slab { opts })
}

impl Family for Slab {
    fn id(&self) -> memtrace_common::Family {
        memtrace_common::Family::Slab
    }

    fn hooks(&self) -> Vec<Hook> {
        hooks::hooks(&self.opts)
    }

    fn globals(&self, kernel: &Kernel, filter: &Filter) -> Vec<Global> {
        config::globals(kernel, filter, &self.opts)
    }

    fn map_sizes(&self, traced: bool) -> Vec<(&'static str, u32)> {
        if traced { config::map_sizes(&self.opts) } else { smallest(memtrace_common::slab::MAP_NAMES) }
    }

    fn agent(&self, ebpf: &mut Ebpf, ctx: &AgentContext) -> Result<Box<dyn Agent>, Error> {
        Ok(Box::new(agent::SlabAgent::new(ebpf, ctx.filter.clone(), self.opts.clone())?))
    }

    fn view(&self) -> Box<dyn View> {
        Box::new(report::SlabView::default())
    }
}
