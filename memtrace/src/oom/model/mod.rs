//! The OOM decision as pure logic: ring-buffer records read into the `oom_kill` record's
//! parts ([`decode`]), the scores ([`score`]), the victim's fate ([`reaper`]), a decision
//! assembled from its kill and candidates, and the -p / -c filters. What the agent knows of
//! the system comes in as arguments ([`Env`], cgroup names); the only facts read here are
//! the page size ([`Env::new`]) and the boot clock's offset (a record's time).

mod decode;
mod reaper;
mod score;

use memtrace_common::oom::{OOM_METHOD_WALK, OomKillEvent};

pub use self::{
    decode::{candidate, from_event, sane_candidate, sane_kill},
    reaper::{Track, reaper_summary},
};
use self::{
    decode::method,
    score::{sort_candidates, victim_breakdown, walk_victim_row},
};
use super::report::{Candidate, GroupKill, Lost, OomKill};
use crate::{
    engine::family::Filter,
    kernel::{Kernel, cgroup, gfp::Gfp},
};

/// What the records are read with: the page size, the GFP flag table and the
/// tracepoints' enum names.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub page_kib: i64,
    pub page_shift: u32,
    pub gfp: Gfp,
    /// zone_idx and compaction enum names from the tracepoints' formats.
    pub zones: Vec<(i64, String)>,
    pub compact_results: Vec<(i64, String)>,
    pub compact_priorities: Vec<(i64, String)>,
}

impl Env {
    /// From this kernel's tracepoint formats (None: no names, numbers only).
    pub fn new(kernel: Option<&Kernel>) -> Env {
        let page = crate::kernel::page_size();
        let mut e = Env {
            page_kib: (page / 1024) as i64,
            page_shift: page.trailing_zeros(),
            ..Env::default()
        };
        if let Some(k) = kernel {
            e.gfp = Gfp::load(&k.tracefs);
            let fmt = |name: &str| k.format("oom", name).unwrap_or_default();
            e.zones = fmt("reclaim_retry_zone").symbolic("zone_idx");
            let cr = fmt("compact_retry");
            e.compact_results = cr.symbolic("result");
            e.compact_priorities = cr.symbolic("priority");
        }
        e
    }

    /// The name of `v` in `table`, or the number.
    fn name(table: &[(i64, String)], v: i64) -> String {
        table.iter().find(|(n, _)| *n == v).map_or_else(|| v.to_string(), |(_, s)| s.clone())
    }
}

/// A selected kill with its candidates (`agent`: the candidates the agent lost, evicted or
/// never received; the kernel's losses are in `ev`): the victim's row marked, each row's
/// cgroup named (`name`: cgroup id -> path), sorted, how they were obtained and what is
/// missing, the victim's breakdown. Without reaper and notes yet.
pub fn decision(
    ev: &OomKillEvent,
    env: &Env,
    mut cands: Vec<Candidate>,
    agent: Lost,
    mut name: impl FnMut(u64) -> Option<String>,
) -> OomKill {
    let mut kill = from_event(ev, env);
    let recovered = ev.method == OOM_METHOD_WALK && walk_victim_row(&mut cands, ev, env, &mut kill);
    for c in &mut cands {
        c.victim = c.tgid == ev.victim_tgid;
        c.cgroup = if c.victim && kill.victim.cgroup.is_some() {
            kill.victim.cgroup.clone()
        } else {
            name(c.cgroup_id)
        };
    }
    sort_candidates(&mut cands);
    kill.candidates_method = method(ev, cands.len()).map(|mut m| {
        let l = &mut m.lost_reasons;
        l.agent_evicted += agent.agent_evicted;
        l.not_received += agent.not_received;
        if recovered {
            // The victim's row stands for its lost record (the walk's first: when the ring
            // was full from the start, ring_full counted it).
            for n in [&mut l.ring_full, &mut l.not_received, &mut l.agent_evicted] {
                if *n > 0 {
                    *n -= 1;
                    break;
                }
            }
        }
        m.lost = l.total();
        m
    });
    victim_breakdown(&mut kill, ev, env, &cands);
    kill.candidates = cands;
    kill
}

