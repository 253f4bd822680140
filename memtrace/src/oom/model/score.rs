//! Scores: the kernel's formula (oom_badness) and its parts, the victim's row and
//! breakdown, the candidate order.

use memtrace_common::oom::{OOM_D_HAVE_CHOSEN_POINTS, OOM_HAVE_MM, OOM_METHOD_WALK, OomKillEvent};

use super::Env;
use crate::oom::report::{Breakdown, Candidate, OomKill, PointsSource, Skip};

impl Breakdown {
    /// oom_badness() from its parts (pages), `totalpages` the OOM domain's size.
    pub fn new(rss: i64, swap: i64, pgtables: i64, adj: i64, totalpages: u64) -> Breakdown {
        let unit = (totalpages / 1000) as i64;
        Breakdown {
            rss_pages: rss,
            swap_pages: swap,
            pgtables_pages: pgtables,
            oom_score_adj: adj,
            adj_unit_pages: unit,
            adj_pages: adj * unit,
            total: rss + swap + pgtables + adj * unit,
        }
    }
}

/// Highest points first, skipped last, then by pid.
pub fn sort_candidates(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.points.cmp(&a.points).then(a.pid.cmp(&b.pid)));
}

/// The victim's counters in the kill record: (anon, file, shmem) resident pages and its
/// breakdown in a domain of `totalpages`.
fn kill_breakdown(ev: &OomKillEvent, env: &Env, totalpages: u64) -> ([i64; 3], Breakdown) {
    let rss = [ev.rss_anon.max(0), ev.rss_file.max(0), ev.rss_shmem.max(0)];
    let b = Breakdown::new(
        rss.iter().sum(),
        ev.swap_ents.max(0),
        ev.pgtables_bytes.max(0) >> env.page_shift,
        i64::from(ev.victim_oom_score_adj),
        totalpages,
    );
    (rss, b)
}

/// The walk reads the victim after the kill's own record: a victim that exits fast may have
/// no memory left by then. Its row then comes from the kill record's counters (read at the
/// tracepoint, before the walk), and a note says so. The same when its record is missing
/// (the walk's first, it was lost): true then, the row stands for a lost record.
pub fn walk_victim_row(
    cands: &mut Vec<Candidate>,
    ev: &OomKillEvent,
    env: &Env,
    kill: &mut OomKill,
) -> bool {
    let idx = cands.iter().position(|c| c.tgid == ev.victim_tgid);
    let gone = idx.is_none_or(|i| {
        let released = matches!(cands[i].skipped, Some(Skip::NoMm | Skip::OomSkipFlag));
        cands[i].points.is_none() && released
    });
    if !gone || ev.flags & OOM_HAVE_MM == 0 || ev.totalpages == 0 {
        return false;
    }
    let p = env.page_kib;
    let ([anon, file, shmem], b) = kill_breakdown(ev, env, ev.totalpages);
    let points = if ev.dflags & OOM_D_HAVE_CHOSEN_POINTS != 0 { ev.chosen_points } else { b.total };
    let row = Candidate {
        pid: ev.victim_pid,
        tgid: ev.victim_tgid,
        comm: kill.victim.comm.clone(),
        cgroup: kill.victim.cgroup.clone(),
        cgroup_id: ev.victim_cgroup.id,
        points: Some(points),
        oom_score_adj: ev.victim_oom_score_adj,
        rss_kb: (anon + file + shmem) * p,
        rss_anon_kb: anon * p,
        rss_file_kb: file * p,
        rss_shmem_kb: shmem * p,
        swap_kb: ev.swap_ents.max(0) * p,
        pgtables_kb: ev.pgtables_bytes.max(0) / 1024,
        skipped: None,
        victim: true,
        breakdown: Some(b),
    };
    let missing = idx.is_none();
    match idx {
        Some(i) => cands[i] = row,
        None => cands.push(row),
    }
    kill.notes.push(if missing {
        "the victim's candidate record was lost: its row uses the counters read at the kill"
            .to_string()
    } else {
        "the victim had already released its memory when the walk reached it: its row uses \
         the counters read at the kill"
            .to_string()
    });
    missing
}

