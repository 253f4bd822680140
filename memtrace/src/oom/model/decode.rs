//! The oom family's ring-buffer records read into the record's parts: the kill (constraint,
//! domain, request, victim, trigger), a candidate, the allocator's retries, and how the
//! candidate table was obtained.

use memtrace_common::oom::{
    CAND_ORIGIN, CAND_PENDING_VICTIM, CAND_POINTS, CAND_SKIP_ADJ_MIN, CAND_SKIP_NO_MM,
    CAND_SKIP_OLD_VICTIM, CAND_SKIP_OOM_SKIP, CAND_SKIP_OTHER, CAND_SKIP_VFORK, CONSTRAINT_CPUSET,
    CONSTRAINT_MEMCG, CONSTRAINT_MEMORY_POLICY, CONSTRAINT_NONE, OOM_D_HAVE_CHOSEN_POINTS,
    OOM_D_HAVE_MEMCG, OOM_D_HAVE_OC, OOM_D_HAVE_RETRY, OOM_D_INFERRED, OOM_D_NO_SELECTION,
    OOM_D_OC_ENTRY, OOM_D_OC_STACK, OOM_D_WALK_TRUNCATED, OOM_D_WALK_UNFINISHED, OOM_HAVE_MM,
    OOM_HAVE_TASK,
    OOM_METHOD_FEXIT, OOM_METHOD_KRETPROBE, OOM_METHOD_WALK, OOM_NO_MM, OomCandidateEvent,
    OomKillEvent,
};

use super::Env;
use crate::{
    engine::format,
    kernel::{cgroup, cstr},
    oom::report::{
        Breakdown, Candidate, Constraint, ConstraintSource, Domain, DomainKind, Lost, Method,
        MethodKind, OomKill, PointsSource, Retries, Skip, Trigger, Victim,
    },
};

/// Page counts beyond this (4 PiB of 4 KiB pages) are no kernel's: a record carrying one
/// was corrupted, and its counters are clamped here so that no sum or product of them
/// overflows (the records come from BPF, but a decoder must not panic on any bytes).
const MAX_PAGES: i64 = 1 << 40;
/// Bytes and scores: the same bound in bytes, with room (PAGE_COUNTER_MAX, the memcg
/// "unlimited", is 2^51 pages and stays as it is).
const MAX_BIG: i64 = 1 << 52;

fn pages(v: i64) -> i64 {
    v.clamp(-MAX_PAGES, MAX_PAGES)
}

fn upages(v: u64) -> u64 {
    v.min(MAX_PAGES as u64)
}

fn big(v: i64) -> i64 {
    v.clamp(-MAX_BIG, MAX_BIG)
}

fn adj(v: i32) -> i32 {
    v.clamp(-1000, 1000)
}

/// A kill record with every counter within what a kernel can report.
pub fn sane_kill(mut ev: OomKillEvent) -> OomKillEvent {
    for v in [&mut ev.rss_anon, &mut ev.rss_file, &mut ev.rss_shmem, &mut ev.swap_ents] {
        *v = pages(*v);
    }
    ev.pgtables_bytes = big(ev.pgtables_bytes);
    ev.chosen_points = big(ev.chosen_points);
    ev.victim_oom_score_adj = adj(ev.victim_oom_score_adj);
    // -1: sysrq; MAX_PAGE_ORDER is 10 or so.
    ev.order = ev.order.clamp(-1, 40);
    ev.total_vm_pages = upages(ev.total_vm_pages);
    ev.totalpages = upages(ev.totalpages);
    ev.memcg_usage = ev.memcg_usage.min(MAX_BIG as u64);
    ev.memcg_max = ev.memcg_max.min(MAX_BIG as u64);
    let r = &mut ev.retry;
    for v in [&mut r.rrz_reclaimable, &mut r.rrz_available, &mut r.rrz_min_wmark] {
        *v = upages(*v);
    }
    ev
}

/// A candidate record with every counter within what a kernel can report.
pub fn sane_candidate(mut ev: OomCandidateEvent) -> OomCandidateEvent {
    for v in [&mut ev.rss_anon, &mut ev.rss_file, &mut ev.rss_shmem, &mut ev.swap_ents] {
        *v = pages(*v);
    }
    ev.pgtables_bytes = big(ev.pgtables_bytes);
    ev.points = big(ev.points);
    ev.oom_score_adj = adj(ev.oom_score_adj);
    ev.totalpages = upages(ev.totalpages);
    ev
}

