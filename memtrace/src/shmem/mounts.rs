//! The shmem superblocks the agent knows: the visible tmpfs mounts, each with what it held
//! when first seen that memtrace had not seen allocated (its pre-existing base), the
//! kernel's internal shm mount, how records name them, and inode -> path on a tmpfs (a
//! bounded walk, cached).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::kernel::{
    mounts::{self as sys, Mount},
    procfs::Procfs,
};

/// Entries visited when walking a tmpfs for inode -> path.
const WALK_BUDGET: usize = 200_000;
/// Walk a mount again for unresolved live inodes at most this often.
const WALK_EVERY: Duration = Duration::from_secs(5);
/// How the kernel's internal shm mount is named in records.
const INTERNAL_MOUNT: &str = "[shm_mnt]";

struct MountState {
    mount: Mount,
    /// Bytes in use when memtrace first saw the mount that it had not seen allocated.
    base: Option<u64>,
}

#[derive(Default)]
struct PathCache {
    map: HashMap<u64, PathBuf>,
    walked_at: Option<Instant>,
}

/// A mount seen for the first time, with its `df` used bytes when it was seen.
pub struct Found {
    mount: Mount,
    used: Option<u64>,
}

pub struct Mounts {
    procfs: Procfs,
    /// The device of the kernel's internal shm mount (memfd, SysV shm, shared anonymous
    /// memory).
    pub internal: Option<u32>,
    known: BTreeMap<u32, MountState>,
    paths: HashMap<u32, PathCache>,
}

impl Mounts {
    pub fn new(procfs: Procfs) -> Mounts {
        Mounts {
            procfs,
            internal: sys::internal_shm_dev(),
            known: BTreeMap::new(),
            paths: HashMap::new(),
        }
    }

    pub fn is_internal(&self, dev: u32) -> bool {
        Some(dev) == self.internal
    }

    /// Reads /proc/self/mountinfo again: the mounts seen for the first time, each with its
    /// `df` used bytes read now (the caller reads the maps after, so that what is written
    /// meanwhile is not taken for pre-existing).
    pub fn scan(&mut self) -> Vec<Found> {
        let mut found = Vec::new();
        for m in sys::mounts(&self.procfs) {
            if self.is_internal(m.dev) {
                continue;
            }
            if let Some(st) = self.known.get_mut(&m.dev) {
                st.mount = m;
                continue;
            }
            let used = sys::statfs(&m.point).map(|(used, _)| used);
            found.push(Found { mount: m, used });
        }
        found
    }

    /// Adds what [`Mounts::scan`] found, each with its pre-existing base: df used minus
    /// `live(dev)`, the bytes memtrace attributes there. Returns their devices.
    pub fn add(&mut self, found: Vec<Found>, live: impl Fn(u32) -> u64) -> Vec<u32> {
        let mut devs = Vec::new();
        for Found { mount, used } in found {
            let dev = mount.dev;
            let base = used.map(|u| u.saturating_sub(live(dev)));
            self.known.insert(dev, MountState { mount, base });
            devs.push(dev);
        }
        devs
    }

    /// The visible tmpfs mounts' devices.
    pub fn devs(&self) -> impl Iterator<Item = u32> + '_ {
        self.known.keys().copied()
    }

    /// `df` (used, size) of every visible tmpfs mount that has a size.
    pub fn df(&self) -> HashMap<u32, (u64, u64)> {
        self.known.iter().filter_map(|(dev, m)| Some((*dev, sys::statfs(&m.mount.point)?))).collect()
    }

    /// The pre-existing base of a visible tmpfs mount.
    pub fn base(&self, dev: u32) -> Option<u64> {
        self.known.get(&dev).and_then(|m| m.base)
    }

    pub fn fstype(&self, dev: u32) -> String {
        match self.known.get(&dev) {
            _ if self.is_internal(dev) => "shmem".to_string(),
            Some(m) => m.mount.fstype.clone(),
            None => "tmpfs".to_string(),
        }
    }

    /// The mount point, `[shm_mnt]`, or `dev MAJ:MIN` for a superblock not mounted here.
    pub fn label(&self, dev: u32) -> String {
        if self.is_internal(dev) {
            INTERNAL_MOUNT.to_string()
        } else {
            match self.known.get(&dev) {
                Some(m) => m.mount.point.display().to_string(),
                None => format!("dev {}", sys::kdev_str(dev)),
            }
        }
    }

    /// Paths of live inodes on a visible tmpfs, walking the mount when one is unknown.
    pub fn path_of(&mut self, dev: u32, ino: u64, live: bool) -> Option<String> {
        let root = self.known.get(&dev)?.mount.point.clone();
        let cache = self.paths.entry(dev).or_default();
        if let Some(p) = cache.map.get(&ino) {
            if sys::is_inode(p, dev, ino) {
                return Some(p.display().to_string());
            }
            cache.map.remove(&ino);
        }
        if !live || cache.walked_at.is_some_and(|t| t.elapsed() < WALK_EVERY) {
            return None;
        }
        let (map, complete) = sys::walk(&root, dev, WALK_BUDGET);
        if !complete {
            log::info!("{}: walked {WALK_BUDGET} entries, some paths unresolved", root.display());
        }
        cache.map = map;
        cache.walked_at = Some(Instant::now());
        cache.map.get(&ino).map(|p| p.display().to_string())
    }
}
