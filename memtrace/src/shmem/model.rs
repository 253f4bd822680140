//! Shmem family, the arithmetic: from a snapshot of the kernel maps to live pages per
//! superblock, inode and writer, and the reconciliation with `df` and /proc/meminfo.
//! Pure functions (no system access), unit-tested.
//!
//! Rules:
//! - An inode's live pages are allocated - freed, both counted by the kernel while traced.
//!   Frees beyond what was allocated (`excess`) are pages that existed before memtrace
//!   started.
//! - The kernel frees pages, not writers: an inode's frees are charged to its writers in the
//!   order they started writing (oldest first), which is right for rewrite, rotate and
//!   delete patterns; for a file several writers append to concurrently and that is then
//!   truncated from the end, the split between them is approximate (the inode total is not).
//! - Per superblock: live = the sum of its inodes' live pages; pre-existing = (df used when
//!   first seen - live then) - pre-existing pages freed since (frees of inodes never seen
//!   allocating, and excess frees).

use std::collections::BTreeMap;

use crate::kernel::cstr;

use memtrace_common::shmem::{
    DevStats, HOW_CPU_RUN, HOW_DRAIN_TASK, HOW_EXACT, InodeKey, InodeStats, TaskStats, WriterKey,
    WriterStats,
};

/// The kernel maps, read at one moment.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub inodes: Vec<(InodeKey, InodeStats)>,
    pub writers: Vec<(WriterKey, WriterStats)>,
    pub tasks: Vec<(u32, TaskStats)>,
    pub devs: Vec<(u32, DevStats)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterView {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub how: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    pub alloc: u64,
    pub freed: u64,
}

