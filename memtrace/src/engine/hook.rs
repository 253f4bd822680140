//! Hooks as data: a kernel event a family needs, and the candidates that can serve it,
//! best first. Families declare them (their hooks.rs); the engine walks them.

use crate::kernel::checks::Check;

/// How a BPF program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    TpBtf,
    RawTracepoint,
    Tracepoint,
    Kprobe,
    Kretprobe,
    Fentry,
    Fexit,
}

impl Strategy {
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::TpBtf => "tp_btf",
            Strategy::RawTracepoint => "raw_tp",
            Strategy::Tracepoint => "tracepoint",
            Strategy::Kprobe => "kprobe",
            Strategy::Kretprobe => "kretprobe",
            Strategy::Fentry => "fentry",
            Strategy::Fexit => "fexit",
        }
    }
}

/// One way to implement a hook.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub strategy: Strategy,
    /// Program name in the BPF object.
    pub program: &'static str,
    /// tp_btf / raw_tp / kprobe / fentry target, or the classic tracepoint "category:name".
    pub target: &'static str,
    /// What this strategy cannot see (empty when complete); reported as a coverage gap.
    pub limits: &'static str,
    /// A name for this candidate when several share a program (the test switch
    /// `MEMTRACE_DISABLE` can name it as `program:variant`); empty otherwise.
    pub variant: &'static str,
    pub requires: Vec<Check>,
}

impl Candidate {
    pub fn new(strategy: Strategy, program: &'static str, target: &'static str) -> Candidate {
        Candidate { strategy, program, target, limits: "", variant: "", requires: Vec::new() }
    }

    /// Adds checks, evaluated after the ones already there.
    pub fn requires(mut self, checks: impl IntoIterator<Item = Check>) -> Candidate {
        self.requires.extend(checks);
        self
    }

    pub fn limits(mut self, limits: &'static str) -> Candidate {
        self.limits = limits;
        self
    }

    pub fn variant(mut self, variant: &'static str) -> Candidate {
        self.variant = variant;
        self
    }
}

/// A kernel event a family needs, with its candidates best first.
#[derive(Clone, Debug)]
pub struct Hook {
    pub name: &'static str,
    pub candidates: Vec<Candidate>,
    /// False when this session's options make the hook unnecessary: it is neither attached
    /// nor reported (it still belongs to the family's table).
    pub needed: bool,
}

impl Hook {
    pub fn new(name: &'static str, candidates: Vec<Candidate>) -> Hook {
        Hook { name, candidates, needed: true }
    }

    pub fn needed(mut self, needed: bool) -> Hook {
        self.needed = needed;
        self
    }
}

/// The three tracepoint candidates of one kernel tracepoint, best first: tp_btf and raw_tp
/// (programs `<prefix>_btf` and `<prefix>_raw`, both requiring the BTF check `$btf`) and the
/// classic tracepoint `<category>:<tp>` (program `<prefix>_tp`, requiring its tracefs
/// fields). Extra checks go to every candidate.
///
/// `tracepoints!("slab_alloc", "kmem", "kmem_cache_alloc", TpArg(2, "struct kmem_cache *"),
/// ["call_site", "ptr"], [Check::Layout(...)])`
#[macro_export]
macro_rules! tracepoints {
    ($prefix:literal, $category:literal, $tp:literal, TpArgs[$($arg:literal),*], [$($field:literal),*] $(, [$($extra:expr),*])?) => {
        $crate::tracepoints!(@make $prefix, $category, $tp,
            $crate::kernel::checks::Check::TpArgs($tp, &[$($arg),*]), [$($field),*] $(, [$($extra),*])?)
    };
    ($prefix:literal, $category:literal, $tp:literal, TpArg($index:literal, $ty:literal), [$($field:literal),*] $(, [$($extra:expr),*])?) => {
        $crate::tracepoints!(@make $prefix, $category, $tp,
            $crate::kernel::checks::Check::TpArg($tp, $index, $ty), [$($field),*] $(, [$($extra),*])?)
    };
    (@make $prefix:literal, $category:literal, $tp:literal, $btf:expr, [$($field:literal),*] $(, [$($extra:expr),*])?) => {{
        use $crate::engine::hook::{Candidate, Strategy};
        let extra: Vec<$crate::kernel::checks::Check> = vec![$($($extra),*)?];
        vec![
            Candidate::new(Strategy::TpBtf, concat!($prefix, "_btf"), $tp)
                .requires([$btf])
                .requires(extra.clone()),
            Candidate::new(Strategy::RawTracepoint, concat!($prefix, "_raw"), $tp)
                .requires([$btf])
                .requires(extra.clone()),
            Candidate::new(Strategy::Tracepoint, concat!($prefix, "_tp"), concat!($category, ":", $tp))
                .requires([$crate::kernel::checks::Check::Fields(
                    concat!($category, ":", $tp),
                    &[$($field),*],
                )])
                .requires(extra),
        ]
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracepoint_candidates_follow_the_naming() {
        let c = crate::tracepoints!("rc_direct_b", "vmscan", "mm_vmscan_direct_reclaim_begin",
            TpArgs["int", "gfp_t"], ["order", "gfp_flags"], [Check::MemcgEnabled]);
        let names: Vec<_> = c.iter().map(|c| (c.strategy, c.program, c.target)).collect();
        assert_eq!(
            names,
            [
                (Strategy::TpBtf, "rc_direct_b_btf", "mm_vmscan_direct_reclaim_begin"),
                (Strategy::RawTracepoint, "rc_direct_b_raw", "mm_vmscan_direct_reclaim_begin"),
                (Strategy::Tracepoint, "rc_direct_b_tp", "vmscan:mm_vmscan_direct_reclaim_begin"),
            ]
        );
        assert!(matches!(c[0].requires[0], Check::TpArgs("mm_vmscan_direct_reclaim_begin", _)));
        assert!(matches!(c[2].requires[0], Check::Fields("vmscan:mm_vmscan_direct_reclaim_begin", _)));
        assert!(c.iter().all(|c| matches!(c.requires[1], Check::MemcgEnabled)));
        let c = crate::tracepoints!("slab_free", "kmem", "kmem_cache_free",
            TpArg(2, "struct kmem_cache *"), ["call_site"]);
        assert_eq!(c[1].requires.len(), 1);
    }
}
