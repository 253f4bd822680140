//! Decoding and assembly of OOM decisions from synthetic records (no root needed).

use memtrace_common::{
    CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_NAME_LEN, CGROUP_UNAVAILABLE, CgroupPath, EventHeader,
    oom::{CAND_EXACT, OOM_METHOD_NONE, OomRetry},
};

use super::*;
use crate::oom::report::*;
use crate::{
    engine::{
        family::{Agent as _, Filter},
        sink::{Out, Sinks},
    },
    kernel::gfp::Gfp,
};

/// One ring-buffer record into the agent (what it emits is dropped).
fn rec(a: &mut OomAgent, kind: u32, b: &[u8]) -> bool {
    let mut sinks = Sinks::default();
    a.record(kind, b, &mut Out::new("oom", &mut sinks))
}

const PAGE: i64 = 4;

fn cg(names: &[&str]) -> CgroupPath {
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

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn env() -> Env {
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

fn cfg() -> Filter {
    Filter::default()
}

const DECISION: u64 = 7_000;
const TOTALPAGES: u64 = 32_768;

/// A memcg kill of pid 100 (adj 900, 4096 anon pages) by pid 200, oom_control found on
/// the stack, candidates by the walk.
fn kill_event() -> OomKillEvent {
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
        cand_emitted: 3,
        cand_dropped: 0,
        cand_visited: 120,
        _pad2: 0,
        retry: OomRetry::default(),
        oom_memcg: cg(&["job", "svc"]),
    }
}

fn cand(pid: u32, name: &str, anon: i64, adj: i32, flags: u32) -> OomCandidateEvent {
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

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: plain data viewed as bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// An agent fed the candidates and the kill of one decision.
fn assembled() -> OomAgent {
    let mut a = OomAgent::new(cfg(), Options::default(), env());
    for c in [
        cand(100, "victim", 4096, 900, CAND_POINTS),
        cand(200, "grower", 14_000, 0, CAND_POINTS),
        cand(300, "small", 2048, 0, CAND_POINTS),
        cand(400, "protected", 50_000, -1000, CAND_SKIP_ADJ_MIN),
    ] {
        assert!(rec(&mut a, KIND_CANDIDATE, &bytes(&c)));
    }
    assert!(rec(&mut a, KIND_KILL, &bytes(&kill_event())));
    a
}

#[test]
fn decodes_the_kill_record() {
    let k = from_event(&kill_event(), &env());
    assert_eq!(k.kind, "oom_kill");
    assert_eq!(k.victim.pid, 100);
    assert_eq!(k.victim.comm, "victim");
    assert_eq!(k.victim.uid, Some(1000));
    assert_eq!(k.victim.oom_score_adj, Some(900));
    assert_eq!(k.victim.rss_anon_kb, Some(4096 * PAGE));
    assert_eq!(k.victim.pgtables_kb, Some(80));
    assert_eq!(k.victim.cgroup.as_deref(), Some("/svc/job"));
    assert_eq!(k.victim.points, Some(4096 + 460 + 20 + 28_800));
    assert_eq!(k.victim.points_source, Some(POINTS_KERNEL));
    assert_eq!(k.trigger.tgid, 200);
    assert_eq!(k.constraint, "memcg");
    assert!(k.constraint_source.contains("kernel stack"));
    assert_eq!(k.domain.kind, "memcg");
    assert_eq!(k.domain.memcg.as_deref(), Some("/svc/job"));
    assert_eq!(k.domain.memcg_limit_kb, Some(32_768 * PAGE));
    assert_eq!(k.domain.totalpages, Some(TOTALPAGES));
    assert_eq!(k.domain.totalpages_kb, Some(TOTALPAGES as i64 * PAGE));
    assert!(k.domain.totalpages_source.contains("memcg's limit"));
    assert_eq!(k.order, Some(0));
    assert_eq!(k.gfp_mask.as_deref(), Some("0x140cca"));
    assert_eq!(k.gfp_flags.as_deref(), Some(&["GFP_HIGHUSER_MOVABLE".to_string(), "__GFP_COMP".into()][..]));
    let json = serde_json::to_value(&k).unwrap();
    // The foundation's fields stay.
    for f in ["pid", "comm", "uid", "oom_score_adj", "rss_anon_kb", "rss_file_kb", "rss_shmem_kb",
        "pgtables_kb", "total_vm_kb", "cgroup"] {
        assert!(!json["victim"][f].is_null(), "victim.{f}");
    }
    assert_eq!(json["domain"]["totalpages"], TOTALPAGES);
}

#[test]
fn short_records_are_rejected() {
    let mut a = OomAgent::new(cfg(), Options::default(), env());
    assert!(!rec(&mut a, KIND_KILL, &bytes(&kill_event())[..100]));
    assert!(!rec(&mut a, KIND_CANDIDATE, &[0; 8]));
    assert!(a.pending.is_empty());
}

#[test]
fn pid_only_records_say_so() {
    let mut ev = kill_event();
    ev.flags = 0;
    ev.dflags = 0;
    ev.method = OOM_METHOD_NONE;
    ev.victim_cgroup.status = CGROUP_UNAVAILABLE;
    let k = from_event(&ev, &env());
    assert_eq!(k.victim.rss_anon_kb, None);
    assert_eq!(k.victim.cgroup, None);
    assert_eq!(k.constraint, "unknown");
    assert_eq!(k.domain.totalpages, None);
    assert!(k.notes.iter().any(|n| n.contains("only the pid")));
    assert!(method(&ev, 0).is_none());
}

#[test]
fn assembles_candidates_sorted_with_the_victims_breakdown() {
    let a = assembled();
    let k = &a.pending[0].kill;
    let pids: Vec<u32> = k.candidates.iter().map(|c| c.pid).collect();
    assert_eq!(pids, [100, 200, 300, 400], "by points, skipped last");
    assert!(k.candidates[0].victim);
    assert!(k.candidates[1..].iter().all(|c| !c.victim));
    assert_eq!(k.candidates[3].skipped, Some(oom_report::SKIP_ADJ_MIN));
    assert_eq!(k.candidates[3].points, None);
    assert_eq!(k.candidates[1].rss_kb, (14_000 + 460) * PAGE);
    let m = k.candidates_method.as_ref().unwrap();
    assert_eq!((m.method, m.exact, m.candidates, m.lost), ("task walk at oom:mark_victim", false, 4, 0));
    assert!(m.detail.contains("Race"));
    let b = k.victim.points_breakdown.unwrap();
    assert_eq!(b, Breakdown::new(4556, 0, 20, 900, TOTALPAGES));
    assert_eq!((b.adj_unit_pages, b.adj_pages, b.total), (32, 28_800, 33_376));
    assert_eq!(k.victim.points, Some(b.total), "the kernel's value, equal to the breakdown");
}

#[test]
fn exact_candidates_and_select_done() {
    let mut a = OomAgent::new(cfg(), Options::default(), env());
    // A selection that killed nothing: its candidates are dropped at out_of_memory's end.
    let mut c = cand(1, "x", 10, 0, CAND_POINTS | CAND_EXACT);
    c.decision = 1;
    rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    assert!(a.candidates.contains_key(&1));
    let done = OomSelectDoneEvent {
        header: EventHeader { kind: KIND_SELECT_DONE, cpu: 0, boot_ns: 1 },
        decision: 1,
        calls: 1,
        emitted: 1,
        dropped: 0,
        ret: 1,
    };
    assert!(rec(&mut a, KIND_SELECT_DONE, &bytes(&done)));
    assert!(!a.candidates.contains_key(&1));

    let mut ev = kill_event();
    ev.method = OOM_METHOD_FEXIT;
    ev.dflags = OOM_D_OC_ENTRY | OOM_D_HAVE_OC | OOM_D_HAVE_CHOSEN_POINTS;
    let c = cand(100, "victim", 4096, 900, CAND_POINTS | CAND_EXACT);
    rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    rec(&mut a, KIND_KILL, &bytes(&ev));
    let k = &a.pending[0].kill;
    let m = k.candidates_method.as_ref().unwrap();
    assert_eq!((m.method, m.exact), ("oom_badness fexit", true));
    assert!(k.constraint_source.contains("out_of_memory()'s argument"));
    assert_eq!(k.domain.memcg, None, "no memcg read for this record");
}

#[test]
fn group_members_join_their_decision() {
    let mut a = assembled();
    let mut m = kill_event();
    m.victim_pid = 500;
    m.victim_tgid = 500;
    m.victim_comm = comm("sibling");
    m.dflags |= OOM_D_GROUP_MEMBER;
    assert!(rec(&mut a, KIND_KILL, &bytes(&m)));
    assert_eq!(a.pending.len(), 1, "one decision");
    let k = &a.pending[0].kill;
    assert_eq!(k.group_kills.len(), 1);
    assert_eq!(k.group_kills[0].pid, 500);
    assert_eq!(k.group_kills[0].rss_kb, Some((4096 + 460) * PAGE));
    assert_eq!(a.pending[0].tracks.len(), 2);
    let mut c = cfg();
    c.pid = Some(500);
    assert!(matches(k, &c), "a group member's pid selects the decision");
    c.pid = Some(999);
    assert!(!matches(k, &c));
    c.pid = None;
    c.cgroup = Some("/svc".into());
    assert!(matches(k, &c));
    c.cgroup = Some("/sv".into());
    assert!(!matches(k, &c));
}

fn reaper_event(pid: u32, phase: u32, ns: u64) -> OomReaperEvent {
    OomReaperEvent {
        header: EventHeader { kind: KIND_REAPER, cpu: 0, boot_ns: ns },
        decision: DECISION,
        pid,
        phase,
    }
}

#[test]
fn waits_for_the_victims_exit_or_the_reaper() {
    let mut a = assembled();
    let now = Instant::now();
    let p = &mut a.pending[0];
    assert!(!p.ready(now), "just marked");
    p.last_mark = now - Duration::from_millis(200);
    p.created = p.last_mark;
    assert!(!p.ready(now), "the victim has not exited, the reaper may still come");
    assert!(p.ready(now + NO_EXIT_WAIT), "the reaper was not woken in time: done");
    // The exit completes it (after the group settle time).
    a.on_reaper(&reaper_event(100, REAPER_EXIT, 8_000_000));
    assert!(a.pending[0].ready(now));
    let r = reaper_summary(&a.pending[0].tracks);
    assert_eq!(r.victim_exit_ms, Some(3.0));
    assert!(r.summary.contains("exited 3 ms after the kill; the OOM reaper was not needed"), "{}", r.summary);

    // The reaper path: woken at 2 s, reaped in 4 ms.
    let mut b = assembled();
    for (phase, ns) in [(REAPER_WAKE, 2_005_000_000), (REAPER_START, 2_006_000_000), (REAPER_FINISH, 2_010_000_000)] {
        b.on_reaper(&reaper_event(100, phase, ns));
    }
    let t = &b.pending[0].tracks[0];
    assert!(t.ended());
    let r = reaper_summary(&b.pending[0].tracks);
    assert_eq!((r.wake_reaper_ms, r.finish_reaping_ms), (Some(2000.0), Some(2005.0)));
    assert!(r.summary.contains("the OOM reaper woke 2000 ms after the kill, reaped the victim in 4.00 ms"), "{}", r.summary);
    // Unrelated pids are ignored.
    b.on_reaper(&reaper_event(12345, REAPER_EXIT, 1));
    assert!(b.pending[0].tracks.iter().all(|t| t.pid != 12345));
}

#[test]
fn flush_prints_and_forgets() {
    let mut a = assembled();
    a.cfg.pid = Some(1); // filtered out: nothing printed by the test
    let mut sinks = Sinks::default();
    a.flush(true, &mut Out::new("oom", &mut sinks));
    assert!(a.pending.is_empty());
    assert_eq!(a.done.last().map(|d| d.0), Some(DECISION));
}

#[test]
fn notes_say_why_this_victim() {
    let a = assembled();
    let mut k = a.pending[0].kill.clone();
    k.reaper = Some(reaper_summary(&a.pending[0].tracks));
    let n = oom_report::notes(&k, PAGE, Some(20 << 20));
    let all = n.join("\n");
    assert!(
        all.contains("victim is not the largest process: pid 200 (grower) uses 56.6 MiB, the victim 17.9 MiB; its oom_score_adj +900 added 28800 pages (112.5 MiB-equivalent)"),
        "{all}"
    );
    assert!(all.contains("oom_score_adj -1000 protected pid 400 (protected, 197.1 MiB resident)"), "{all}");
    assert!(all.contains("constraint memcg: /svc/job hit its limit of 128.0 MiB; the host had 20.00 GiB available"), "{all}");
    assert!(all.contains("the trigger pid 200 (grower) was not chosen"), "{all}");
}

#[test]
fn text_report_shows_top_candidates() {
    let a = assembled();
    let mut k = a.pending[0].kill.clone();
    k.reaper = Some(reaper_summary(&a.pending[0].tracks));
    k.notes = oom_report::notes(&k, PAGE, None);
    let t = oom_report::render_text(&k, PAGE, Some(2));
    assert!(t.contains("OOM KILL  pid 100 (victim)  constraint memcg /svc/job  triggered by pid 200 (grower)"), "{t}");
    assert!(t.contains("totalpages 32768 (the domain's size: 128.0 MiB)"), "{t}");
    assert!(t.contains("order 0 (4 KiB), gfp GFP_HIGHUSER_MOVABLE|__GFP_COMP"), "{t}");
    assert!(t.contains("points 33376 = rss 4556 + swap 0 + page tables 20 + adj +900 x 32 = 28800   (the kernel's score)"), "{t}");
    assert!(t.contains("4 evaluated, task walk at oom:mark_victim (approximate)"), "{t}");
    assert!(t.contains("<- killed"));
    assert!(t.contains("... 2 more (--all-candidates to list them)"), "{t}");
    assert!(!t.contains("(oom_score_adj -1000)"), "the skipped row is past the top 2: {t}");
    assert!(t.contains("(approximate: scores recomputed in BPF just after the kernel's own scan"), "{t}");
    let all = oom_report::render_text(&k, PAGE, None);
    assert!(all.contains("(oom_score_adj -1000)"), "{all}");
    assert!(!all.contains("more (--all-candidates"));
}

#[test]
fn retries_are_decoded_when_recent() {
    let mut ev = kill_event();
    ev.dflags |= OOM_D_HAVE_RETRY;
    ev.header.boot_ns = 20_000_000_000;
    ev.retry = OomRetry {
        first_ns: 19_000_000_000,
        last_ns: 19_900_000_000,
        reclaim_events: 48,
        compact_events: 2,
        rrz_node: 0,
        rrz_zone_idx: 2,
        rrz_order: 0,
        rrz_no_progress_loops: 16,
        rrz_max_no_progress_loops: 16,
        rrz_wmark_check: 0,
        rrz_reclaimable: 10,
        rrz_available: 100,
        rrz_min_wmark: 200,
        cr_order: 0,
        cr_priority: 0,
        cr_result: 1,
        cr_retries: 3,
        cr_max_retries: 16,
        cr_ret: 0,
    };
    let r = retries(&ev, &env()).unwrap();
    assert_eq!(r.no_progress_loops, 16);
    assert_eq!(r.last_zone.as_deref(), Some("node 0 Normal"));
    assert_eq!(r.available_kb, 400);
    assert_eq!(r.compaction_result.as_deref(), Some("failed"));
    assert_eq!(r.compaction_priority.as_deref(), Some("COMPACT_PRIO_SYNC_FULL"));
    assert_eq!(r.span_ms, 900.0);
    ev.retry.last_ns = 1;
    assert!(retries(&ev, &env()).is_none(), "stale retries belong to an older allocation");
}

#[test]
fn candidate_reasons_and_inferred_domains() {
    let c = candidate(&cand(9, "zombie", 0, 0, CAND_SKIP_NO_MM), &env());
    assert_eq!((c.points, c.skipped), (None, Some(oom_report::SKIP_NO_MM)));
    let c = candidate(&cand(9, "v", 0, 0, CAND_PENDING_VICTIM), &env());
    assert_eq!(c.skipped, Some(oom_report::SKIP_PENDING));
    let mut ev = kill_event();
    ev.dflags = OOM_D_INFERRED | OOM_D_HAVE_MEMCG;
    ev.constraint = CONSTRAINT_NONE;
    ev.totalpages = 6_000_000;
    let k = from_event(&ev, &env());
    assert_eq!(k.constraint, "global");
    assert!(k.constraint_source.starts_with("inferred"));
    assert!(k.domain.totalpages_source.contains("/proc/meminfo"), "{}", k.domain.totalpages_source);
    assert_eq!(k.order, None, "not known without the oom_control");
    assert_eq!(k.victim.points, None);
}