/// A memory.oom.group member's kill record, as a row of its decision.
pub fn group_kill(ev: &OomKillEvent, env: &Env) -> GroupKill {
    let v = from_event(ev, env).victim;
    GroupKill {
        pid: v.pid,
        tgid: v.tgid,
        comm: v.comm,
        cgroup: v.cgroup,
        oom_score_adj: v.oom_score_adj,
        rss_kb: match (v.rss_anon_kb, v.rss_file_kb, v.rss_shmem_kb) {
            (Some(a), Some(f), Some(s)) => Some(a + f + s),
            _ => None,
        },
    }
}

/// Does the decision pass the -p / -c filters? Any of the victim, the trigger, the group
/// members (pid or tgid; their cgroups), or the OOM memcg.
pub fn matches(k: &OomKill, cfg: &Filter) -> bool {
    let mut pids = vec![k.victim.pid, k.victim.tgid, k.trigger.pid, k.trigger.tgid];
    pids.extend(k.group_kills.iter().flat_map(|g| [g.pid, g.tgid]));
    let pid_ok = cfg.pid.is_none_or(|p| pids.contains(&p));
    let cg_ok = cfg.cgroup.as_deref().is_none_or(|f| {
        [k.victim.cgroup.as_deref(), k.trigger.cgroup.as_deref(), k.domain.memcg.as_deref()]
            .into_iter()
            .flatten()
            .chain(k.group_kills.iter().filter_map(|g| g.cgroup.as_deref()))
            .any(|c| cgroup::under(c, f))
    });
    pid_ok && cg_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oom::{
        fixtures::{PAGE, TOTALPAGES, decided, env, group_member},
        report::{Breakdown, MethodKind, Skip},
    };

    #[test]
    fn a_decision_has_its_candidates_sorted_with_the_victims_breakdown() {
        let k = decided();
        let pids: Vec<u32> = k.candidates.iter().map(|c| c.pid).collect();
        assert_eq!(pids, [100, 200, 300, 400], "by points, skipped last");
        assert!(k.candidates[0].victim);
        assert!(k.candidates[1..].iter().all(|c| !c.victim));
        assert_eq!(k.candidates[0].cgroup.as_deref(), Some("/svc/job"), "the victim's own path");
        assert_eq!(k.candidates[1].cgroup.as_deref(), Some("/named/0"), "named by id");
        assert_eq!(k.candidates[3].skipped, Some(Skip::AdjMin));
        assert_eq!(k.candidates[3].points, None);
        assert_eq!(k.candidates[1].rss_kb, (14_000 + 460) * PAGE);
        let m = k.candidates_method.as_ref().unwrap();
        assert_eq!((m.method, m.exact, m.candidates, m.lost), (MethodKind::Walk, false, 4, 0));
        let b = k.victim.points_breakdown.unwrap();
        assert_eq!(b, Breakdown::new(4556, 0, 20, 900, TOTALPAGES));
        assert_eq!(k.victim.points, Some(b.total), "the kernel's value, equal to the breakdown");
    }

    #[test]
    fn group_members_and_filters() {
        let mut k = decided();
        let g = group_kill(&group_member(), &env());
        assert_eq!((g.pid, g.comm.as_str(), g.rss_kb), (500, "sibling", Some((4096 + 460) * PAGE)));
        k.group_kills.push(g);
        let mut c = Filter::default();
        assert!(matches(&k, &c));
        c.pid = Some(500);
        assert!(matches(&k, &c), "a group member's pid selects the decision");
        c.pid = Some(999);
        assert!(!matches(&k, &c));
        c.pid = None;
        c.cgroup = Some("/svc".into());
        assert!(matches(&k, &c));
        c.cgroup = Some("/sv".into());
        assert!(!matches(&k, &c));
    }
}