/// A candidate record as received (its cgroup named later).
pub fn candidate(ev: &OomCandidateEvent, env: &Env) -> Candidate {
    let p = env.page_kib;
    let skipped = [
        (CAND_SKIP_ADJ_MIN, Skip::AdjMin),
        (CAND_SKIP_OOM_SKIP, Skip::OomSkipFlag),
        (CAND_SKIP_VFORK, Skip::Vfork),
        (CAND_SKIP_NO_MM, Skip::NoMm),
        (CAND_SKIP_OLD_VICTIM, Skip::OldVictim),
        (CAND_PENDING_VICTIM, Skip::Pending),
        (CAND_SKIP_OTHER, Skip::Other),
    ]
    .into_iter()
    .find(|(bit, _)| ev.flags & bit != 0)
    .map(|(_, why)| why);
    let rss = ev.rss_anon + ev.rss_file + ev.rss_shmem;
    let pgt = ev.pgtables_bytes >> env.page_shift;
    let points = (ev.flags & CAND_POINTS != 0).then_some(ev.points);
    Candidate {
        pid: ev.pid,
        tgid: ev.tgid,
        comm: cstr(&ev.comm),
        cgroup: None,
        cgroup_id: ev.cgroup_id,
        points,
        oom_score_adj: ev.oom_score_adj,
        rss_kb: rss * p,
        rss_anon_kb: ev.rss_anon * p,
        rss_file_kb: ev.rss_file * p,
        rss_shmem_kb: ev.rss_shmem * p,
        swap_kb: ev.swap_ents * p,
        pgtables_kb: ev.pgtables_bytes / 1024,
        skipped,
        victim: false,
        breakdown: (points.is_some() && ev.flags & CAND_ORIGIN == 0).then(|| {
            Breakdown::new(rss, ev.swap_ents, pgt, i64::from(ev.oom_score_adj), ev.totalpages)
        }),
    }
}

fn constraint(c: u32) -> Constraint {
    match c {
        CONSTRAINT_NONE => Constraint::Global,
        CONSTRAINT_CPUSET => Constraint::Cpuset,
        CONSTRAINT_MEMORY_POLICY => Constraint::Mempolicy,
        CONSTRAINT_MEMCG => Constraint::Memcg,
        _ => Constraint::Unknown,
    }
}

/// The domain of a constraint, and what its totalpages mean.
fn domain_kind(c: Constraint) -> (DomainKind, &'static str) {
    match c {
        Constraint::Memcg => (
            DomainKind::Memcg,
            "the OOM memcg's limit (memory.max or limit_in_bytes, plus any swap allowance)",
        ),
        Constraint::Global => (DomainKind::System, "all RAM + swap"),
        Constraint::Cpuset => (DomainKind::Cpuset, "the allowed nodes' memory + swap"),
        Constraint::Mempolicy => (DomainKind::Mempolicy, "the policy's nodes' memory + swap"),
        Constraint::Unknown => (DomainKind::Unknown, "unknown"),
    }
}

/// The OOM domain of a kill record.
fn domain(ev: &OomKillEvent, env: &Env, constraint: Constraint, inferred: bool) -> Domain {
    let page = env.page_kib;
    let have_oc = ev.dflags & OOM_D_HAVE_OC != 0;
    let totalpages = (have_oc || inferred).then_some(ev.totalpages).filter(|&t| t > 0);
    let (kind, meaning) = domain_kind(constraint);
    let totalpages_source = if have_oc {
        format!("totalpages is oom_control.totalpages = {meaning}")
    } else if inferred && constraint == Constraint::Memcg {
        format!("totalpages inferred = {meaning}; oom_control not found")
    } else if inferred {
        "totalpages approximated by MemTotal + SwapTotal from /proc/meminfo when memtrace \
         started; oom_control not found"
            .to_string()
    } else {
        "totalpages unknown on this kernel".to_string()
    };
    let have_memcg = ev.dflags & OOM_D_HAVE_MEMCG != 0;
    Domain {
        kind,
        memcg: have_memcg.then(|| cgroup::render(&ev.oom_memcg)).flatten(),
        memcg_limit_kb: have_memcg.then_some(ev.memcg_max as i64 * page),
        memcg_usage_kb: have_memcg.then_some(ev.memcg_usage as i64 * page),
        totalpages,
        totalpages_kb: totalpages.map(|t| t as i64 * page),
        totalpages_source,
    }
}

