//! OOM family: each OOM kill and the decision behind it. The kill, the candidates,
//! memory.oom.group members, the victim's exit and the reaper arrive as ring-buffer
//! records; the agent assembles one `oom_kill` record per decision.

mod agent;
mod args;
mod config;
mod hooks;
mod report;

use aya::Ebpf;

pub use self::args::{Args, Options};
use crate::{
    engine::{
        family::{Agent, AgentContext, Family, Filter},
        hook::Hook,
        loader::Global,
        sink::{Text, View},
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

    fn map_sizes(&self, _traced: bool) -> Vec<(&'static str, u32)> {
        Vec::new()
    }

    fn agent(&self, _ebpf: &mut Ebpf, ctx: &AgentContext) -> Result<Box<dyn Agent>, Error> {
        Ok(Box::new(agent::OomAgent::new(
            ctx.filter.clone(),
            self.opts.clone(),
            agent::Env::new(Some(ctx.kernel)),
        )))
    }

    fn view(&self) -> Box<dyn View> {
        Box::new(NoView)
    }

}

/// TRANSITIONAL: the agent prints its text itself.
struct NoView;

impl View for NoView {
    fn record(&mut self, _rec: &serde_json::Value) -> Text {
        Text::default()
    }
}
