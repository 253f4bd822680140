//! The dependency rule, held by a test: kernel -> engine -> families -> app, one way.
//! Every `crate::` path in every source file is checked against what its layer may use,
//! and no family reaches another family's part of memtrace-common.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

const FAMILIES: [&str; 4] = ["oom", "reclaim", "slab", "shmem"];

/// The crate-root modules a file in `layer` may name.
fn allowed(layer: &str) -> Option<Vec<&str>> {
    match layer {
        "kernel" => Some(vec!["kernel", "error"]),
        "engine" => Some(vec!["kernel", "engine", "error"]),
        f if FAMILIES.contains(&f) => Some(vec!["kernel", "engine", "error", f]),
        _ => None, // app, main.rs, error.rs, this file: anything
    }
}

/// The first path segment of every `crate::` path in `src`, grouped imports included
/// (`use crate::{a::x, b}` gives a and b).
fn crate_roots(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `memtrace_common::...` or `$crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the brace group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_segment(&mut out, &item);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            push_segment(&mut out, &item);
        } else {
            push_segment(&mut out, rest);
        }
    }
    out
}

fn push_segment(out: &mut BTreeSet<String>, path: &str) {
    let seg: String =
        path.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if !seg.is_empty() && seg != "self" {
        out.insert(seg);
    }
}

/// Families of memtrace-common a file names (`memtrace_common::slab`, or grouped).
fn common_families(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in FAMILIES {
        let direct = format!("memtrace_common::{f}");
        let grouped = src.match_indices("memtrace_common::{").any(|(i, _)| {
            let body = &src[i..];
            let end = body.find(";").unwrap_or(body.len());
            body[..end]
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == f)
        });
        if src.contains(&direct) || grouped {
            out.insert(f.to_string());
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn layers_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let layer = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("super::super") && !rel.ends_with("layers.rs") {
            broken.push(format!("{}: super::super escapes its layer", rel.display()));
        }
        let Some(ok) = allowed(&layer) else { continue };
        for root in crate_roots(&text) {
            // The engine's `tracepoints!` macro is exported at the crate root.
            let root = if root == "tracepoints" { "engine".to_string() } else { root };
            if !ok.contains(&root.as_str()) {
                broken.push(format!("{}: uses crate::{root}", rel.display()));
            }
        }
        for fam in common_families(&text) {
            if fam != layer {
                broken.push(format!("{}: uses memtrace_common::{fam}", rel.display()));
            }
        }
        if layer == "kernel" && text.contains("aya::programs") {
            broken.push(format!("{}: the kernel layer knows no aya program", rel.display()));
        }
    }
    assert!(broken.is_empty(), "dependency rule broken:\n{}", broken.join("\n"));
    assert!(files.len() > 20, "found the sources ({})", files.len());
}

#[test]
fn the_scanner_sees_every_form_of_path() {
    let roots = crate_roots(
        "use crate::{engine::{a, b}, kernel::x};\nuse crate::error::Error;\nlet y = crate::slab::f();\n\
         $crate::engine::hook::Candidate; memtrace_common::x;",
    );
    assert_eq!(roots.into_iter().collect::<Vec<_>>(), ["engine", "error", "kernel", "slab"]);
    assert_eq!(
        common_families("use memtrace_common::{EventHeader, slab::{A, B}};").into_iter().collect::<Vec<_>>(),
        ["slab"]
    );
    assert!(common_families("use memtrace_common::oom::X;").contains("oom"));
    assert!(common_families("use memtrace_common::{CgroupPath, stats};").is_empty());
}
