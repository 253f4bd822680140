//! `memtrace doctor`: what this kernel offers and what memtrace will use, per hook.
//! The hook verdicts come from real load and attach attempts (then detached), so doctor
//! and a tracing run never disagree.

use std::path::Path;

use serde::Serialize;

use super::registry;
use crate::{
    engine::{
        family::Filter,
        format,
        select::HookOutcome,
        session,
        sink::{self, JsonSink, Sink, Text},
    },
    error::Error,
    kernel::{
        self, Kernel,
        btf::Btf,
        cgroup::{self, MemoryCgroup},
        procfs::{BpfMaps, Procfs},
        tracefs,
    },
};

#[derive(Serialize)]
struct Report {
    #[serde(rename = "type")]
    kind: &'static str,
    kernel: String,
    btf: Check,
    tracefs: Check,
    privileges: Check,
    kprobes: bool,
    lockdown: Option<String>,
    memory_cgroup: Option<MemoryCgroup>,
    layout_missing: Vec<String>,
    /// Members only some features need (e.g. the OOM decision's oom_control).
    layout_optional_missing: Vec<String>,
    hooks: Vec<HookOutcome>,
    /// The `memlock:` of the BPF maps a session with every family holds (what doctor's
    /// own load took), and how many maps.
    bpf_map_bytes: u64,
    bpf_maps: usize,
    /// True when memtrace can trace on this machine.
    ok: bool,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

fn check<T, E: std::fmt::Display>(r: &Result<T, E>, ok: impl FnOnce(&T) -> String) -> Check {
    match r {
        Ok(v) => Check { ok: true, detail: ok(v) },
        Err(e) => Check { ok: false, detail: e.to_string() },
    }
}

fn lockdown() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    // "[none] integrity confidentiality": the bracketed one is active.
    s.split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
}

pub fn run(btf_path: &Path, json: bool) -> Result<(), Error> {
    let privileges = kernel::privileges();
    let btf = kernel::open_btf(btf_path);
    let tracefs = if privileges.is_ok() {
        tracefs::find_or_mount().map_err(|e| e.to_string())
    } else {
        tracefs::find().ok_or_else(|| "not mounted (memtrace mounts it when run as root)".into())
    };
    let mut layout_missing = Vec::new();
    let mut layout_optional_missing = Vec::new();
    let mut hook_outcomes = Vec::new();
    let mut bpf = BpfMaps::default();
    let can_trace = privileges.is_ok() && btf.is_ok() && tracefs.is_ok();
    if can_trace {
        let kernel = Kernel::open(btf_path)?;
        layout_missing = kernel.layout.missing.clone();
        layout_optional_missing = kernel.layout.optional_missing.clone();
        let families = registry::all();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        let (_ebpf, outcomes) =
            session::load_and_attach(&kernel, &families, &names, &Filter::default(), &|| false)?;
        hook_outcomes = outcomes;
        bpf = kernel.procfs.bpf_maps();
    }
    let ok = can_trace && hook_outcomes.iter().any(|o| o.chosen.is_some());
    let report = Report {
        kind: "doctor",
        kernel: kernel::kernel_release(),
        btf: check(&btf, |b: &Btf| format!("{} ({} types)", btf_path.display(), b.len())),
        tracefs: check(&tracefs, |p| p.display().to_string()),
        privileges: check(&privileges, |p| p.to_string()),
        kprobes: kernel::has_kprobes(tracefs.as_deref().ok()),
        lockdown: lockdown(),
        memory_cgroup: cgroup::memory_cgroup(&Procfs::system()),
        layout_missing,
        layout_optional_missing,
        hooks: hook_outcomes,
        bpf_map_bytes: bpf.bytes,
        bpf_maps: bpf.maps,
        ok,
    };
    let printed = if json {
        serde_json::to_value(&report).map_err(std::io::Error::from).and_then(|v| JsonSink::stdout().record(None, &v))
    } else {
        sink::print(&Text::out(render(&report)))
    };
    if let Err(e) = printed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Error::bpf("writing the report", e));
        }
    }
    if ok {
        Ok(())
    } else if let Err(e) = privileges {
        Err(Error::Environment(e))
    } else if let Err(e) = btf {
        Err(e)
    } else if let Err(e) = tracefs {
        Err(Error::Environment(e))
    } else {
        Err(Error::Environment("no hook can be attached on this kernel".into()))
    }
}

fn render(r: &Report) -> String {
    let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
    let mut s = format!("kernel        {}\n", r.kernel);
    s += &format!("btf           {} {}\n", mark(r.btf.ok), r.btf.detail);
    s += &format!("tracefs       {} {}\n", mark(r.tracefs.ok), r.tracefs.detail);
    s += &format!("privileges    {} {}\n", mark(r.privileges.ok), r.privileges.detail);
    s += &format!("kprobes       {}\n", if r.kprobes { "available" } else { "not available" });
    if let Some(l) = &r.lockdown {
        s += &format!("lockdown      {l}\n");
    }
    match &r.memory_cgroup {
        Some(m) => s += &format!("memory cgroup {} at {}\n", m.version, m.mount.display()),
        None => s += "memory cgroup none mounted\n",
    }
    if r.bpf_maps > 0 {
        s += &format!(
            "bpf maps      {} of kernel memory ({} maps, every family traced)\n",
            format::kib((r.bpf_map_bytes / 1024) as i64),
            r.bpf_maps
        );
    }
    for m in &r.layout_missing {
        s += &format!("layout gap    {m}\n");
    }
    for m in &r.layout_optional_missing {
        s += &format!("layout gap    {m} (narrows one feature)\n");
    }
    if !r.hooks.is_empty() {
        s += "\nhooks:\n";
    }
    for h in &r.hooks {
        match &h.chosen {
            Some(c) => {
                s += &format!("  {:<8} {:<28} {}\n", h.family, h.hook, c.strategy);
                if let Some(l) = &c.limits {
                    s += &format!("  {:<8} {:<28}   gap: {l}\n", "", "");
                }
            }
            None => s += &format!("  {:<8} {:<28} GAP (not traced)\n", h.family, h.hook),
        }
        for refusal in &h.refused {
            s += &format!("  {:<8} {:<28}   not {}: {}\n", "", "", refusal.strategy, refusal.reason);
        }
    }
    s
}
