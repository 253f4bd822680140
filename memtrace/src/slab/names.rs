//! The names behind the slab maps' keys: process names (`SLAB_COMMS`, else /proc), memory
//! cgroup paths (`SLAB_CGROUPS`) and dentry directories (relative ones resolved against the
//! process's current directory). Looked up when a period is emitted and forgotten after
//! it: processes rename themselves, ids are reused.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use memtrace_common::{
    CgroupPath, TASK_COMM_LEN,
    slab::{AT_FDCWD, DirKey, SLAB_CGROUPS, SLAB_COMMS},
};

use super::model::join_dir;
use crate::{
    engine::loader::take_map,
    error::Error,
    kernel::{cgroup, cstr, procfs::Procfs},
};

/// Most names of each kind remembered within a period.
const MAX_NAMES: usize = 65_536;
/// Most current directories remembered within a period.
const MAX_CWDS: usize = 4096;

pub struct Names {
    comm_map: BpfHashMap<MapData, u32, [u8; TASK_COMM_LEN]>,
    cgroup_map: BpfHashMap<MapData, u64, CgroupPath>,
    procfs: Procfs,
    comms: HashMap<u32, String>,
    cgroups: HashMap<u64, Option<String>>,
    cwds: HashMap<u32, Option<String>>,
}

impl Names {
    pub fn new(ebpf: &mut Ebpf, procfs: Procfs) -> Result<Names, Error> {
        Ok(Names {
            comm_map: take_map(ebpf, SLAB_COMMS)?,
            cgroup_map: take_map(ebpf, SLAB_CGROUPS)?,
            procfs,
            comms: HashMap::new(),
            cgroups: HashMap::new(),
            cwds: HashMap::new(),
        })
    }

    /// Forgets every name (at the end of a period).
    pub fn forget(&mut self) {
        self.comms.clear();
        self.cgroups.clear();
        self.cwds.clear();
    }

    /// The process name: as the kernel recorded it for the caller row, else as it is now,
    /// else "?".
    pub fn comm(&mut self, tgid: u32) -> String {
        if let Some(c) = self.comms.get(&tgid) {
            return c.clone();
        }
        let c = self
            .comm_map
            .get(&tgid, 0)
            .ok()
            .map(|c| cstr(&c))
            .or_else(|| self.procfs.comm(tgid))
            .unwrap_or_else(|| "?".into());
        if self.comms.len() < MAX_NAMES {
            self.comms.insert(tgid, c.clone());
        }
        c
    }

    /// The memory cgroup's path, when the kernel could read it.
    pub fn cgroup(&mut self, memcg: u64) -> Option<String> {
        if memcg == 0 {
            return None;
        }
        if let Some(c) = self.cgroups.get(&memcg) {
            return c.clone();
        }
        let c = self.cgroup_map.get(&memcg, 0).ok().and_then(|p| cgroup::render(&p));
        if c.is_some() && self.cgroups.len() < MAX_NAMES {
            self.cgroups.insert(memcg, c.clone());
        }
        c
    }

    /// Whether the memory cgroup is `filter` or below it.
    pub fn cgroup_under(&mut self, memcg: u64, filter: &str) -> bool {
        self.cgroup(memcg).is_some_and(|c| cgroup::under(&c, filter))
    }

    /// A directory of a dentry row: absolute as recorded, or resolved against the process's
    /// current directory (read when first shown). Paths relative to another dirfd stay
    /// "(fd N of PID)": the fd may have been reused since.
    pub fn dir(&mut self, k: &DirKey) -> String {
        let raw = cstr(&k.dir);
        if raw.starts_with('/') {
            return raw;
        }
        let base = if k.dfd == AT_FDCWD {
            if self.cwds.len() > MAX_CWDS {
                self.cwds.clear();
            }
            let procfs = &self.procfs;
            self.cwds
                .entry(k.tgid)
                .or_insert_with(|| {
                    std::fs::read_link(procfs.path(&format!("proc/{}/cwd", k.tgid)))
                        .ok()
                        .map(|p| p.to_string_lossy().into_owned())
                })
                .clone()
                .unwrap_or_else(|| format!("(cwd of {})", k.tgid))
        } else {
            format!("(fd {} of {})", k.dfd, k.tgid)
        };
        join_dir(&base, &raw)
    }
}
