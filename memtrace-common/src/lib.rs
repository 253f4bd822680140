//! Types shared by the BPF programs (`memtrace-ebpf`) and the agent (`memtrace`).
//!
//! Everything here is `#[repr(C)]` and plain data: the BPF side writes these structs into
//! ring-buffer records and maps, the agent reads them back byte for byte. Kinds and
//! indices are stable numbers; never reorder them.
//!
//! One folder per family (`oom`, `reclaim`, `slab`, `shmem`), each with the same files:
//! `records.rs` (ring-buffer records, their flags and event kinds), `config.rs` (the
//! family's BPF global and its defaults) and `maps.rs` (map keys, values and names). Each
//! family's `mod.rs` re-exports all three, so `memtrace_common::oom::OomKillEvent` names a
//! type wherever it lives. The crate root holds only what every family shares. The
//! `aya::Pod` impls (feature `user`) sit beside their types.
#![no_std]

mod event;
pub mod layout;
pub mod oom;
pub mod reclaim;
pub mod shmem;
pub mod slab;
pub mod stats;

pub use event::{EventHeader, Family, event_family, event_kind};

/// Length of `task_struct::comm`.
pub const TASK_COMM_LEN: usize = 16;
/// Cgroup path components recorded by BPF (leaf first). Deeper paths are truncated and
/// flagged.
pub const CGROUP_DEPTH: usize = 8;
/// Bytes per recorded cgroup path component (kernfs node name).
pub const CGROUP_NAME_LEN: usize = 96;

/// A memory-cgroup path read in BPF by walking kernfs nodes up from the cgroup.
///
/// `names[0]` is the cgroup itself, `names[depth - 1]` the child of the hierarchy root.
/// A depth of 0 means the root cgroup. `id` is the kernfs node id (the cgroup id on v2,
/// the inode number of the cgroup directory).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupPath {
    pub id: u64,
    pub depth: u32,
    /// 1 when the walk stopped at [`CGROUP_DEPTH`] before reaching the root, 2 when a read
    /// failed, 0 when complete.
    pub status: u32,
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_DEPTH],
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CgroupPath {}

pub const CGROUP_COMPLETE: u32 = 0;
pub const CGROUP_TRUNCATED: u32 = 1;
pub const CGROUP_READ_FAILED: u32 = 2;
/// No layout was available to read the cgroup (coverage gap, reported by doctor).
pub const CGROUP_UNAVAILABLE: u32 = 3;

/// Name of the loader-set global every family's hot programs check first.
pub const SELF_FILTER: &str = "MEMTRACE_SELF";

/// `MEMTRACE_SELF`: memtrace's own process, whose allocations, stalls and shmem writes
/// the programs drop in the kernel (tgid 0: `--include-self`, nothing dropped).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SelfFilter {
    pub tgid: u32,
    /// Never 0, so that the global is initialised data like the other globals.
    pub marker: u32,
}

impl SelfFilter {
    pub const MARKER: u32 = 0x6d74_7366;
    pub const NONE: SelfFilter = SelfFilter { tgid: 0, marker: Self::MARKER };

    pub const fn of(tgid: u32) -> SelfFilter {
        SelfFilter { tgid, marker: Self::MARKER }
    }
}

// SAFETY: #[repr(C)] plain data.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SelfFilter {}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{collections::BTreeSet, fs, path::Path, string::String, vec::Vec};

    use crate::{oom, reclaim, shmem, slab};

    /// The `#[map(name = "...")]` names and the `#[unsafe(no_mangle)] static` globals
    /// declared in one family's folder of the BPF crate.
    fn bpf_declarations(family: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../memtrace-ebpf/src").join(family);
        let (mut maps, mut globals) = (BTreeSet::new(), BTreeSet::new());
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            for (i, line) in lines.iter().enumerate() {
                if line.starts_with("#[map") {
                    let name = line
                        .strip_prefix("#[map(name = \"")
                        .and_then(|s| s.strip_suffix("\")]"))
                        .unwrap_or_else(|| panic!("{}: a map without a name: {line}", f.display()));
                    assert!(maps.insert(name.into()), "{name} declared twice");
                }
                if *line == "#[unsafe(no_mangle)]" {
                    if let Some(rest) = lines.get(i + 1).and_then(|l| l.strip_prefix("static ")) {
                        globals.insert(rest.split(':').next().unwrap().trim().into());
                    }
                }
            }
        }
        (maps, globals)
    }

    #[test]
    fn map_and_global_names_match_the_bpf_declarations() {
        let families: [(&str, &[&str], &str); 4] = [
            ("oom", oom::MAP_NAMES, oom::OOM_CONFIG),
            ("reclaim", reclaim::MAP_NAMES, reclaim::RECLAIM_CONFIG),
            ("slab", slab::MAP_NAMES, slab::SLAB_CONFIG),
            ("shmem", shmem::MAP_NAMES, shmem::SHMEM_CONFIG),
        ];
        for (family, names, global) in families {
            let (maps, globals) = bpf_declarations(family);
            let want: BTreeSet<String> = names.iter().map(|n| String::from(*n)).collect();
            assert_eq!(want.len(), names.len(), "{family}: a name listed twice");
            assert_eq!(maps, want, "{family}: BPF maps vs {family}::MAP_NAMES");
            assert_eq!(globals, BTreeSet::from([String::from(global)]), "{family}: BPF globals");
        }
    }
}
