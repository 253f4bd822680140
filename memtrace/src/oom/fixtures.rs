//! Synthetic ring-buffer records for the family's unit tests: a memcg kill of pid 100
//! (oom_score_adj 900, 4096 anon pages) by pid 200 in a 128 MiB memcg, oom_control found
//! on the stack, candidates by the walk.

use std::{cell::RefCell, rc::Rc};

use memtrace_common::{
    CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_NAME_LEN, CgroupPath, EventHeader,
    oom::{
        CAND_POINTS, CAND_SKIP_ADJ_MIN, CONSTRAINT_MEMCG, KIND_CANDIDATE, KIND_KILL, KIND_REAPER,
        OOM_D_GROUP_MEMBER, OOM_D_HAVE_CHOSEN_POINTS, OOM_D_HAVE_MEMCG, OOM_D_HAVE_OC,
        OOM_D_OC_STACK, OOM_HAVE_MM, OOM_HAVE_TASK, OOM_METHOD_WALK, OomCandidateEvent,
        OomKillEvent, OomReaperEvent, OomRetry,
    },
};
use serde_json::Value;

use super::{
    model::{self, Env},
    report::{Lost, OomKill},
};
use crate::{
    engine::sink::{Out, Sink, Sinks},
    kernel::gfp::Gfp,
};

pub const PAGE: i64 = 4;
pub const DECISION: u64 = 7_000;
pub const TOTALPAGES: u64 = 32_768;

pub fn cg(names: &[&str]) -> CgroupPath {
    let mut p = CgroupPath {
        id: 42,
        depth: names.len() as u32,
        status: CGROUP_COMPLETE,
        names: [[0; CGROUP_NAME_LEN]; CGROUP_DEPTH],
    };
    for (i, n) in names.iter().enumerate() {
        p.names[i][..n.len()].copy_from_slice(n.as_bytes());
    }
    p
}