/// The kill record as a report, without candidates, reaper or notes yet.
pub fn from_event(ev: &OomKillEvent, env: &Env) -> OomKill {
    let page = env.page_kib;
    let have_task = ev.flags & OOM_HAVE_TASK != 0;
    let have_mm = ev.flags & OOM_HAVE_MM != 0;
    let no_mm = ev.flags & OOM_NO_MM != 0;
    let pages = |v: i64| if no_mm { Some(0) } else { have_mm.then_some(v.max(0) * page) };
    let d = ev.dflags;
    let have_oc = d & OOM_D_HAVE_OC != 0;
    let inferred = d & OOM_D_INFERRED != 0 && !have_oc;
    let constraint =
        if have_oc || inferred { constraint(ev.constraint) } else { Constraint::Unknown };
    let constraint_source = if d & OOM_D_OC_ENTRY != 0 && have_oc {
        ConstraintSource::Entry
    } else if d & OOM_D_OC_STACK != 0 && have_oc {
        ConstraintSource::Stack
    } else if inferred {
        ConstraintSource::Inferred
    } else {
        ConstraintSource::Unknown
    };
    let mut notes = Vec::new();
    if !have_task {
        notes.push(
            "this kernel's oom:mark_victim passes only the pid: victim details unavailable"
                .to_string(),
        );
    }
    if no_mm {
        notes.push("victim had already released its memory (no mm) when marked".to_string());
    }
    if d & OOM_D_NO_SELECTION != 0 {
        notes.push(
            "no selection: the OOM-invoking task was itself exiting, so the kernel let it use \
             memory reserves instead of killing another process"
                .to_string(),
        );
    }
    if d & OOM_D_WALK_TRUNCATED != 0 {
        notes.push(format!(
            "the candidate walk stopped at its task limit: the table is partial, the {} \
             processes of the domain past it are counted in lost",
            ev.cand_unwalked
        ));
    }
    if d & OOM_D_WALK_UNFINISHED != 0 {
        notes.push(
            "the candidate walk did not get back to where it started (a task list read \
             failed): lost may be short"
                .into(),
        );
    }
    let chosen = d & OOM_D_HAVE_CHOSEN_POINTS != 0;
    OomKill {
        time: format::boot_time(ev.header.boot_ns),
        decision_id: ev.decision,
        constraint,
        constraint_source,
        domain: domain(ev, env, constraint, inferred),
        order: have_oc.then_some(ev.order),
        gfp_mask: have_oc.then(|| format!("{:#x}", ev.gfp_mask)),
        gfp_flags: have_oc.then(|| env.gfp.decode(u64::from(ev.gfp_mask))),
        victim: Victim {
            pid: ev.victim_pid,
            tgid: ev.victim_tgid,
            comm: cstr(&ev.victim_comm),
            uid: (have_task && ev.victim_uid != u32::MAX).then_some(ev.victim_uid),
            oom_score_adj: have_task.then_some(ev.victim_oom_score_adj),
            rss_anon_kb: pages(ev.rss_anon),
            rss_file_kb: pages(ev.rss_file),
            rss_shmem_kb: pages(ev.rss_shmem),
            swap_kb: pages(ev.swap_ents),
            pgtables_kb: if no_mm {
                Some(0)
            } else {
                have_mm.then_some(ev.pgtables_bytes.max(0) / 1024)
            },
            total_vm_kb: pages(ev.total_vm_pages as i64),
            cgroup: cgroup::render(&ev.victim_cgroup),
            cgroup_id: cgroup::render(&ev.victim_cgroup).map(|_| ev.victim_cgroup.id),
            points: chosen.then_some(ev.chosen_points),
            points_source: chosen.then_some(PointsSource::Kernel),
            points_breakdown: None,
        },
        trigger: Trigger {
            pid: ev.trigger_pid,
            tgid: ev.trigger_tgid,
            comm: cstr(&ev.trigger_comm),
            cgroup: cgroup::render(&ev.trigger_cgroup),
        },
        group_kills: Vec::new(),
        candidates_method: None,
        candidates: Vec::new(),
        reaper: None,
        retries: retries(ev, env),
        notes,
    }
}