impl WriterView {
    pub fn live(&self) -> u64 {
        self.alloc.saturating_sub(self.freed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeView {
    pub key: InodeKey,
    pub name: String,
    pub alloc: u64,
    pub freed: u64,
    pub last_ns: u64,
    pub writers: Vec<WriterView>,
}

impl InodeView {
    pub fn live(&self) -> u64 {
        self.alloc.saturating_sub(self.freed)
    }
    /// Frees of pages allocated before memtrace started.
    pub fn excess(&self) -> u64 {
        self.freed.saturating_sub(self.alloc)
    }
}

/// Totals of inodes the agent retired from the kernel maps (fully freed, idle).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    pub alloc: u64,
    pub freed: u64,
    /// Their frees of pages allocated before memtrace started.
    pub excess: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevView {
    pub dev: u32,
    pub stats: DevStats,
    pub retired: Retired,
    pub inodes: Vec<InodeView>,
}

impl DevView {
    pub fn excess(&self) -> u64 {
        self.inodes.iter().map(InodeView::excess).sum::<u64>() + self.retired.excess
    }
    /// Pages memtrace saw allocated and not yet freed.
    pub fn live(&self) -> u64 {
        self.inodes.iter().map(InodeView::live).sum()
    }
    pub fn allocated(&self) -> u64 {
        self.inodes.iter().map(|i| i.alloc).sum::<u64>() + self.retired.alloc
    }
    /// Every page freed while traced (including pre-existing ones).
    pub fn freed(&self) -> u64 {
        self.inodes.iter().map(|i| i.freed).sum::<u64>()
            + self.retired.freed
            + self.stats.unseen_freed_pages
    }
    /// Pages freed that were allocated before memtrace started.
    pub fn preexisting_freed(&self) -> u64 {
        self.stats.unseen_freed_pages + self.excess()
    }
}

/// Charges `freed` pages to writers oldest first; returns what is left (excess).
pub fn apportion(mut freed: u64, writers: &mut [WriterView]) -> u64 {
    writers.sort_by_key(|w| (w.first_ns, w.tgid));
    for w in writers.iter_mut() {
        let take = freed.min(w.alloc);
        w.freed = take;
        freed -= take;
    }
    freed
}


/// Groups the snapshot per superblock and inode, with each inode's frees apportioned.
pub fn analyze(snap: &Snapshot, retired: &BTreeMap<u32, Retired>) -> BTreeMap<u32, DevView> {
    let mut devs: BTreeMap<u32, DevView> = BTreeMap::new();
    for (dev, s) in &snap.devs {
        devs.insert(*dev, DevView { dev: *dev, stats: *s, ..Default::default() });
    }
    let mut inodes: BTreeMap<InodeKey, InodeView> = snap
        .inodes
        .iter()
        .map(|(k, v)| {
            (
                *k,
                InodeView {
                    key: *k,
                    name: cstr(&v.name),
                    alloc: v.alloc_pages,
                    freed: v.freed_pages,
                    last_ns: v.last_ns,
                    writers: Vec::new(),
                },
            )
        })
        .collect();
    for (k, w) in &snap.writers {
        let key = InodeKey { dev: k.dev, _pad: 0, ino: k.ino };
        let view = WriterView {
            tgid: k.tgid,
            pid: w.pid,
            comm: cstr(&w.comm),
            cgroup_id: w.cgroup_id,
            how: w.how,
            first_ns: w.first_ns,
            last_ns: w.last_ns,
            alloc: w.alloc_pages,
            freed: 0,
        };
        // A writer entry without its inode (the inode map was full): keep it visible.
        inodes
            .entry(key)
            .or_insert_with(|| InodeView {
                key,
                name: String::new(),
                alloc: 0,
                freed: 0,
                last_ns: w.last_ns,
                writers: Vec::new(),
            })
            .writers
            .push(view);
    }
    for (_, mut i) in inodes {
        let writers_alloc: u64 = i.writers.iter().map(|w| w.alloc).sum();
        i.alloc = i.alloc.max(writers_alloc);
        apportion(i.freed, &mut i.writers);
        devs.entry(i.key.dev)
            .or_insert_with(|| DevView { dev: i.key.dev, ..Default::default() })
            .inodes
            .push(i);
    }
    for (dev, r) in retired {
        devs.entry(*dev).or_insert_with(|| DevView { dev: *dev, ..Default::default() }).retired =
            *r;
    }
    devs
}

/// What a shmem file is, from its superblock and dentry name.
pub fn classify(internal: bool, name: &str) -> &'static str {
    if !internal {
        "tmpfs"
    } else if name.starts_with("memfd:") {
        "memfd"
    } else if name.starts_with("SYSV") {
        "sysv"
    } else if name == "dev/zero" {
        "shared_anon"
    } else {
        // DRM GEM objects, io_uring rings, ... created with shmem_file_setup().
        "internal"
    }
}

pub fn attribution(how: u32) -> &'static str {
    match how {
        HOW_EXACT => "exact",
        HOW_CPU_RUN => "cpu_run",
        HOW_DRAIN_TASK => "drain_task",
        _ => "unknown",
    }
}

/// Pre-existing bytes left: the base minus pre-existing pages freed since.
pub fn preexisting(base: u64, preexisting_freed: u64) -> u64 {
    base.saturating_sub(preexisting_freed)
}

/// What is not explained by live attributed bytes and pre-existing bytes.
pub fn unexplained(total: u64, attributed: u64, preexisting: u64) -> i64 {
    total as i64 - attributed as i64 - preexisting as i64
}

#[cfg(test)]
mod tests {
    use memtrace_common::shmem::SHMEM_NAME_LEN;

    use super::*;

