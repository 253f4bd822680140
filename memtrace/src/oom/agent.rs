//! The OOM agent: a state machine over the family's ring-buffer records. Kill records
//! travel on a channel of their own (`OOM_KILLS`), candidates on theirs
//! (`OOM_CANDIDATES`), so either may arrive first: candidates wait for their kill, a kill
//! for its candidates (the kill record says how many were sent), and with deadlines for
//! its memory.oom.group members, the victim's exit and the reaper; then its `oom_kill`
//! record is emitted, in kill order. Every candidate that does not arrive is counted in the
//! record's `lost`, with the reason. What a record says is the model's (`model`); when it
//! is emitted is decided here.

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
    report::{self, Candidate, GroupKill, Lost, OomKill, OomRecord},
};
use crate::{
    engine::{
        family::{Agent, End, Filter, decode},
        sink::Out,
    },
    kernel::{cgroup, procfs::Procfs},
};

/// The candidate records of one decision that reached the agent.
#[derive(Default)]
struct Received {
    cands: Vec<Candidate>,
    /// Received and dropped: past [`MAX_CANDIDATES`], or in a buffer evicted for room.
    evicted: u32,
}

impl Received {
    fn count(&self) -> u64 {
        self.cands.len() as u64 + u64::from(self.evicted)
    }

    fn push(&mut self, c: Candidate) {
        if self.cands.len() < MAX_CANDIDATES {
            self.cands.push(c);
        } else {
            self.evicted += 1;
        }
    }
}

/// A decision waiting for its candidates, group members, the victim's exit and the reaper.
struct Pending {
    /// The decision's kill record (its `decision` is the id).
    ev: Box<OomKillEvent>,
    /// A memory.oom.group member whose decision was already gone: a decision of its own.
    orphan_member: bool,
    group_kills: Vec<GroupKill>,
    received: Received,
    tracks: Vec<Track>,
    created: Instant,
    last_mark: Instant,
    woken: Option<Instant>,
}

/// Group members come within microseconds of the victim.
const SETTLE: Duration = Duration::from_millis(30);
/// The candidates were sent before their kill record; on another channel they may still be
/// on their way (the agent drains both at once: this is for a busy agent).
const CANDIDATE_WAIT: Duration = Duration::from_secs(2);
/// The reaper is woken OOM_REAPER_DELAY (2 s) after a kill whose victim is still there.
const NO_EXIT_WAIT: Duration = Duration::from_millis(2600);
const REAPER_WAIT: Duration = Duration::from_millis(1500);
/// A victim already exiting when its record was sent: how long its exit event may take.
const EXITING_GRACE: Duration = Duration::from_millis(300);
const HARD_WAIT: Duration = Duration::from_secs(8);
/// Decisions whose candidates are buffered before their kill arrives.
const MAX_BUFFERED: usize = 64;
/// Candidates kept per decision: the walk's limit (the kernel's own scan of a host with
/// more processes is cut here; the rest counted as evicted).
const MAX_CANDIDATES: usize = 1 << 16;
/// Decisions remembered once emitted or ended without a kill.
const MAX_DONE: usize = 256;

impl Pending {
    /// Every candidate record the kernel sent has arrived (or was dropped here).
    fn candidates_in(&self) -> bool {
        self.orphan_member || self.received.count() >= u64::from(self.ev.cand_emitted)
    }

    /// Complete: candidates in, every track ended, or nothing more is to be expected by
    /// `now`.
    fn ready(&self, now: Instant) -> bool {
        let since_mark = now.duration_since(self.last_mark);
        if now.duration_since(self.created) >= HARD_WAIT {
            return true;
        }
        if since_mark < SETTLE {
            return false;
        }
        if !self.candidates_in() && now.duration_since(self.created) < CANDIDATE_WAIT {
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

    /// The candidates the agent lost: dropped here, or sent and not received by now.
    fn agent_lost(&self) -> Lost {
        let received = self.received.count();
        let sent = u64::from(self.ev.cand_emitted);
        Lost {
            agent_evicted: self.received.evicted,
            not_received: sent.saturating_sub(received).min(u64::from(u32::MAX)) as u32,
            ..Lost::default()
        }
    }
}

/// Emits each OOM decision once it is complete.
pub struct OomAgent {
    cfg: Filter,
    env: Env,
    /// Candidates by decision, before their kill record.
    candidates: HashMap<u64, Received>,
    /// Candidates received and then evicted for room before their kill came: decision ->
    /// how many (the oldest forgotten first).
    evicted: Vec<(u64, u32)>,
    pending: Vec<Pending>,
    /// Decisions emitted (late group members, reaper events; id -> victim pids), or ended
    /// without a kill (no pids): their late candidates are dropped.
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
            evicted: Vec::new(),
            pending: Vec::new(),
            done: Vec::new(),
            cgroups: cgroup::Names::new(&procfs),
            procfs,
            early_exits: Vec::new(),
        }
    }

