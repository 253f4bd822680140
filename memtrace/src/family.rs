//! The seam between the tracing session and the probe families. A family contributes BPF
//! globals before load and an agent that consumes its ring-buffer records and kernel maps.
//! Adding a family means: hooks in `hooks::table`, a `globals` contribution, and an arm in
//! `agents`.

use aya::Ebpf;
use memtrace_common::Family;

use crate::{cli::TraceConfig, error::Error, oom, reclaim, shmem, slab, system::Kernel};

/// A BPF global (a `static` in the BPF object) and its value.
pub struct Global {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

impl Global {
    pub fn of<T: aya::Pod>(name: &'static str, v: &T) -> Global {
        // SAFETY: Pod types are plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        Global { name, bytes: bytes.to_vec() }
    }
}

/// Consumes one family's output during a tracing session.
pub trait FamilyAgent {
    fn family(&self) -> Family;
    /// One ring-buffer record of this family; false when it cannot be decoded.
    fn record(&mut self, kind: u32, bytes: &[u8]) -> bool;
    /// Called every `--interval` (families with periodic summaries).
    fn interval(&mut self) {}
    /// Called every `run::HOUSEKEEPING` whatever the interval (deadlines, e.g. a record
    /// that waits for later events).
    fn tick(&mut self) {}
    /// Final summaries, after the programs are detached (maps are still readable).
    fn finish(&mut self) {}
}

/// Per-family options beyond the common ones, from the family's own subcommand.
#[derive(Debug, Clone, Default)]
pub struct FamilyOptions {
    pub oom: oom::Options,
    pub reclaim: reclaim::Options,
    pub shmem: shmem::Options,
    pub slab: slab::Options,
}

/// Every family's globals for this session.
pub fn globals(kernel: &Kernel, families: &[Family], cfg: &TraceConfig) -> Vec<Global> {
    globals_with(kernel, families, cfg, &FamilyOptions::default())
}

/// Every family's globals for this session, with the families' own options.
pub fn globals_with(
    kernel: &Kernel,
    families: &[Family],
    cfg: &TraceConfig,
    opts: &FamilyOptions,
) -> Vec<Global> {
    let mut g = vec![Global::of("LAYOUT", &kernel.layout.layout)];
    // Globals exist in the object whether or not the family is traced.
    g.extend(oom::globals(kernel, cfg));
    g.extend(reclaim::globals(kernel, cfg, &opts.reclaim));
    g.extend(shmem::globals(kernel));
    g.extend(slab::globals(kernel, cfg));
    let _ = families;
    g
}

/// max_entries of maps sized per session (set on the loader before load).
pub fn map_sizes(families: &[Family]) -> Vec<(&'static str, u32)> {
    let mut v = reclaim::map_sizes(families.contains(&Family::Reclaim));
    v.extend(shmem::map_sizes(families.contains(&Family::Shmem)));
    v.extend(slab::map_sizes());
    v
}

/// Agents for the traced families; takes their maps out of the loaded object.
pub fn agents(
    ebpf: &mut Ebpf,
    families: &[Family],
    cfg: &TraceConfig,
    opts: &FamilyOptions,
) -> Result<Vec<Box<dyn FamilyAgent>>, Error> {
    let mut v: Vec<Box<dyn FamilyAgent>> = Vec::new();
    for f in families {
        match f {
            Family::Oom => v.push(Box::new(oom::Agent::new(cfg.clone(), opts.oom.clone()))),
            Family::Reclaim => {
                v.push(Box::new(reclaim::Agent::new(ebpf, cfg.clone(), opts.reclaim.clone())?))
            }
            Family::Shmem => {
                v.push(Box::new(shmem::Agent::new(ebpf, cfg.clone(), opts.shmem.clone())?))
            }
            Family::Slab => {
                v.push(Box::new(slab::Agent::new(ebpf, cfg.clone(), opts.slab.clone())?))
            }
        }
    }
    Ok(v)
}
