//! The OOM agent: a state machine over the family's ring-buffer records. Candidates wait
//! for their kill; a kill waits (with deadlines) for its memory.oom.group members, the
//! victim's exit and the reaper; then its `oom_kill` record is emitted, in kill order.
//! What a record says is the model's (`model`); when it is emitted is decided here.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use memtrace_common::oom::{
    KIND_CANDIDATE, KIND_KILL, KIND_REAPER, KIND_SELECT_DONE, OOM_D_EXITING_AT_SEND,
    OOM_D_GROUP_MEMBER, OomCandidateEvent, OomKillEvent, OomReaperEvent, OomSelectDoneEvent,
    REAPER_EXIT, REAPER_FINISH, REAPER_SKIP, REAPER_START, REAPER_WAKE,
};

use super::{
    model::{self, Env, Track},
    report::{self, Candidate, OomKill, OomRecord},
};
use crate::{
    engine::{
        family::{Agent, Filter, decode},
        sink::Out,
    },
    kernel::{cgroup, procfs::Procfs},
};

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
    /// Complete: every track ended, or nothing more is to be expected by `now`.
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
    env: Env,
    /// Candidates by decision, before their kill record (and how many did not fit).
    candidates: HashMap<u64, (Vec<Candidate>, u32)>,
    pending: Vec<Pending>,
    /// Decisions already emitted (late group members, reaper events): id -> victim pids.
    done: Vec<(u64, Vec<u32>)>,
    cgroups: cgroup::Names,
    procfs: Procfs,
    /// Victims whose exit came before their kill record: pid -> exit time.
    early_exits: Vec<(u32, u64)>,
}

