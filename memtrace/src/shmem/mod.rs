//! Shmem family: where shmem lives (tmpfs mounts, /dev/shm, memfd, SysV shm, shared
//! anonymous memory), who put it there (even if gone), and how that reconciles with
//! /proc/meminfo Shmem and `df`.

mod agent;
mod args;
mod config;
#[cfg(test)]
mod fuzz;
mod hooks;
mod model;
mod mounts;
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

struct Shmem {
    opts: Options,
}

pub fn family(opts: Options) -> Box<dyn Family> {
    Box::new(Shmem { opts })
}

impl Family for Shmem {
    fn id(&self) -> memtrace_common::Family {
        memtrace_common::Family::Shmem
    }

    fn hooks(&self) -> Vec<Hook> {
        hooks::hooks()
    }

    fn globals(&self, kernel: &Kernel, _filter: &Filter) -> Vec<Global> {
        config::globals(kernel)
    }

    fn map_sizes(&self, traced: bool) -> Vec<(&'static str, u32)> {
        config::map_sizes(traced)
    }

    fn agent(&self, ebpf: &mut Ebpf, ctx: &AgentContext) -> Result<Box<dyn Agent>, Error> {
        Ok(Box::new(agent::ShmemAgent::new(ebpf, ctx.filter.clone(), self.opts.clone())?))
    }

    fn view(&self) -> Box<dyn View> {
        Box::new(report::ShmemView::default())
    }
}