pub fn comm(s: &str) -> [u8; 16] {
    let mut c = [0; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

/// 4 KiB pages, a few GFP flags, zone and compaction names.
pub fn env() -> Env {
    Env {
        page_kib: PAGE,
        page_shift: 12,
        gfp: Gfp {
            table: vec![
                (0x100cca, "GFP_HIGHUSER_MOVABLE".into()),
                (0xcc0, "GFP_KERNEL".into()),
                (0x40000, "__GFP_COMP".into()),
            ],
        },
        zones: vec![(0, "DMA".into()), (1, "DMA32".into()), (2, "Normal".into())],
        compact_results: vec![(1, "failed".into())],
        compact_priorities: vec![(0, "COMPACT_PRIO_SYNC_FULL".into())],
    }
}

/// The kill of pid 100 (victim, /svc/job) by pid 200 (grower), decision [`DECISION`].
pub fn kill_event() -> OomKillEvent {
    OomKillEvent {
        header: EventHeader { kind: KIND_KILL, cpu: 1, boot_ns: 5_000_000 },
        flags: OOM_HAVE_TASK | OOM_HAVE_MM,
        victim_pid: 100,
        victim_tgid: 100,
        victim_uid: 1000,
        victim_oom_score_adj: 900,
        trigger_pid: 201,
        trigger_tgid: 200,
        _pad: 0,
        rss_anon: 4096,
        rss_file: 460,
        rss_shmem: 0,
        swap_ents: 0,
        pgtables_bytes: 20 * 4096,
        total_vm_pages: 5000,
        victim_comm: comm("victim"),
        trigger_comm: comm("grower"),
        victim_cgroup: cg(&["job", "svc"]),
        trigger_cgroup: cg(&["job", "svc"]),
        decision: DECISION,
        dflags: OOM_D_OC_STACK | OOM_D_HAVE_OC | OOM_D_HAVE_CHOSEN_POINTS | OOM_D_HAVE_MEMCG,
        constraint: CONSTRAINT_MEMCG,
        order: 0,
        gfp_mask: 0x140cca,
        totalpages: TOTALPAGES,
        chosen_points: 4096 + 460 + 20 + 900 * 32,
        memcg_usage: 32_768,
        memcg_max: 32_768,
        victim_task_flags: 0,
        method: OOM_METHOD_WALK,
        cand_emitted: 4,
        cand_dropped: 0,
        cand_visited: 120,
        cand_unwalked: 0,
        retry: OomRetry::default(),
        oom_memcg: cg(&["job", "svc"]),
    }
}

/// pid 500 (sibling), killed with [`kill_event`]'s victim as a memory.oom.group member.
pub fn group_member() -> OomKillEvent {
    let mut m = kill_event();
    m.victim_pid = 500;
    m.victim_tgid = 500;
    m.victim_comm = comm("sibling");
    m.dflags |= OOM_D_GROUP_MEMBER;
    m
}

/// A candidate of decision [`DECISION`]: `anon` + 460 file pages, 20 page-table pages.
pub fn cand(pid: u32, name: &str, anon: i64, adj: i32, flags: u32) -> OomCandidateEvent {
    let rss = anon + 460;
    let points = rss + 20 + i64::from(adj) * (TOTALPAGES / 1000) as i64;
    OomCandidateEvent {
        header: EventHeader { kind: KIND_CANDIDATE, cpu: 1, boot_ns: 4_999_000 },
        decision: DECISION,
        points: if flags & CAND_POINTS != 0 { points } else { 0 },
        totalpages: TOTALPAGES,
        rss_anon: anon,
        rss_file: 460,
        rss_shmem: 0,
        swap_ents: 0,
        pgtables_bytes: 20 * 4096,
        pid,
        tgid: pid,
        flags,
        oom_score_adj: adj,
        cgroup_id: 0,
        comm: comm(name),
    }
}

/// The decision's candidates: the victim, the grower, a small one, a protected one.
pub fn cands() -> [OomCandidateEvent; 4] {
    [
        cand(100, "victim", 4096, 900, CAND_POINTS),
        cand(200, "grower", 14_000, 0, CAND_POINTS),
        cand(300, "small", 2048, 0, CAND_POINTS),
        cand(400, "protected", 50_000, -1000, CAND_SKIP_ADJ_MIN),
    ]
}

pub fn reaper_event(pid: u32, phase: u32, ns: u64) -> OomReaperEvent {
    OomReaperEvent {
        header: EventHeader { kind: KIND_REAPER, cpu: 0, boot_ns: ns },
        decision: DECISION,
        pid,
        phase,
    }
}

/// A record's bytes, as the ring buffer carries them.
pub fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: plain data viewed as bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// The decision of [`kill_event`] with [`cands`], cgroup ids named "/named/ID".
pub fn decided() -> OomKill {
    let env = env();
    let cands = cands().iter().map(|c| model::candidate(c, &env)).collect();
    model::decision(&kill_event(), &env, cands, Lost::default(), |id| Some(format!("/named/{id}")))
}

/// The records emitted through the `Out` that `f` is given.
pub fn emitted(f: impl FnOnce(&mut Out)) -> Vec<Value> {
    struct Collect(Rc<RefCell<Vec<Value>>>);
    impl Sink for Collect {
        fn record(&mut self, _family: Option<&str>, rec: &Value) -> std::io::Result<()> {
            self.0.borrow_mut().push(rec.clone());
            Ok(())
        }
    }
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut sinks = Sinks::new(vec![Box::new(Collect(seen.clone()))]);
    f(&mut Out::new("oom", &mut sinks));
    seen.take()
}

/// [`decided`] as the agent emits it: at a fixed time, the victim exited 3 ms after the
/// kill, with its notes (the host had 20 GiB available).
pub fn reported() -> OomKill {
    let mut k = decided();
    k.time = "2026-11-22T02:19:37.449Z".into();
    let exit_ns = Some(8_000_000);
    let victim = model::Track { pid: 100, kill_ns: 5_000_000, exit_ns, ..Default::default() };
    k.reaper = Some(model::reaper_summary(&[victim]));
    k.notes = super::report::notes(&k, PAGE, Some(20 << 20));
    k
}
