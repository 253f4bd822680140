//! The only file that names every family. The engine walks what it is given here.


use crate::{
    engine::family::Family,
    error::Error,
    oom, reclaim, shmem, slab,
};

use super::cli::Command;

/// Every family of the build (with a command's options) and the names of those it traces.
pub type Selection = (Vec<Box<dyn Family>>, Vec<&'static str>);

/// Every family of this build, with the options `cmd` gives it (defaults for the families
/// the command does not trace), and the names of those it traces.
pub fn for_command(cmd: &Command) -> Result<Selection, Error> {
    let mut o = oom::Options::default();
    let mut r = reclaim::Options::default();
    let mut sl = slab::Options::default();
    let mut sh = shmem::Options::default();
    let traced = match cmd {
        Command::Watch(_) | Command::Doctor(_) | Command::Replay(_) | Command::Dump(_) | Command::Generate(_) => {
            vec!["oom", "reclaim", "slab", "shmem"]
        }
        Command::Oom(c) => {
            o = c.args.validate()?;
            vec!["oom"]
        }
        Command::Reclaim(c) => {
            r = c.args.validate()?;
            vec!["reclaim"]
        }
        Command::Slab(c) => {
            sl = c.args.validate()?;
            vec!["slab"]
        }
        Command::Shmem(c) => {
            sh = c.args.validate()?;
            vec!["shmem"]
        }
    };
    let all = vec![oom::family(o), reclaim::family(r), slab::family(sl), shmem::family(sh)];
    Ok((all, traced))
}

/// Every family with its default options.
pub fn all() -> Vec<Box<dyn Family>> {
    vec![
        oom::family(oom::Options::default()),
        reclaim::family(reclaim::Options::default()),
        slab::family(slab::Options::default()),
        shmem::family(shmem::Options::default()),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

    use super::*;
    use crate::engine::{hook::Strategy, loader::BPF_OBJECT};

    const PROGRAM_KINDS: [&str; 7] =
        ["tp_btf", "raw_tp", "tracepoint", "kprobe", "kretprobe", "fentry", "fexit"];

    /// Program name -> ELF section name ("tp_btf/mark_victim", "kretprobe/oom_badness").
    fn program_sections() -> BTreeMap<String, String> {
        let elf = object::File::parse(BPF_OBJECT).expect("the embedded object is ELF");
        let mut out = BTreeMap::new();
        for sym in elf.symbols() {
            let (Ok(name), Some(idx)) = (sym.name(), sym.section_index()) else { continue };
            let Ok(section) = elf.section_by_index(idx).and_then(|s| s.name().map(str::to_string)) else {
                continue;
            };
            let kind = section.split('/').next().unwrap_or("");
            if sym.kind() == object::SymbolKind::Text && PROGRAM_KINDS.contains(&kind) {
                out.insert(name.to_string(), section);
            }
        }
        out
    }

    /// The section a candidate's program must sit in.
    fn expected_section(strategy: Strategy, target: &str) -> String {
        format!("{}/{}", strategy.name(), target.replace(':', "/"))
    }

    /// The hook tables and the embedded BPF object agree: every candidate's program is
    /// there, in a section of its strategy's kind and target; every program serves exactly
    /// one hook.
    #[test]
    fn hook_tables_match_the_embedded_object() {
        let sections = program_sections();
        let parsed = aya_obj::Object::parse(BPF_OBJECT).expect("aya parses the object");
        let ours: BTreeSet<&String> = sections.keys().collect();
        let theirs: BTreeSet<&String> = parsed.programs.keys().collect();
        assert_eq!(
            ours.symmetric_difference(&theirs).collect::<Vec<_>>(),
            Vec::<&&String>::new(),
            "every program symbol is a program aya sees"
        );
        let mut owners: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let mut problems = Vec::new();
        for f in all() {
            for h in f.hooks() {
                for c in &h.candidates {
                    owners.entry(c.program).or_default().insert(format!("{}/{}", f.name(), h.name));
                    match sections.get(c.program) {
                        None => problems.push(format!("{}: no program {}", h.name, c.program)),
                        Some(s) if *s != expected_section(c.strategy, c.target) => problems.push(format!(
                            "{}: {} is in section {s}, the {} candidate needs {}",
                            h.name,
                            c.program,
                            c.strategy.name(),
                            expected_section(c.strategy, c.target)
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        for (program, hooks) in &owners {
            if hooks.len() != 1 {
                problems.push(format!("{program} serves several hooks: {hooks:?}"));
            }
        }
        for program in sections.keys() {
            if !owners.contains_key(program.as_str()) {
                problems.push(format!("{program} is in the object but no candidate uses it"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(owners.len() > 50, "{} programs", owners.len());
    }

    /// A family that is not traced allocates next to nothing: every one of its maps in
    /// the object gets one entry (per-CPU arrays included), except its ring buffers, which
    /// the family does not size here (`rings::plan` makes them one page).
    #[test]
    fn untraced_families_get_the_smallest_maps() {
        use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF;
        use memtrace_common::{oom, reclaim, shmem, slab};
        let parsed = aya_obj::Object::parse(BPF_OBJECT).expect("aya parses the object");
        let names: BTreeMap<&str, &[&str]> = [
            ("oom", oom::MAP_NAMES),
            ("reclaim", reclaim::MAP_NAMES),
            ("slab", slab::MAP_NAMES),
            ("shmem", shmem::MAP_NAMES),
        ]
        .into();
        for f in all() {
            let sizes: BTreeMap<&str, u32> = f.map_sizes(false).into_iter().collect();
            let mine = names[f.name()];
            let mut checked = 0;
            for (map, m) in parsed.maps.iter().filter(|(m, _)| mine.contains(&m.as_str())) {
                let want = (m.map_type() != BPF_MAP_TYPE_RINGBUF as u32).then_some(&1);
                assert_eq!(sizes.get(map.as_str()), want, "{}: map {map} when not traced", f.name());
                checked += 1;
            }
            assert_eq!(checked, mine.len(), "{}: every map is in the object", f.name());
            assert!(sizes.keys().all(|m| mine.contains(m)), "{}: sizes of another family's maps", f.name());
            // Traced, the sized maps keep their sizes.
            assert!(f.map_sizes(true).iter().all(|(_, n)| *n > 1), "{}", f.name());
        }
    }

    /// Every map-name constant names a map of the object, and every map of the object has
    /// a constant (the agents open maps by these names).
    #[test]
    fn map_name_constants_match_the_embedded_object() {
        use memtrace_common::{oom, reclaim, shmem, slab, stats};
        let parsed = aya_obj::Object::parse(BPF_OBJECT).expect("aya parses the object");
        let in_object: BTreeSet<&str> =
            parsed.maps.keys().map(String::as_str).filter(|m| !m.starts_with('.')).collect();
        let mut constants: BTreeSet<&str> = [stats::EVENTS_MAP, stats::STATS_MAP].into();
        for names in [oom::MAP_NAMES, reclaim::MAP_NAMES, slab::MAP_NAMES, shmem::MAP_NAMES] {
            constants.extend(names.iter().copied());
        }
        assert_eq!(constants, in_object);
    }
}
