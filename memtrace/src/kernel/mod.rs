//! Kernel facts: the only layer that reads the running system (BTF, tracefs, procfs, sysfs,
//! cgroupfs, kallsyms, clocks). It knows no probe family and no aya program type; readers
//! take a root directory so unit tests run them on fake trees.
//!
//! This file: privileges, BTF, tracefs and kprobes checked in order ([`Kernel::open`]),
//! and the small helpers every family shares (clocks, page size, C strings).

pub mod btf;
mod btf_read;
pub mod cgroup;
pub mod checks;
#[cfg(test)]
pub mod fuzz;
pub mod gfp;
pub mod kallsyms;
pub mod layout;
pub mod mounts;
pub mod procfs;
pub mod syscalls;
pub mod tracefs;

use std::path::{Path, PathBuf};

use self::{btf::Btf, procfs::Procfs};
use crate::error::Error;

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

/// Whether the kernel can create kprobes (CONFIG_KPROBES).
pub fn has_kprobes(tracefs: Option<&Path>) -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || tracefs.is_some_and(|t| t.join("kprobe_events").exists())
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Everything a tracing session needs from the system, checked in order.
pub struct Kernel {
    pub btf: Btf,
    /// The raw BTF file, for the loader (aya parses it itself).
    pub btf_path: PathBuf,
    pub tracefs: PathBuf,
    pub kprobes: bool,
    pub layout: layout::Resolved,
    pub procfs: Procfs,
}

pub fn btf_missing(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Environment(format!(
        "kernel BTF is not readable at {} ({why}): memtrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y, or pass --btf PATH to a BTF file for this kernel",
        path.display()
    ))
}

/// A BTF file that was read but is not this kernel's BTF (corrupt, truncated, another
/// architecture's): one line, exit 2.
pub fn btf_unusable(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Environment(format!(
        "kernel BTF at {} is not usable ({why}): pass --btf PATH to the running kernel's own \
         BTF (/sys/kernel/btf/vmlinux on kernels built with CONFIG_DEBUG_INFO_BTF=y)",
        path.display()
    ))
}

/// Reads the BTF at `path` and checks it describes a kernel of this architecture.
pub fn open_btf(path: &Path) -> Result<Btf, Error> {
    let btf = Btf::from_file(path).map_err(|e| match e {
        btf::BtfError::Read { .. } => btf_missing(path, e),
        btf::BtfError::Malformed(_) => btf_unusable(path, e),
    })?;
    layout::check_arch(&btf).map_err(|why| btf_unusable(path, why))?;
    Ok(btf)
}

impl Kernel {
    /// Checks privileges, loads BTF, finds or mounts tracefs.
    pub fn open(btf_path: &Path) -> Result<Kernel, Error> {
        privileges().map_err(Error::Environment)?;
        let btf = open_btf(btf_path)?;
        let tracefs = tracefs::find_or_mount().map_err(|e| Error::Environment(e.to_string()))?;
        let layout = layout::resolve(&btf);
        Ok(Kernel {
            kprobes: has_kprobes(Some(&tracefs)),
            btf,
            btf_path: btf_path.to_path_buf(),
            tracefs,
            layout,
            procfs: Procfs::system(),
        })
    }

    /// The classic tracepoint's format file, parsed.
    pub fn format(&self, category: &str, name: &str) -> Option<tracefs::Format> {
        tracefs::format(&self.tracefs, category, name)
    }
}

/// NUL-terminated bytes (a kernel char array) to a String.
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_BOOTTIME now, in ns: the clock of `bpf_ktime_get_boot_ns()`.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME) as u64
}

/// CLOCK_REALTIME now, in ns since the epoch.
pub fn wall_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Wall-clock ns since the epoch for a `bpf_ktime_get_boot_ns()` timestamp.
pub fn boot_to_wall_ns(boot: u64) -> i128 {
    let (b, w) = (clock_ns(libc::CLOCK_BOOTTIME), clock_ns(libc::CLOCK_REALTIME));
    w - (b - boot as i128)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The running kernel for unit tests that need it: None when this process cannot open
    /// it (not root), except under CI=true, where a missing capability fails the test.
    pub fn running_kernel() -> Option<Kernel> {
        match Kernel::open(Path::new(DEFAULT_BTF)) {
            Ok(k) => Some(k),
            Err(e) if std::env::var_os("CI").is_some() => panic!("CI runs as root: {e}"),
            Err(_) => None,
        }
    }

    #[test]
    fn converts_boot_time() {
        let w = boot_to_wall_ns(boot_ns());
        assert!((w - wall_ns()).abs() < 1_000_000_000);
        assert_eq!(cstr(b"abc\0def"), "abc");
        assert_eq!(cstr(b"abc"), "abc");
        assert!(page_size() >= 4096);
    }
}
