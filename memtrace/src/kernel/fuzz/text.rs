//! Text inputs: tracefs format files (this machine's, and a corpus copied from a 6.18
//! kernel so the seeds exist without root), mutated with the tokens their parsers look
//! for, into the format parser, the `__print_symbolic` tables, the GFP flag table and
//! the C expression evaluator.

use super::{mutate_bytes, Rng};
use crate::kernel::{
    gfp::{self, Gfp},
    tracefs::{self, Format},
};

/// Format files memtrace reads, as a 6.18 kernel prints them.
const CORPUS: [&str; 12] = [
    include_str!("corpus/kmem_mm_page_alloc.format"),
    include_str!("corpus/kmem_kmalloc.format"),
    include_str!("corpus/kmem_kmem_cache_alloc.format"),
    include_str!("corpus/kmem_kmem_cache_free.format"),
    include_str!("corpus/vmscan_mm_vmscan_direct_reclaim_begin.format"),
    include_str!("corpus/vmscan_mm_vmscan_throttled.format"),
    include_str!("corpus/oom_mark_victim.format"),
    include_str!("corpus/oom_reclaim_retry_zone.format"),
    include_str!("corpus/oom_compact_retry.format"),
    include_str!("corpus/pagemap_mm_lru_insertion.format"),
    include_str!("corpus/filemap_mm_filemap_delete_from_page_cache.format"),
    include_str!("corpus/memcg_mod_memcg_lruvec_state.format"),
];

/// The same tracepoints on this machine, when tracefs is readable.
fn live() -> Vec<String> {
    let Some(t) = tracefs::find() else { return Vec::new() };
    let events = [
        ("kmem", "mm_page_alloc"),
        ("kmem", "kmalloc"),
        ("vmscan", "mm_vmscan_direct_reclaim_begin"),
        ("oom", "reclaim_retry_zone"),
        ("oom", "compact_retry"),
        ("oom", "mark_victim"),
    ];
    events
        .iter()
        .filter_map(|(c, n)| {
            std::fs::read_to_string(t.join("events").join(c).join(n).join("format")).ok()
        })
        .collect()
}

/// What the parsers look for, and what breaks naive ones: nesting, huge numbers,
/// multi-byte characters next to the ASCII delimiters.
const TOKENS: [&str; 28] = [
    "(",
    ")",
    "{",
    "}",
    ",",
    "\"",
    "|",
    "<<",
    ">>",
    "~",
    "-",
    "*",
    "0x",
    "REC->",
    "1UL",
    "18446744073709551616",
    "0xffffffffffffffff",
    "( gfp_t)",
    "__print_flags(REC->gfp_flags, \"|\", ",
    "__print_symbolic(REC->zone_idx, ",
    "{0, \"X\"}",
    "field:",
    "offset:",
    "size:",
    ";",
    "\n\t",
    "é",
    "print fmt: ",
];

/// A mutated copy of `seed`: tokens inserted or repeated (deep nesting), ranges deleted
/// or duplicated, bytes mutated (then read as UTF-8 with replacement characters, which
/// tests every slice boundary).
pub fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 | 1 => {
                let tok = rng.pick(&TOKENS).as_bytes().to_vec();
                let times = if rng.one_in(8) { 1 + rng.below(5000) } else { 1 };
                let ins: Vec<u8> = tok.iter().copied().cycle().take(tok.len() * times).collect();
                b.splice(at..at, ins);
            }
            2 => {
                let end = (at + rng.below(200)).min(b.len());
                b.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(200)).min(b.len());
                let copy = b[at..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, copy);
            }
            _ => mutate_bytes(rng, &mut b),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Whatever the text, every parser returns. True when it still has fields or a table.
pub fn check(text: &str) -> bool {
    let f = Format::parse(text);
    let mut names: Vec<&str> = f.fields.keys().map(String::as_str).collect();
    names.extend(["zone_idx", "result", "priority", "gfp_flags", "reason", ""]);
    for n in names {
        let _ = (f.symbolic(n), f.offset(n));
    }
    let g = Gfp::parse_format(text);
    for mask in [0, 1, 0xcc0, u64::MAX] {
        let _ = g.render(mask);
    }
    // The evaluator on the text's pieces (what parse_format hands it).
    for piece in text.split(['{', '}', '"']).take(64) {
        let _ = gfp::eval(piece);
    }
    !f.fields.is_empty() || !g.table.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_parses_like_the_kernel_prints_it() {
        let mark = Format::parse(CORPUS[6]);
        assert!(mark.offset("pid").is_some());
        let zones = Format::parse(CORPUS[7]).symbolic("zone_idx");
        assert!(zones.iter().any(|(_, n)| n == "Normal"), "{zones:?}");
        assert!(Gfp::parse_format(CORPUS[0]).table.iter().any(|(_, n)| n == "GFP_KERNEL"));
    }

    /// Nesting that recursed once per level, unbounded, before the depth limit.
    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(gfp::eval(&deep), None);
        assert_eq!(gfp::eval(&"~".repeat(100_000)), None);
        assert_eq!(gfp::eval(&format!("{}1", "-".repeat(50))), Some(1), "50 levels are fine");
        assert_eq!(gfp::eval("1 << 18446744073709551615"), None);
    }

    #[test]
    fn fuzz_tracefs_formats_and_print_tables() {
        let mut seeds: Vec<String> = CORPUS.iter().map(|s| s.to_string()).collect();
        seeds.extend(live());
        crate::kernel::fuzz::run(
            "tracefs",
            |rng| {
                let seed = rng.pick(&seeds).clone();
                mutate(rng, &seed)
            },
            |s| s.as_bytes().to_vec(),
            |s| check(s),
        );
    }
}