    fn name(s: &str) -> [u8; SHMEM_NAME_LEN] {
        let mut n = [0; SHMEM_NAME_LEN];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    fn comm(s: &str) -> [u8; 16] {
        let mut n = [0; 16];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    fn inode(dev: u32, ino: u64, alloc: u64, freed: u64, n: &str) -> (InodeKey, InodeStats) {
        (
            InodeKey { dev, _pad: 0, ino },
            InodeStats {
                alloc_pages: alloc,
                freed_pages: freed,
                first_ns: 1,
                last_ns: 2,
                name: name(n),
            },
        )
    }

    fn writer(dev: u32, ino: u64, tgid: u32, alloc: u64, first: u64) -> (WriterKey, WriterStats) {
        (
            WriterKey { dev, tgid, ino },
            WriterStats {
                alloc_pages: alloc,
                first_ns: first,
                last_ns: first + 1,
                cgroup_id: 9,
                pid: tgid,
                how: HOW_EXACT,
                comm: comm("w"),
            },
        )
    }

    fn wv(tgid: u32, alloc: u64, first_ns: u64) -> WriterView {
        WriterView {
            tgid,
            pid: tgid,
            comm: String::new(),
            cgroup_id: 0,
            how: HOW_EXACT,
            first_ns,
            last_ns: first_ns,
            alloc,
            freed: 0,
        }
    }

    #[test]
    fn frees_go_to_the_oldest_writer_first() {
        // A wrote 64, truncated (64 freed), B wrote 10: B holds what is live.
        let mut w = vec![wv(2, 10, 50), wv(1, 64, 10)];
        assert_eq!(apportion(64, &mut w), 0);
        assert_eq!((w[0].tgid, w[0].live()), (1, 0));
        assert_eq!((w[1].tgid, w[1].live()), (2, 10));
        // More freed than allocated: the rest is pre-existing.
        let mut w = vec![wv(1, 5, 1)];
        assert_eq!(apportion(8, &mut w), 3);
        assert_eq!(w[0].freed, 5);
    }

    #[test]
    fn per_superblock_live_and_preexisting() {
        let snap = Snapshot {
            inodes: vec![
                inode(52, 2, 16_384, 0, "data"),
                inode(52, 3, 10, 14, "old.log"), // 4 pages were there before
                inode(7, 9, 256, 256, "memfd:x"),
            ],
            writers: vec![
                writer(52, 2, 100, 16_000, 1),
                writer(52, 2, 101, 384, 2),
                writer(52, 3, 102, 10, 3),
                writer(7, 9, 103, 256, 4),
            ],
            tasks: vec![],
            devs: vec![
                (52, DevStats { unseen_freed_pages: 20 }),
                (7, DevStats { unseen_freed_pages: 0 }),
            ],
        };
        let d = analyze(&snap, &BTreeMap::new());
        let t = &d[&52];
        assert_eq!(t.inodes.len(), 2);
        assert_eq!(t.excess(), 4);
        assert_eq!(t.preexisting_freed(), 24);
        // allocated 16394, freed 34 of which 24 were pre-existing: 10 attributed frees.
        assert_eq!(t.allocated(), 16_394);
        assert_eq!(t.freed(), 34);
        assert_eq!(t.live(), 16_384);
        let data = t.inodes.iter().find(|i| i.key.ino == 2).unwrap();
        assert_eq!(data.live(), 16_384);
        assert_eq!(data.writers.iter().map(WriterView::live).sum::<u64>(), 16_384);
        assert_eq!(d[&7].live(), 0);
        assert_eq!(preexisting(100, t.preexisting_freed()), 76);
        assert_eq!(preexisting(10, 24), 0);
        assert_eq!(unexplained(16_500, 16_384, 76), 40);
        assert_eq!(unexplained(100, 120, 0), -20);
    }

    #[test]
    fn writers_without_an_inode_entry_stay_visible() {
        let snap = Snapshot {
            writers: vec![writer(52, 8, 100, 5, 1)],
            devs: vec![(52, DevStats { unseen_freed_pages: 0 })],
            ..Default::default()
        };
        let mut retired = BTreeMap::new();
        retired.insert(52, Retired { alloc: 10, freed: 12, excess: 2 });
        let d = analyze(&snap, &retired);
        assert_eq!(d[&52].inodes[0].alloc, 5, "inode total from its writers");
        assert_eq!(d[&52].inodes[0].live(), 5);
        assert_eq!(d[&52].live(), 5);
        assert_eq!(d[&52].allocated(), 15);
        assert_eq!(d[&52].freed(), 12);
        assert_eq!(d[&52].preexisting_freed(), 2);
    }

    #[test]
    fn classifies_kinds() {
        assert_eq!(classify(false, "data"), "tmpfs");
        assert_eq!(classify(false, "memfd:looks-like"), "tmpfs");
        assert_eq!(classify(true, "memfd:mt-memfd"), "memfd");
        assert_eq!(classify(true, "SYSV0000abcd"), "sysv");
        assert_eq!(classify(true, "dev/zero"), "shared_anon");
        assert_eq!(classify(true, "drm mm object"), "internal");
        assert_eq!(attribution(HOW_CPU_RUN), "cpu_run");
    }
}