    fn on_candidate(&mut self, ev: &OomCandidateEvent) {
        let c = model::candidate(ev, &self.env);
        if let Some(p) = self.pending.iter_mut().find(|p| p.ev.decision == ev.decision) {
            p.received.push(c);
            return;
        }
        if self.done.iter().any(|(d, _)| *d == ev.decision) {
            // Its record is out (and counted it as not received), or it killed nothing.
            log::debug!("late candidate pid {} of decision {}", ev.pid, ev.decision);
            return;
        }
        if !self.candidates.contains_key(&ev.decision) && self.candidates.len() >= MAX_BUFFERED {
            if let Some(&oldest) = self.candidates.keys().min() {
                let gone = self.candidates.remove(&oldest).unwrap_or_default();
                if self.evicted.len() >= MAX_BUFFERED {
                    self.evicted.remove(0);
                }
                let n = gone.evicted.saturating_add(gone.cands.len() as u32);
                self.evicted.push((oldest, n));
            }
        }
        self.candidates.entry(ev.decision).or_default().push(c);
    }

    /// The end of a selection seen by the exact hooks: one that killed nothing lets its
    /// candidates go (and those still on their way).
    fn on_select_done(&mut self, ev: &OomSelectDoneEvent) {
        let known = self.pending.iter().any(|p| p.ev.decision == ev.decision)
            || self.done.iter().any(|(d, _)| *d == ev.decision);
        if !known {
            self.candidates.remove(&ev.decision);
            self.remember(ev.decision, Vec::new());
            log::debug!(
                "out_of_memory() returned {} without a kill after {} oom_badness() calls",
                ev.ret,
                ev.calls
            );
        }
    }

    fn remember(&mut self, decision: u64, pids: Vec<u32>) {
        if self.done.len() >= MAX_DONE {
            self.done.remove(0);
        }
        self.done.push((decision, pids));
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
            if let Some(p) = self.pending.iter_mut().find(|p| p.ev.decision == ev.decision) {
                p.group_kills.push(model::group_kill(ev, &self.env));
                p.tracks.push(track);
                p.last_mark = now;
                return;
            }
        }
        log::debug!(
            "oom kill of pid {} (decision {}, flags {:#x}, {} candidates sent)",
            ev.victim_pid,
            ev.decision,
            ev.dflags,
            ev.cand_emitted
        );
        let mut received = self.candidates.remove(&ev.decision).unwrap_or_default();
        if let Some(i) = self.evicted.iter().position(|(d, _)| *d == ev.decision) {
            received.evicted = received.evicted.saturating_add(self.evicted.remove(i).1);
        }
        self.pending.push(Pending {
            ev: Box::new(*ev),
            orphan_member: member,
            group_kills: Vec::new(),
            received,
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
            (ev.decision == 0 || p.ev.decision == ev.decision)
                && p.tracks.iter().any(|t| t.pid == ev.pid)
        }) else {
            if ev.phase == REAPER_EXIT && !self.done.iter().any(|(d, _)| *d == ev.decision) {
                // Exited before its kill record arrived (the record is sent after the
                // candidates; the victim's SIGKILL came before it).
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
                "oom decision {} complete after {:?} (forced: {force}), {} of {} candidates",
                p.ev.decision,
                now.duration_since(p.created),
                p.received.cands.len(),
                p.ev.cand_emitted
            );
            self.emit(p, out);
        }
    }

    /// The decision assembled from its kill and candidates.
    fn assemble(&mut self, p: &mut Pending) -> OomKill {
        let ev = &p.ev;
        let mut kill = if p.orphan_member {
            let mut kill = model::from_event(ev, &self.env);
            kill.notes.push(format!(
                "killed as a memory.oom.group member of decision {} (its report was already \
                 printed or filtered)",
                ev.decision
            ));
            kill
        } else {
            let lost = p.agent_lost();
            let cands = std::mem::take(&mut p.received.cands);
            let cgroups = &mut self.cgroups;
            model::decision(ev, &self.env, cands, lost, |id| cgroups.name(id))
        };
        kill.group_kills = std::mem::take(&mut p.group_kills);
        kill
    }

    /// A complete decision: its reaper summary and notes, then the record (when it passes
    /// the filters).
    fn emit(&mut self, mut p: Pending, out: &mut Out) {
        let mut kill = self.assemble(&mut p);
        kill.reaper = Some(model::reaper_summary(&p.tracks));
        let host_available =
            self.procfs.meminfo().and_then(|m| m.get("MemAvailable").map(|&a| a as i64));
        let mut notes = report::notes(&kill, self.env.page_kib, host_available);
        notes.append(&mut kill.notes);
        kill.notes = notes;
        self.remember(kill.decision_id, p.tracks.iter().map(|t| t.pid).collect());
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

    fn finish(&mut self, out: &mut Out, _end: End) {
        self.flush(true, out);
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
