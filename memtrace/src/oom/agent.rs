//! The OOM agent: assembles each OOM decision from its ring-buffer records (the kill, the
//! candidates, memory.oom.group members, the victim's exit and the reaper) and emits one
//! `oom_kill` record per decision.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use memtrace_common::{
    oom::{
        CAND_ORIGIN, CAND_PENDING_VICTIM, CAND_POINTS, CAND_SKIP_ADJ_MIN,
        CAND_SKIP_NO_MM, CAND_SKIP_OLD_VICTIM, CAND_SKIP_OOM_SKIP, CAND_SKIP_OTHER,
        CAND_SKIP_VFORK, CONSTRAINT_CPUSET, CONSTRAINT_MEMCG, CONSTRAINT_MEMORY_POLICY,
        CONSTRAINT_NONE, OOM_D_GROUP_MEMBER, OOM_D_HAVE_CHOSEN_POINTS,
        OOM_D_HAVE_MEMCG, OOM_D_HAVE_OC, OOM_D_HAVE_RETRY, OOM_D_INFERRED, OOM_D_NO_SELECTION,
        OOM_D_EXITING_AT_SEND, OOM_D_OC_ENTRY, OOM_D_OC_STACK, OOM_D_WALK_TRUNCATED,
        OOM_HAVE_MM, OOM_HAVE_TASK, OOM_METHOD_FEXIT, OOM_METHOD_KRETPROBE, OOM_METHOD_WALK,
        OOM_NO_MM, OomCandidateEvent, OomKillEvent, OomReaperEvent,
        OomSelectDoneEvent, KIND_CANDIDATE, KIND_KILL, KIND_REAPER, KIND_SELECT_DONE, REAPER_EXIT, REAPER_FINISH, REAPER_SKIP, REAPER_START, REAPER_WAKE,
    },
};

use super::{
    args::{Options, TOP_CANDIDATES},
    report::{
        self as oom_report, Breakdown, Candidate, Domain, GroupKill, Method, OomKill,
        POINTS_EXACT, POINTS_KERNEL, POINTS_RECOMPUTED, Reaper, Retries, Trigger, Victim,
    },
};
use crate::{
    engine::{
        family::{Agent, Filter, decode as read_record},
        format,
        sink::{Out, Text},
    },
    kernel::{Kernel, cgroup, cstr, gfp::Gfp, procfs::Procfs},
};

// ---------------------------------------------------------------------------------------
// Decoding.

/// What the agent knows about the machine to interpret the records.
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

    fn name(table: &[(i64, String)], v: i64) -> String {
        table.iter().find(|(n, _)| *n == v).map_or_else(|| v.to_string(), |(_, s)| s.clone())
    }
}

