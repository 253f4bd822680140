//! What the running system offers: privileges, BTF, tracefs, kprobes, memory cgroups.
//! Each check says what is missing and what to do about it.

use std::path::{Path, PathBuf};

use crate::{btf::Btf, error::Error, layout, tracefs};

pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process (CapEff from /proc/self/status).
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Can this process load and attach tracing BPF programs?
pub fn privileges() -> Result<&'static str, String> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        Ok("CAP_SYS_ADMIN")
    } else if has(CAP_BPF) && has(CAP_PERFMON) {
        Ok("CAP_BPF+CAP_PERFMON")
    } else {
        Err("memtrace needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN) to load BPF \
             programs: run it with sudo"
            .into())
    }
}

/// Memory cgroup hierarchy in use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemoryCgroup {
    /// "v1" or "v2".
    pub version: &'static str,
    pub mount: PathBuf,
}

/// The memory controller's hierarchy: v2 when the unified hierarchy has the memory
/// controller, else v1's memory mount.
pub fn memory_cgroup() -> Option<MemoryCgroup> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut v1 = None;
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        match f[2] {
            "cgroup2" => {
                let ctl = std::fs::read_to_string(Path::new(f[1]).join("cgroup.controllers"))
                    .unwrap_or_default();
                if ctl.split_whitespace().any(|c| c == "memory") {
                    v2 = Some(PathBuf::from(f[1]));
                }
            }
            "cgroup" if f[3].split(',').any(|o| o == "memory") => v1 = Some(PathBuf::from(f[1])),
            _ => {}
        }
    }
    v2.map(|mount| MemoryCgroup { version: "v2", mount })
        .or(v1.map(|mount| MemoryCgroup { version: "v1", mount }))
}

/// Whether the kernel can create kprobes (CONFIG_KPROBES).
pub fn has_kprobes(tracefs: Option<&Path>) -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || tracefs.is_some_and(|t| t.join("kprobe_events").exists())
}

/// Whether /proc/kallsyms has a text symbol of this name (".isra"/".constprop" clones count).
pub fn kallsyms_has(func: &str) -> bool {
    let Ok(f) = std::fs::File::open("/proc/kallsyms") else { return false };
    use std::io::BufRead as _;
    std::io::BufReader::new(f).lines().map_while(Result::ok).any(|l| {
        let mut it = l.split_whitespace();
        let (_, Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else { return false };
        matches!(ty, "t" | "T") && (name == func || name.split('.').next() == Some(func))
    })
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Everything a tracing session needs from the system, checked in order.
pub struct Kernel {
    pub btf: Btf,
    pub aya_btf: aya::Btf,
    pub tracefs: PathBuf,
    pub kprobes: bool,
    pub layout: layout::Resolved,
}

pub fn btf_missing(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Environment(format!(
        "kernel BTF is not readable at {} ({why}): memtrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y, or pass --btf PATH to a BTF file for this kernel",
        path.display()
    ))
}

impl Kernel {
    /// Checks privileges, loads BTF, finds or mounts tracefs.
    pub fn open(btf_path: &Path) -> Result<Kernel, Error> {
        privileges().map_err(Error::Environment)?;
        let btf = Btf::from_file(btf_path).map_err(|e| btf_missing(btf_path, e))?;
        let aya_btf = aya::Btf::parse_file(btf_path, aya::Endianness::default())
            .map_err(|e| btf_missing(btf_path, e))?;
        let tracefs = tracefs::find_or_mount().map_err(|e| Error::Environment(e.to_string()))?;
        let layout = layout::resolve(&btf);
        Ok(Kernel {
            kprobes: has_kprobes(Some(&tracefs)),
            btf,
            aya_btf,
            tracefs,
            layout,
        })
    }
}