/// The trigger's retries, when recent enough to belong to this OOM.
pub fn retries(ev: &OomKillEvent, env: &Env) -> Option<Retries> {
    if ev.dflags & OOM_D_HAVE_RETRY == 0 {
        return None;
    }
    let r = &ev.retry;
    if ev.header.boot_ns.saturating_sub(r.last_ns) > 10_000_000_000 {
        return None;
    }
    let page = env.page_kib;
    let compacted = r.compact_events > 0;
    Some(Retries {
        reclaim_checks: r.reclaim_events,
        no_progress_loops: r.rrz_no_progress_loops,
        max_no_progress_loops: r.rrz_max_no_progress_loops,
        order: r.rrz_order,
        last_zone: (r.reclaim_events > 0).then(|| {
            format!("node {} {}", r.rrz_node, Env::name(&env.zones, i64::from(r.rrz_zone_idx)))
        }),
        reclaimable_kb: r.rrz_reclaimable as i64 * page,
        available_kb: r.rrz_available as i64 * page,
        min_wmark_kb: r.rrz_min_wmark as i64 * page,
        compaction_retries: compacted.then_some(r.cr_retries),
        compaction_max_retries: compacted.then_some(r.cr_max_retries),
        compaction_result: compacted
            .then(|| Env::name(&env.compact_results, i64::from(r.cr_result))),
        compaction_priority: compacted
            .then(|| Env::name(&env.compact_priorities, i64::from(r.cr_priority))),
        span_ms: r.last_ns.saturating_sub(r.first_ns) as f64 / 1e6,
    })
}

/// How the candidates of this kill were obtained, with `received` of them, and those the
/// kernel says are missing (ring buffer full, past the walk's limit); the agent adds its
/// own.
pub fn method(ev: &OomKillEvent, received: usize) -> Option<Method> {
    let exact = "every oom_badness() return while the OOM-invoking task was inside \
                 out_of_memory()";
    let (method, detail) = match ev.method {
        OOM_METHOD_FEXIT => {
            (MethodKind::Fexit, format!("{exact} (fentry): the kernel's own scores"))
        }
        OOM_METHOD_KRETPROBE => {
            (MethodKind::Kretprobe, format!("{exact} (kprobe): the kernel's own scores"))
        }
        OOM_METHOD_WALK => (
            MethodKind::Walk,
            format!(
                "the OOM domain's processes walked in BPF right after the kernel chose the \
                 victim, recomputing oom_badness() (rss + swap + page tables + adj x \
                 totalpages/1000){}. Race: counters are read microseconds after the kernel's \
                 own scan, so a score can differ by what a process touched or freed in \
                 between, and processes that forked or exited in between differ{}",
                if ev.dflags & (OOM_D_OC_STACK | OOM_D_OC_ENTRY) != 0 {
                    " with the kernel's totalpages"
                } else {
                    " with an inferred totalpages"
                },
                if matches!(ev.constraint, CONSTRAINT_CPUSET | CONSTRAINT_MEMORY_POLICY) {
                    "; cpuset/mempolicy eligibility is not checked"
                } else {
                    ""
                }
            ),
        ),
        _ => return None,
    };
    let exact = method != MethodKind::Walk;
    let lost = Lost {
        ring_full: ev.cand_dropped,
        walk_limit: if exact { 0 } else { ev.cand_unwalked },
        ..Lost::default()
    };
    let candidates = received;
    Some(Method { method, exact, detail, candidates, lost: lost.total(), lost_reasons: lost })
}

#[cfg(test)]
mod tests {
    use memtrace_common::{
        CGROUP_UNAVAILABLE,
        oom::{OOM_METHOD_NONE, OomRetry},
    };

    use super::*;
    use crate::oom::fixtures::{PAGE, TOTALPAGES, cand, env, kill_event};