/// A candidate record as received (its cgroup named later).
pub fn candidate(ev: &OomCandidateEvent, env: &Env) -> Candidate {
    let p = env.page_kib;
    let skipped = [
        (CAND_SKIP_ADJ_MIN, oom_report::SKIP_ADJ_MIN),
        (CAND_SKIP_OOM_SKIP, oom_report::SKIP_OOM_SKIP),
        (CAND_SKIP_VFORK, oom_report::SKIP_VFORK),
        (CAND_SKIP_NO_MM, oom_report::SKIP_NO_MM),
        (CAND_SKIP_OLD_VICTIM, oom_report::SKIP_OLD_VICTIM),
        (CAND_PENDING_VICTIM, oom_report::SKIP_PENDING),
        (CAND_SKIP_OTHER, oom_report::SKIP_OTHER),
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

fn constraint_name(c: u32) -> &'static str {
    match c {
        CONSTRAINT_NONE => "global",
        CONSTRAINT_CPUSET => "cpuset",
        CONSTRAINT_MEMORY_POLICY => "mempolicy",
        CONSTRAINT_MEMCG => "memcg",
        _ => "unknown",
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
        if have_oc || inferred { constraint_name(ev.constraint) } else { "unknown" };
    let constraint_source = if d & OOM_D_OC_ENTRY != 0 && have_oc {
        "oom_control, read through out_of_memory()'s argument"
    } else if d & OOM_D_OC_STACK != 0 && have_oc {
        "oom_control, found on the OOM-invoking task's kernel stack at oom:mark_victim"
    } else if inferred {
        "inferred: a memcg above the victim at its limit means a memcg OOM (oom_control not found)"
    } else {
        "unknown"
    };
    let totalpages = (have_oc || inferred).then_some(ev.totalpages).filter(|&t| t > 0);
    let meaning = match constraint {
        "memcg" => "the OOM memcg's limit (memory.max or limit_in_bytes, plus any swap allowance)",
        "global" => "all RAM + swap",
        "cpuset" => "the allowed nodes' memory + swap",
        "mempolicy" => "the policy's nodes' memory + swap",
        _ => "unknown",
    };
    let source = if have_oc {
        format!("totalpages is oom_control.totalpages = {meaning}")
    } else if inferred && constraint == "memcg" {
        format!("totalpages inferred = {meaning}; oom_control not found")
    } else if inferred {
        "totalpages approximated by MemTotal + SwapTotal from /proc/meminfo when memtrace \
         started; oom_control not found"
            .to_string()
    } else {
        "totalpages unknown on this kernel".to_string()
    };
    let have_memcg = d & OOM_D_HAVE_MEMCG != 0;
    let domain = Domain {
        kind: match constraint {
            "global" => "system",
            other => other,
        },
        memcg: have_memcg.then(|| cgroup::render(&ev.oom_memcg)).flatten(),
        memcg_limit_kb: have_memcg.then_some(ev.memcg_max as i64 * page),
        memcg_usage_kb: have_memcg.then_some(ev.memcg_usage as i64 * page),
        totalpages,
        totalpages_kb: totalpages.map(|t| t as i64 * page),
        totalpages_source: source,
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
        notes.push("the candidate walk stopped at its task limit: the table is partial".into());
    }
    let time = format::boot_time(ev.header.boot_ns);
    OomKill {
        kind: "oom_kill",
        time,
        decision_id: ev.decision,
        constraint,
        constraint_source,
        domain,
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
            points: (d & OOM_D_HAVE_CHOSEN_POINTS != 0).then_some(ev.chosen_points),
            points_source: (d & OOM_D_HAVE_CHOSEN_POINTS != 0).then_some(POINTS_KERNEL),
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
fn retries(ev: &OomKillEvent, env: &Env) -> Option<Retries> {
    if ev.dflags & OOM_D_HAVE_RETRY == 0 {
        return None;
    }
    let r = &ev.retry;
    if ev.header.boot_ns.saturating_sub(r.last_ns) > 10_000_000_000 {
        return None;
    }
    let page = env.page_kib;
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
        compaction_retries: (r.compact_events > 0).then_some(r.cr_retries),
        compaction_max_retries: (r.compact_events > 0).then_some(r.cr_max_retries),
        compaction_result: (r.compact_events > 0)
            .then(|| Env::name(&env.compact_results, i64::from(r.cr_result))),
        compaction_priority: (r.compact_events > 0)
            .then(|| Env::name(&env.compact_priorities, i64::from(r.cr_priority))),
        span_ms: r.last_ns.saturating_sub(r.first_ns) as f64 / 1e6,
    })
}

fn method(ev: &OomKillEvent, received: usize) -> Option<Method> {
    let (method, exact, detail) = match ev.method {
        OOM_METHOD_FEXIT => (
            "oom_badness fexit",
            true,
            "every oom_badness() return while the OOM-invoking task was inside out_of_memory() \
             (fentry): the kernel's own scores"
                .to_string(),
        ),
        OOM_METHOD_KRETPROBE => (
            "oom_badness kretprobe",
            true,
            "every oom_badness() return while the OOM-invoking task was inside out_of_memory() \
             (kprobe): the kernel's own scores"
                .to_string(),
        ),
        OOM_METHOD_WALK => (
            "task walk at oom:mark_victim",
            false,
            format!(
                "the OOM domain's processes walked in BPF right after the kernel chose the \
                 victim, recomputing oom_badness() (rss + swap + page tables + adj x \
                 totalpages/1000){}. Race: counters are read microseconds after the kernel's \
                 own scan, so a score can differ by what a process touched or freed in \
                 between, and processes that forked or exited in between differ{}",
                if ev.dflags & OOM_D_OC_STACK != 0 || ev.dflags & OOM_D_OC_ENTRY != 0 {
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
    Some(Method { method, exact, detail, candidates: received, lost: ev.cand_dropped })
}

/// Does the decision pass the -p / -c filters?
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

// ---------------------------------------------------------------------------------------
// Assembly.

/// A group member or the victim, and what happened to it after the kill.
#[derive(Debug, Clone, Default)]
struct Track {
    pid: u32,
    kill_ns: u64,
    exit_ns: Option<u64>,
    wake_ns: Option<u64>,
    start_ns: Option<u64>,
    finish_ns: Option<u64>,
    skips: u32,
    /// Already exiting when the kill record was sent (its exit may precede the hook).
    exiting_at_send: bool,
}

impl Track {
    fn ended(&self) -> bool {
        self.exit_ns.is_some() || self.finish_ns.is_some()
    }
}

/// A decision waiting for its group members, the victim's exit and the reaper.
struct Pending {
    kill: OomKill,
    tracks: Vec<Track>,
    created: Instant,
    last_mark: Instant,
    woken: Option<Instant>,
}

/// Group members come within microseconds of the victim.
const SETTLE: Duration = Duration::from_millis(30);
/// The reaper is woken OOM_REAPER_DELAY (2 s) after a kill whose victim is still there.
const NO_EXIT_WAIT: Duration = Duration::from_millis(2600);
const REAPER_WAIT: Duration = Duration::from_millis(1500);
/// A victim already exiting when its record was sent: how long its exit event may take.
const EXITING_GRACE: Duration = Duration::from_millis(300);
const HARD_WAIT: Duration = Duration::from_secs(8);
/// Decisions whose candidates are buffered before their kill arrives.
const MAX_BUFFERED: usize = 64;
const MAX_CANDIDATES: usize = 1 << 16;

impl Pending {
    fn ready(&self, now: Instant) -> bool {
        let since_mark = now.duration_since(self.last_mark);
        if now.duration_since(self.created) >= HARD_WAIT {
            return true;
        }
        if since_mark < SETTLE {
            return false;
        }
        if self.tracks.iter().all(Track::ended) {
            return true;
        }
        if since_mark >= EXITING_GRACE
            && self.woken.is_none()
            && self.tracks.iter().all(|t| t.ended() || t.exiting_at_send)
        {
            return true;
        }
        match self.woken {
            Some(w) => now.duration_since(w) >= REAPER_WAIT,
            None => since_mark >= NO_EXIT_WAIT,
        }
    }
}

/// Emits each OOM decision once it is complete.
pub struct OomAgent {
    cfg: Filter,
    opts: Options,
    env: Env,
    /// Candidates by decision, before their kill record.
    candidates: HashMap<u64, (Vec<Candidate>, u32)>,
    pending: Vec<Pending>,
    /// Decisions already printed (late group members, reaper events): id -> victim pids.
    done: Vec<(u64, Vec<u32>)>,
    cgroups: cgroup::Names,
    procfs: Procfs,
    /// Victims whose exit came before their kill record: pid -> exit time.
    early_exits: Vec<(u32, u64)>,
}

impl OomAgent {
    pub fn new(cfg: Filter, opts: Options, env: Env) -> OomAgent {
        let procfs = Procfs::system();
        OomAgent {
            cfg,
            opts,
            env,
            candidates: HashMap::new(),
            pending: Vec::new(),
            done: Vec::new(),
            cgroups: cgroup::Names::new(&procfs),
            procfs,
            early_exits: Vec::new(),
        }
    }

    fn on_candidate(&mut self, ev: &OomCandidateEvent) {
        if !self.candidates.contains_key(&ev.decision) && self.candidates.len() >= MAX_BUFFERED {
            if let Some(&oldest) = self.candidates.keys().min() {
                self.candidates.remove(&oldest);
            }
        }
        let (v, lost) = self.candidates.entry(ev.decision).or_default();
        if v.len() < MAX_CANDIDATES {
            v.push(candidate(ev, &self.env));
        } else {
            *lost += 1;
        }
    }

    fn on_select_done(&mut self, ev: &OomSelectDoneEvent) {
        // An out_of_memory() call that killed nothing: its candidates go.
        if !self.pending.iter().any(|p| p.kill.decision_id == ev.decision) {
            self.candidates.remove(&ev.decision);
            log::debug!(
                "out_of_memory() returned {} without a kill after {} oom_badness() calls",
                ev.ret,
                ev.calls
            );
        }
    }

    fn on_kill(&mut self, ev: &OomKillEvent) {
        let now = Instant::now();
        let early = self.early_exits.iter().position(|&(pid, _)| pid == ev.victim_pid);
        let track = Track {
            pid: ev.victim_pid,
            kill_ns: ev.header.boot_ns,
            exit_ns: early.map(|i| self.early_exits.remove(i).1),
            exiting_at_send: ev.dflags & OOM_D_EXITING_AT_SEND != 0,
            ..Track::default()
        };
        if ev.dflags & OOM_D_GROUP_MEMBER != 0 {
            if let Some(p) = self.pending.iter_mut().find(|p| p.kill.decision_id == ev.decision) {
                let k = from_event(ev, &self.env);
                p.kill.group_kills.push(GroupKill {
                    pid: k.victim.pid,
                    tgid: k.victim.tgid,
                    comm: k.victim.comm,
                    cgroup: k.victim.cgroup,
                    oom_score_adj: k.victim.oom_score_adj,
                    rss_kb: match (k.victim.rss_anon_kb, k.victim.rss_file_kb, k.victim.rss_shmem_kb) {
                        (Some(a), Some(f), Some(s)) => Some(a + f + s),
                        _ => None,
                    },
                });
                p.tracks.push(track);
                p.last_mark = now;
                return;
            }
        }
        log::debug!(
            "oom kill of pid {} (decision {}, flags {:#x})",
            ev.victim_pid,
            ev.decision,
            ev.dflags
        );
        let mut kill = from_event(ev, &self.env);
        let (mut cands, agent_lost) = self.candidates.remove(&ev.decision).unwrap_or_default();
        if ev.dflags & OOM_D_GROUP_MEMBER != 0 {
            kill.notes.push(format!(
                "killed as a memory.oom.group member of decision {} (its report was already \
                 printed or filtered)",
                ev.decision
            ));
        } else {
            if ev.method == OOM_METHOD_WALK {
                self.victim_row(&mut cands, ev, &mut kill);
            }
            for c in &mut cands {
                c.victim = c.tgid == ev.victim_tgid;
                c.cgroup = if c.victim && kill.victim.cgroup.is_some() {
                    kill.victim.cgroup.clone()
                } else {
                    self.cgroups.name(c.cgroup_id)
                };
            }
            oom_report::sort_candidates(&mut cands);
            let mut m = method(ev, cands.len());
            if let Some(m) = m.as_mut() {
                m.lost += agent_lost;
            }
            kill.candidates_method = m;
            self.attach_breakdown(&mut kill, ev, &cands);
            kill.candidates = cands;
        }
        self.pending.push(Pending {
            kill,
            tracks: vec![track],
            created: now,
            last_mark: now,
            woken: None,
        });
    }

    /// The walk reads the victim after the kill's own record: a victim that exits fast
    /// may have no memory left by then. Its row then comes from the kill record's
    /// counters (read at the tracepoint, before the walk).
    fn victim_row(&self, cands: &mut Vec<Candidate>, ev: &OomKillEvent, kill: &mut OomKill) {
        let idx = cands.iter().position(|c| c.tgid == ev.victim_tgid);
        let gone = idx.is_none_or(|i| {
            cands[i].points.is_none()
                && matches!(
                    cands[i].skipped,
                    Some(oom_report::SKIP_NO_MM | oom_report::SKIP_OOM_SKIP)
                )
        });
        if !gone || ev.flags & OOM_HAVE_MM == 0 || ev.totalpages == 0 {
            return;
        }
        let p = self.env.page_kib;
        let (anon, file, shmem) = (ev.rss_anon.max(0), ev.rss_file.max(0), ev.rss_shmem.max(0));
        let b = Breakdown::new(
            anon + file + shmem,
            ev.swap_ents.max(0),
            ev.pgtables_bytes.max(0) >> self.env.page_shift,
            i64::from(ev.victim_oom_score_adj),
            ev.totalpages,
        );
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
        match idx {
            Some(i) => cands[i] = row,
            None => cands.push(row),
        }
        kill.notes.push(
            "the victim had already released its memory when the walk reached it: its row \
             uses the counters read at the kill"
                .to_string(),
        );
    }

    /// The victim's score and its parts: from its candidate record when there is one
    /// (read in the same instant as the others), else from the kill record's counters.
    fn attach_breakdown(&self, kill: &mut OomKill, ev: &OomKillEvent, cands: &[Candidate]) {
        let v = &mut kill.victim;
        if let Some(c) = cands.iter().find(|c| c.victim) {
            v.points_breakdown = c.breakdown;
            if v.points.is_none() {
                v.points = c.points;
                v.points_source = Some(if ev.method == OOM_METHOD_WALK {
                    oom_report::POINTS_WALK
                } else {
                    POINTS_EXACT
                });
            }
            return;
        }
        let Some(total) = kill.domain.totalpages else { return };
        if ev.flags & OOM_HAVE_MM == 0 {
            return;
        }
        let rss = ev.rss_anon.max(0) + ev.rss_file.max(0) + ev.rss_shmem.max(0);
        let b = Breakdown::new(
            rss,
            ev.swap_ents.max(0),
            ev.pgtables_bytes.max(0) >> self.env.page_shift,
            i64::from(ev.victim_oom_score_adj),
            total,
        );
        v.points_breakdown = Some(b);
        if v.points.is_none() {
            v.points = Some(b.total);
            v.points_source = Some(POINTS_RECOMPUTED);
        }
    }

    fn on_reaper(&mut self, ev: &OomReaperEvent) {
        let now = Instant::now();
        log::debug!("oom reaper phase {} pid {} decision {}", ev.phase, ev.pid, ev.decision);
        let Some(p) = self.pending.iter_mut().find(|p| {
            (ev.decision == 0 || p.kill.decision_id == ev.decision)
                && p.tracks.iter().any(|t| t.pid == ev.pid)
        }) else {
            if ev.phase == REAPER_EXIT && !self.done.iter().any(|(d, _)| *d == ev.decision) {
                // Exited before its kill record arrived (the record is sent after the
                // candidate walk; the victim's SIGKILL came before it).
                if self.early_exits.len() >= MAX_BUFFERED {
                    self.early_exits.remove(0);
                }
                self.early_exits.push((ev.pid, ev.header.boot_ns));
                return;
            }
            if self.done.iter().any(|(_, pids)| pids.contains(&ev.pid)) {
                log::debug!("reaper phase {} for pid {} after its report", ev.phase, ev.pid);
            }
            return;
        };
        let t = p.tracks.iter_mut().find(|t| t.pid == ev.pid).expect("matched above");
        let ns = Some(ev.header.boot_ns);
        match ev.phase {
            REAPER_WAKE => {
                t.wake_ns = ns;
                p.woken = Some(now);
            }
            REAPER_START => t.start_ns = ns,
            REAPER_FINISH => t.finish_ns = ns,
            REAPER_SKIP => t.skips += 1,
            REAPER_EXIT => t.exit_ns = ns,
            _ => {}
        }
    }

    /// Prints the decisions that are complete (all with `force`), oldest first: a
    /// decision waits for the ones before it, so the output stays in kill order.
    fn flush(&mut self, force: bool, out: &mut Out) {
        let now = Instant::now();
        while let Some(p) = self.pending.first() {
            if !force && !p.ready(now) {
                break;
            }
            let p = self.pending.remove(0);
            log::debug!(
                "oom decision {} complete after {:?} (forced: {force})",
                p.kill.decision_id,
                now.duration_since(p.created)
            );
            self.emit(p, out);
        }
    }

    fn emit(&mut self, p: Pending, out: &mut Out) {
        let Pending { mut kill, tracks, .. } = p;
        kill.reaper = Some(reaper_summary(&tracks));
        let host_available =
            self.procfs.meminfo().and_then(|m| m.get("MemAvailable").map(|&a| a as i64));
        let mut notes = oom_report::notes(&kill, self.env.page_kib, host_available);
        notes.append(&mut kill.notes);
        kill.notes = notes;
        if self.done.len() >= MAX_BUFFERED {
            self.done.remove(0);
        }
        self.done.push((kill.decision_id, tracks.iter().map(|t| t.pid).collect()));
        if !matches(&kill, &self.cfg) {
            return;
        }
        out.emit(&kill);
        let top = (!self.opts.all_candidates).then_some(TOP_CANDIDATES);
        out.legacy_text(Text::out(oom_report::render_text(&kill, self.env.page_kib, top)));
    }
}

fn ms(from: u64, to: u64) -> f64 {
    (to.saturating_sub(from) as f64 / 1e4).round() / 100.0
}

/// The victim's fate after the kill, in ms (group members summarised).
fn reaper_summary(tracks: &[Track]) -> Reaper {
    let Some(v) = tracks.first() else { return Reaper::default() };
    let at = |t: Option<u64>| t.map(|t| ms(v.kill_ns, t));
    let mut r = Reaper {
        victim_exit_ms: at(v.exit_ns),
        wake_reaper_ms: at(v.wake_ns),
        start_reaping_ms: at(v.start_ns),
        finish_reaping_ms: at(v.finish_ns),
        skip_reaping: v.skips,
        summary: String::new(),
    };
    let mut parts = Vec::new();
    match (r.victim_exit_ms, r.wake_reaper_ms) {
        (Some(_), None) if v.exit_ns.is_some_and(|x| x <= v.kill_ns) => parts.push(
            "the victim exited right at the kill (before mark_victim had finished); the OOM \
             reaper was not needed"
                .to_string(),
        ),
        (Some(e), None) => {
            parts.push(format!("victim exited {e} ms after the kill; the OOM reaper was not needed"))
        }
        (exit, Some(w)) => {
            let mut s = format!("the OOM reaper woke {w} ms after the kill");
            match (r.start_reaping_ms, r.finish_reaping_ms) {
                (Some(a), Some(b)) => s += &format!(", reaped the victim in {:.2} ms (done at {b} ms)", b - a),
                (_, None) => s += ", and had not finished when the report was printed",
                _ => {}
            }
            if r.skip_reaping > 0 {
                s += &format!(
                    "; it could not take the victim's mmap lock {} time{}",
                    r.skip_reaping,
                    if r.skip_reaping == 1 { "" } else { "s" }
                );
            }
            if let Some(e) = exit {
                s += &format!("; the victim exited at {e} ms");
            }
            parts.push(s);
        }
        (None, None) if v.exiting_at_send => parts.push(
            "the victim was already exiting when the kill was recorded; the OOM reaper was \
             not needed"
                .to_string(),
        ),
        (None, None) => parts.push(
            "the victim's exit was not seen before the report (still exiting, or the exit hook \
             is not attached)"
                .to_string(),
        ),
    }
    let members: Vec<&Track> = tracks.iter().skip(1).collect();
    if !members.is_empty() {
        let exited = members.iter().filter(|t| t.exit_ns.is_some()).count();
        parts.push(format!("{exited} of {} group members exited", members.len()));
    }
    r.summary = parts.join("; ");
    r
}

impl Agent for OomAgent {
    fn record(&mut self, kind: u32, bytes: &[u8], out: &mut Out) -> bool {
        match kind {
            KIND_KILL => match read_record::<OomKillEvent>(bytes) {
                Some(ev) => self.on_kill(&ev),
                None => return false,
            },
            KIND_CANDIDATE => match read_record::<OomCandidateEvent>(bytes) {
                Some(ev) => self.on_candidate(&ev),
                None => return false,
            },
            KIND_REAPER => match read_record::<OomReaperEvent>(bytes) {
                Some(ev) => self.on_reaper(&ev),
                None => return false,
            },
            KIND_SELECT_DONE => match read_record::<OomSelectDoneEvent>(bytes) {
                Some(ev) => self.on_select_done(&ev),
                None => return false,
            },
            _ => return false,
        }
        self.flush(false, out);
        true
    }

    fn tick(&mut self, out: &mut Out) {
        self.flush(false, out);
    }

    fn finish(&mut self, out: &mut Out) {
        self.flush(true, out);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