/// The victim's score and its parts: from its candidate row when there is one (read in the
/// same instant as the others), else from the kill record's counters.
pub fn victim_breakdown(kill: &mut OomKill, ev: &OomKillEvent, env: &Env, cands: &[Candidate]) {
    let v = &mut kill.victim;
    if let Some(c) = cands.iter().find(|c| c.victim) {
        v.points_breakdown = c.breakdown;
        if v.points.is_none() {
            v.points = c.points;
            v.points_source = Some(if ev.method == OOM_METHOD_WALK {
                PointsSource::Walk
            } else {
                PointsSource::Exact
            });
        }
        return;
    }
    let Some(total) = kill.domain.totalpages else { return };
    if ev.flags & OOM_HAVE_MM == 0 {
        return;
    }
    let (_, b) = kill_breakdown(ev, env, total);
    v.points_breakdown = Some(b);
    if v.points.is_none() {
        v.points = Some(b.total);
        v.points_source = Some(PointsSource::Recomputed);
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::oom::{CAND_POINTS, CAND_SKIP_NO_MM};

    use super::*;
    use crate::oom::{
        fixtures::{DECISION, PAGE, TOTALPAGES, cand, env, kill_event},
        model::decode::{candidate, from_event},
    };

    #[test]
    fn the_formula_and_its_parts() {
        let b = Breakdown::new(4556, 0, 20, 900, TOTALPAGES);
        assert_eq!((b.adj_unit_pages, b.adj_pages, b.total), (32, 28_800, 33_376));
        let b = Breakdown::new(1000, 10, 5, -500, 6_000_000);
        assert_eq!((b.adj_unit_pages, b.adj_pages, b.total), (6000, -3_000_000, -2_998_985));
    }

    /// A walk that found the victim already gone: its row and score come from the kill.
    #[test]
    fn a_victim_gone_before_the_walk_gets_its_row_from_the_kill() {
        let (ev, env) = (kill_event(), env());
        let mut kill = from_event(&ev, &env);
        let mut gone = cand(100, "victim", 0, 900, CAND_SKIP_NO_MM);
        gone.decision = DECISION;
        let grower = cand(200, "grower", 14_000, 0, CAND_POINTS);
        let mut cands = vec![candidate(&gone, &env), candidate(&grower, &env)];
        assert!(!walk_victim_row(&mut cands, &ev, &env, &mut kill), "replaced, not recovered");
        let row = &cands[0];
        assert!(row.victim && row.skipped.is_none());
        assert_eq!(row.points, Some(ev.chosen_points), "the kernel's own score");
        assert_eq!(row.rss_anon_kb, 4096 * PAGE);
        let notes = kill.notes.join("\n");
        assert!(notes.contains("already released its memory"), "{notes}");
        // A live victim row stays as the walk read it.
        let mut live = vec![candidate(&cand(100, "victim", 4096, 900, CAND_POINTS), &env)];
        let before = live[0].points;
        walk_victim_row(&mut live, &ev, &env, &mut from_event(&ev, &env));
        assert_eq!((live[0].points, live[0].victim), (before, false));
        // A victim whose record was lost: its row is recovered from the kill.
        let mut lost = vec![candidate(&grower, &env)];
        let mut kill = from_event(&ev, &env);
        assert!(walk_victim_row(&mut lost, &ev, &env, &mut kill));
        assert_eq!((lost.len(), lost[1].pid, lost[1].victim), (2, 100, true));
        assert!(kill.notes.join("\n").contains("candidate record was lost"));
    }

    #[test]
    fn the_victims_breakdown_comes_from_its_row_or_the_kill() {
        let (mut ev, env) = (kill_event(), env());
        let mut row = candidate(&cand(100, "victim", 4096, 900, CAND_POINTS), &env);
        row.victim = true;
        let mut kill = from_event(&ev, &env);
        victim_breakdown(&mut kill, &ev, &env, std::slice::from_ref(&row));
        assert_eq!(kill.victim.points_breakdown, row.breakdown);
        assert_eq!(kill.victim.points_source, Some(PointsSource::Kernel), "chosen_points kept");
        // No row, no chosen points: recomputed from the kill's counters.
        ev.dflags &= !OOM_D_HAVE_CHOSEN_POINTS;
        let mut kill = from_event(&ev, &env);
        victim_breakdown(&mut kill, &ev, &env, &[]);
        assert_eq!(kill.victim.points, Some(4556 + 20 + 28_800));
        assert_eq!(kill.victim.points_source, Some(PointsSource::Recomputed));
        // A row without chosen points: the walk's score.
        let mut kill = from_event(&ev, &env);
        victim_breakdown(&mut kill, &ev, &env, std::slice::from_ref(&row));
        let v = &kill.victim;
        assert_eq!((v.points, v.points_source), (row.points, Some(PointsSource::Walk)));
    }
}