    #[test]
    fn decodes_the_kill_record() {
        let k = from_event(&kill_event(), &env());
        assert_eq!(k.victim.pid, 100);
        assert_eq!(k.victim.comm, "victim");
        assert_eq!(k.victim.uid, Some(1000));
        assert_eq!(k.victim.oom_score_adj, Some(900));
        assert_eq!(k.victim.rss_anon_kb, Some(4096 * PAGE));
        assert_eq!(k.victim.pgtables_kb, Some(80));
        assert_eq!(k.victim.cgroup.as_deref(), Some("/svc/job"));
        assert_eq!(k.victim.points, Some(4096 + 460 + 20 + 28_800));
        assert_eq!(k.victim.points_source, Some(PointsSource::Kernel));
        assert_eq!(k.trigger.tgid, 200);
        assert_eq!(k.constraint, Constraint::Memcg);
        assert!(k.constraint_source.as_str().contains("kernel stack"));
        assert_eq!(k.domain.kind, DomainKind::Memcg);
        assert_eq!(k.domain.memcg.as_deref(), Some("/svc/job"));
        assert_eq!(k.domain.memcg_limit_kb, Some(32_768 * PAGE));
        assert_eq!(k.domain.totalpages, Some(TOTALPAGES));
        assert_eq!(k.domain.totalpages_kb, Some(TOTALPAGES as i64 * PAGE));
        assert!(k.domain.totalpages_source.contains("memcg's limit"));
        assert_eq!(k.order, Some(0));
        assert_eq!(k.gfp_mask.as_deref(), Some("0x140cca"));
        assert_eq!(
            k.gfp_flags.as_deref(),
            Some(&["GFP_HIGHUSER_MOVABLE".to_string(), "__GFP_COMP".into()][..])
        );
        let json = serde_json::to_value(&k).unwrap();
        // The foundation's fields stay.
        for f in ["pid", "comm", "uid", "oom_score_adj", "rss_anon_kb", "rss_file_kb",
            "rss_shmem_kb", "pgtables_kb", "total_vm_kb", "cgroup"] {
            assert!(!json["victim"][f].is_null(), "victim.{f}");
        }
        assert_eq!(json["domain"]["totalpages"], TOTALPAGES);
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
        assert_eq!(k.constraint, Constraint::Unknown);
        assert_eq!(k.domain.totalpages, None);
        assert!(k.notes.iter().any(|n| n.contains("only the pid")));
        assert!(method(&ev, 0).is_none());
    }

    #[test]
    fn methods_say_how_the_table_was_obtained() {
        let mut ev = kill_event();
        let m = method(&ev, 4).unwrap();
        assert_eq!((m.method, m.exact, m.candidates, m.lost), (MethodKind::Walk, false, 4, 0));
        assert!(m.detail.contains("Race") && m.detail.contains("the kernel's totalpages"));
        ev.method = OOM_METHOD_FEXIT;
        let m = method(&ev, 1).unwrap();
        assert_eq!((m.method, m.exact), (MethodKind::Fexit, true));
        assert!(m.detail.ends_with("(fentry): the kernel's own scores"), "{}", m.detail);
        // What the kernel lost: ring buffer full, and (walk only) past the walk's limit.
        ev.cand_dropped = 5;
        ev.cand_unwalked = 7;
        let m = method(&ev, 1).unwrap();
        assert_eq!((m.lost, m.lost_reasons.ring_full, m.lost_reasons.walk_limit), (5, 5, 0));
        ev.method = OOM_METHOD_WALK;
        let m = method(&ev, 1).unwrap();
        assert_eq!((m.lost, m.lost_reasons.ring_full, m.lost_reasons.walk_limit), (12, 5, 7));
        assert_eq!(m.lost_reasons.describe(), "5 ring buffer full, 7 past the walk's task limit");
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
            rrz_zone_idx: 2,
            rrz_no_progress_loops: 16,
            rrz_max_no_progress_loops: 16,
            rrz_reclaimable: 10,
            rrz_available: 100,
            rrz_min_wmark: 200,
            cr_result: 1,
            cr_retries: 3,
            cr_max_retries: 16,
            ..OomRetry::default()
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
        assert_eq!((c.points, c.skipped), (None, Some(Skip::NoMm)));
        let c = candidate(&cand(9, "v", 0, 0, CAND_PENDING_VICTIM), &env());
        assert_eq!(c.skipped, Some(Skip::Pending));
        let mut ev = kill_event();
        ev.dflags = OOM_D_INFERRED | OOM_D_HAVE_MEMCG;
        ev.constraint = CONSTRAINT_NONE;
        ev.totalpages = 6_000_000;
        let k = from_event(&ev, &env());
        assert_eq!(k.constraint, Constraint::Global);
        assert_eq!(k.constraint_source, ConstraintSource::Inferred);
        let source = &k.domain.totalpages_source;
        assert!(source.contains("/proc/meminfo"), "{source}");
        assert_eq!(k.order, None, "not known without the oom_control");
        assert_eq!(k.victim.points, None);
    }
}