impl OomAgent {
    pub fn new(cfg: Filter, env: Env) -> OomAgent {
        let procfs = Procfs::system();
        OomAgent {
            cfg,
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
            v.push(model::candidate(ev, &self.env));
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
        let member = ev.dflags & OOM_D_GROUP_MEMBER != 0;
        if member {
            if let Some(p) = self.pending.iter_mut().find(|p| p.kill.decision_id == ev.decision) {
                p.kill.group_kills.push(model::group_kill(ev, &self.env));
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
        let (cands, lost) = self.candidates.remove(&ev.decision).unwrap_or_default();
        let kill = if member {
            let mut kill = model::from_event(ev, &self.env);
            kill.notes.push(format!(
                "killed as a memory.oom.group member of decision {} (its report was already \
                 printed or filtered)",
                ev.decision
            ));
            kill
        } else {
            model::decision(ev, &self.env, cands, lost, |id| self.cgroups.name(id))
        };
        self.pending.push(Pending {
            kill,
            tracks: vec![track],
            created: now,
            last_mark: now,
            woken: None,
        });
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

    /// Emits the decisions that are complete (all with `force`), oldest first: a decision
    /// waits for the ones before it, so the records stay in kill order.
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

    /// A complete decision: its reaper summary and notes, then the record (when it passes
    /// the filters).
    fn emit(&mut self, p: Pending, out: &mut Out) {
        let Pending { mut kill, tracks, .. } = p;
        kill.reaper = Some(model::reaper_summary(&tracks));
        let host_available =
            self.procfs.meminfo().and_then(|m| m.get("MemAvailable").map(|&a| a as i64));
        let mut notes = report::notes(&kill, self.env.page_kib, host_available);
        notes.append(&mut kill.notes);
        kill.notes = notes;
        if self.done.len() >= MAX_BUFFERED {
            self.done.remove(0);
        }
        self.done.push((kill.decision_id, tracks.iter().map(|t| t.pid).collect()));
        if model::matches(&kill, &self.cfg) {
            out.emit(&OomRecord::Kill(kill));
        }
    }
}

impl Agent for OomAgent {
    fn record(&mut self, kind: u32, bytes: &[u8], out: &mut Out) -> bool {
        match kind {
            KIND_KILL => match decode::<OomKillEvent>(bytes) {
                Some(ev) => self.on_kill(&model::sane_kill(ev)),
                None => return false,
            },
            KIND_CANDIDATE => match decode::<OomCandidateEvent>(bytes) {
                Some(ev) => self.on_candidate(&model::sane_candidate(ev)),
                None => return false,
            },
            KIND_REAPER => match decode::<OomReaperEvent>(bytes) {
                Some(ev) => self.on_reaper(&ev),
                None => return false,
            },
            KIND_SELECT_DONE => match decode::<OomSelectDoneEvent>(bytes) {
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
mod tests {
    use memtrace_common::{
        EventHeader,
        oom::{
            CAND_EXACT, CAND_POINTS, OOM_D_HAVE_CHOSEN_POINTS, OOM_D_HAVE_OC, OOM_D_OC_ENTRY,
            OOM_METHOD_FEXIT,
        },
    };

    use super::*;
    use crate::oom::{
        fixtures::{
            DECISION, bytes, cand, cands, emitted, env, group_member, kill_event, reaper_event,
        },
        report::MethodKind,
    };

    /// One ring-buffer record into the agent; what it emits is dropped.
    fn rec(a: &mut OomAgent, kind: u32, b: &[u8]) -> bool {
        let mut ok = false;
        emitted(|out| ok = a.record(kind, b, out));
        ok
    }

    fn agent() -> OomAgent {
        OomAgent::new(Filter::default(), env())
    }

    /// An agent fed the candidates and the kill of one decision.
    fn assembled() -> OomAgent {
        let mut a = agent();
        for c in cands() {
            assert!(rec(&mut a, KIND_CANDIDATE, &bytes(&c)));
        }
        assert!(rec(&mut a, KIND_KILL, &bytes(&kill_event())));
        a
    }

    #[test]
    fn short_records_are_rejected() {
        let mut a = agent();
        assert!(!rec(&mut a, KIND_KILL, &bytes(&kill_event())[..100]));
        assert!(!rec(&mut a, KIND_CANDIDATE, &[0; 8]));
        assert!(!rec(&mut a, 12345, &bytes(&kill_event())));
        assert!(a.pending.is_empty());
    }

    #[test]
    fn candidates_wait_for_their_kill() {
        let a = assembled();
        assert!(a.candidates.is_empty(), "taken by the kill");
        let k = &a.pending[0].kill;
        let pids: Vec<u32> = k.candidates.iter().map(|c| c.pid).collect();
        assert_eq!(pids, [100, 200, 300, 400]);
        assert!(k.candidates[0].victim);
        assert_eq!(k.candidates_method.as_ref().map(|m| m.candidates), Some(4));
    }

    #[test]
    fn exact_candidates_and_select_done() {
        let mut a = agent();
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
        assert_eq!((m.method, m.exact), (MethodKind::Fexit, true));
        assert!(k.constraint_source.as_str().contains("out_of_memory()'s argument"));
        assert_eq!(k.domain.memcg, None, "no memcg read for this record");
    }

    #[test]
    fn group_members_join_their_decision() {
        let mut a = assembled();
        let m = group_member();
        assert!(rec(&mut a, KIND_KILL, &bytes(&m)));
        assert_eq!(a.pending.len(), 1, "one decision");
        assert_eq!(a.pending[0].kill.group_kills[0].pid, 500);
        assert_eq!(a.pending[0].tracks.len(), 2);
        // A member whose decision is gone is a decision of its own, saying so.
        let mut a = agent();
        assert!(rec(&mut a, KIND_KILL, &bytes(&m)));
        assert!(a.pending[0].kill.notes[0].contains("memory.oom.group member of decision 7000"));
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
        assert_eq!(a.pending[0].tracks[0].exit_ns, Some(8_000_000));

        // The reaper path: woken at 2 s, reaped in 4 ms.
        let mut b = assembled();
        let phases = [
            (REAPER_WAKE, 2_005_000_000),
            (REAPER_START, 2_006_000_000),
            (REAPER_FINISH, 2_010_000_000),
        ];
        for (phase, ns) in phases {
            b.on_reaper(&reaper_event(100, phase, ns));
        }
        let p = &b.pending[0];
        assert!(p.tracks[0].ended() && p.woken.is_some());
        // Unrelated pids are ignored.
        b.on_reaper(&reaper_event(12345, REAPER_START, 1));
        assert!(b.pending[0].tracks.iter().all(|t| t.pid != 12345));
    }

    #[test]
    fn an_exit_before_its_kill_record_is_kept_for_it() {
        let mut a = agent();
        a.on_reaper(&reaper_event(100, REAPER_EXIT, 4_000_000));
        assert_eq!(a.early_exits, [(100, 4_000_000)]);
        rec(&mut a, KIND_KILL, &bytes(&kill_event()));
        assert_eq!(a.pending[0].tracks[0].exit_ns, Some(4_000_000));
        assert!(a.early_exits.is_empty());
    }

    #[test]
    fn flush_emits_the_record_with_notes_or_filters_it() {
        let mut a = assembled();
        a.on_reaper(&reaper_event(100, REAPER_EXIT, 8_000_000));
        let recs = emitted(|out| a.flush(true, out));
        assert!(a.pending.is_empty());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["type"], "oom_kill");
        assert_eq!(recs[0]["decision_id"], DECISION);
        assert!(recs[0]["reaper"]["summary"].as_str().unwrap().starts_with("victim exited 3 ms"));
        assert!(recs[0]["notes"].to_string().contains("victim is not the largest process"));

        let mut a = assembled();
        a.cfg.pid = Some(1);
        assert!(emitted(|out| a.flush(true, out)).is_empty(), "filtered out");
        assert!(a.pending.is_empty());
        assert_eq!(a.done.last().map(|d| d.0), Some(DECISION), "remembered all the same");
    }
}
