//! The seam between the engine and a probe family. A family declares its hooks, its BPF
//! globals and map sizes, and makes an agent that turns its ring-buffer records and kernel
//! maps into typed records, and a view that turns those records into text. The engine
//! never names a family: app/registry.rs hands it the list.

use aya::Ebpf;

use super::{
    hook::Hook,
    loader::Global,
    rings::Ring,
    sink::{Out, View},
};
use crate::{error::Error, kernel::Kernel};

/// The filters every tracing command shares, validated.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this process (pid or tgid).
    pub pid: Option<u32>,
    /// Only this memory cgroup or below ("/a/b", relative to the memory hierarchy).
    pub cgroup: Option<String>,
    /// Keep memtrace's own events (dropped in the kernel otherwise).
    pub include_self: bool,
}

/// What an agent is made with.
pub struct AgentContext<'a> {
    pub kernel: &'a Kernel,
    pub filter: &'a Filter,
}

pub trait Family {
    /// The family's number in the shared records (stats slots, record kinds).
    fn id(&self) -> memtrace_common::Family;

    fn name(&self) -> &'static str {
        self.id().name()
    }

    /// The family's hooks, each with its candidates best first (all of them: those this
    /// session's options do not need are marked so).
    fn hooks(&self) -> Vec<Hook>;

    /// The family's BPF globals for this session (set whether or not it is traced).
    fn globals(&self, kernel: &Kernel, filter: &Filter) -> Vec<Global>;

    /// max_entries of the family's sized maps; `traced` false: every map of the family as
    /// small as possible ([`smallest`]; its ring buffers are sized by [`Family::ring_buffers`]).
    fn map_sizes(&self, traced: bool) -> Vec<(&'static str, u32)>;

    /// The family's own ring buffers, if its records need channels of their own besides
    /// the shared EVENTS (e.g. records that must never be crowded out), sized for this
    /// host. The engine sizes them at load (one page each when the family is not traced)
    /// and polls those of a traced family with EVENTS.
    fn ring_buffers(&self, _kernel: &Kernel, _traced: bool) -> Vec<Ring> {
        Vec::new()
    }

    /// The agent of a traced family; it takes its maps out of the loaded object.
    fn agent(&self, ebpf: &mut Ebpf, ctx: &AgentContext) -> Result<Box<dyn Agent>, Error>;

    /// The text view of the family's records (every record's `"type"` starts with the
    /// family's name and `_`: that is how recorded records find their view).
    fn view(&self) -> Box<dyn View>;
}

/// The maps of a family that is not traced: one entry each, the least the kernel takes
/// (its programs are not loaded; the maps exist because the object declares them). Ring
/// buffers are not given here: `rings::plan` makes those of an untraced family one page.
pub fn smallest(maps: &[&'static str]) -> Vec<(&'static str, u32)> {
    maps.iter().map(|&m| (m, 1)).collect()
}

/// A ring-buffer record of type `T` from its bytes (unaligned); None when too short.
pub fn decode<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; the record types are #[repr(C)] plain data (memtrace-common);
    // the read is unaligned-safe.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// How a session ended, for the agents' final records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// The COUNTth interval ended it: that interval was just emitted, so a family needs no
    /// partial last one.
    pub by_count: bool,
}

/// Consumes one family's kernel output during a session and emits its typed records.
pub trait Agent {
    /// One ring-buffer record of this family (`kind` from its header); false when it cannot
    /// be decoded.
    fn record(&mut self, kind: u32, bytes: &[u8], out: &mut Out) -> bool;

    /// Every [`super::session::HOUSEKEEPING`] (deadlines, e.g. a record that waits for later
    /// events).
    fn tick(&mut self, _out: &mut Out) {}

    /// Every [`super::session::COLLECT`], whatever the output interval, and before every
    /// interval and the end: read and drain the family's kernel maps into the agent.
    fn collect(&mut self) {}

    /// Every output interval: the interval's records.
    fn interval(&mut self, _out: &mut Out) {}

    /// After the programs are detached (the agent's maps are still readable): the final
    /// records.
    fn finish(&mut self, _out: &mut Out, _end: End) {}
}
