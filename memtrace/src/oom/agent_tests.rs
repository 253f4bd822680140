//! The OOM agent's unit tests (assembly of decisions from their records).

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

/// The first pending decision, taken out and assembled.
fn first_kill(a: &mut OomAgent) -> OomKill {
    let mut p = a.pending.remove(0);
    a.assemble(&mut p)
}

/// The first pending decision made old enough for every deadline but the hard one.
fn age(a: &mut OomAgent, by: Duration) -> Instant {
    let now = Instant::now();
    let p = &mut a.pending[0];
    p.created = now - by;
    p.last_mark = now - by;
    now
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
    let mut a = assembled();
    assert!(a.candidates.is_empty(), "taken by the kill");
    assert!(a.pending[0].candidates_in());
    let k = first_kill(&mut a);
    let pids: Vec<u32> = k.candidates.iter().map(|c| c.pid).collect();
    assert_eq!(pids, [100, 200, 300, 400]);
    assert!(k.candidates[0].victim);
    let m = k.candidates_method.unwrap();
    assert_eq!((m.candidates, m.lost), (4, 0));
}

/// On their own channel, the candidates may come after the kill: the decision waits
/// for as many as the kill record says were sent.
#[test]
fn a_kill_waits_for_candidates_that_come_after_it() {
    let mut a = agent();
    assert!(rec(&mut a, KIND_KILL, &bytes(&kill_event())));
    let now = age(&mut a, Duration::from_millis(100));
    a.on_reaper(&reaper_event(100, REAPER_EXIT, 8_000_000));
    assert!(!a.pending[0].candidates_in());
    assert!(!a.pending[0].ready(now), "the victim exited, the candidates are not in");
    for c in cands() {
        a.on_candidate(&c);
    }
    assert!(a.candidates.is_empty(), "attached to the pending decision");
    assert!(a.pending[0].ready(now));
    let recs = emitted(|out| a.flush(false, out));
    assert_eq!(recs.len(), 1);
    let m = &recs[0]["candidates_method"];
    assert_eq!((m["candidates"].as_u64(), m["lost"].as_u64()), (Some(4), Some(0)), "{m}");
    assert_eq!(recs[0]["candidates"][0]["victim"], true);
    // One more, late: dropped, not buffered for a decision that is out.
    assert!(rec(&mut a, KIND_CANDIDATE, &bytes(&cands()[1])));
    assert!(a.candidates.is_empty());
}

/// Every candidate that does not arrive is counted, with its reason: the kernel's ring
/// buffer was full, the walk's limit, the agent's eviction, not received in time.
#[test]
fn lost_candidates_are_counted_by_reason() {
    let mut a = agent();
    let mut ev = kill_event();
    ev.cand_emitted = 6;
    ev.cand_dropped = 2;
    ev.cand_unwalked = 3;
    for c in &cands()[..3] {
        rec(&mut a, KIND_CANDIDATE, &bytes(c));
    }
    rec(&mut a, KIND_KILL, &bytes(&ev));
    rec(&mut a, KIND_CANDIDATE, &bytes(&cands()[3]));
    a.on_reaper(&reaper_event(100, REAPER_EXIT, 8_000_000));
    let now = age(&mut a, Duration::from_millis(500));
    assert!(!a.pending[0].ready(now), "two candidates still on their way");
    let now = age(&mut a, CANDIDATE_WAIT);
    assert!(a.pending[0].ready(now), "not longer than CANDIDATE_WAIT");
    let k = first_kill(&mut a);
    let m = k.candidates_method.clone().unwrap();
    assert_eq!(m.candidates, 4);
    let want = Lost { ring_full: 2, walk_limit: 3, agent_evicted: 0, not_received: 2 };
    assert_eq!(m.lost_reasons, want);
    assert_eq!(m.lost, 7, "4 + 7 = the 11 processes of the domain");
    let notes = report::notes(&k, 4, None).join("\n");
    assert!(notes.contains("7 of 11 candidates are missing from the table (2 ring buffer full, \
         3 past the walk's task limit, 2 not received in time)"), "{notes}");
}

/// Past MAX_BUFFERED decisions waiting for their kill, the oldest buffer goes; its
/// kill then counts those candidates as dropped by the agent.
#[test]
fn evicted_buffers_count_in_their_decision() {
    let mut a = agent();
    for d in 0..=MAX_BUFFERED as u64 {
        let mut c = cand(100, "victim", 4096, 900, CAND_POINTS);
        c.decision = 1 + d;
        rec(&mut a, KIND_CANDIDATE, &bytes(&c));
        rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    }
    assert_eq!(a.candidates.len(), MAX_BUFFERED);
    assert_eq!(a.evicted, [(1, 2)]);
    let mut ev = kill_event();
    ev.decision = 1;
    ev.cand_emitted = 3;
    rec(&mut a, KIND_KILL, &bytes(&ev));
    let mut c = cand(200, "grower", 14_000, 0, CAND_POINTS);
    c.decision = 1;
    rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    assert!(a.pending[0].candidates_in(), "2 evicted + 1 kept: all 3 arrived");
    let m = first_kill(&mut a).candidates_method.unwrap();
    // The victim's row comes back from the kill record: one of the two evicted.
    assert_eq!((m.candidates, m.lost, m.lost_reasons.agent_evicted), (2, 1, 1));
    assert!(a.evicted.is_empty());
}

/// The walk's first record is the victim's: when it is lost, the victim's row comes from
/// the kill record and is no longer counted as lost.
#[test]
fn a_lost_victim_record_is_recovered_from_the_kill() {
    let mut a = agent();
    let mut ev = kill_event();
    ev.cand_emitted = 3;
    ev.cand_dropped = 1;
    for c in &cands()[1..] {
        rec(&mut a, KIND_CANDIDATE, &bytes(c));
    }
    rec(&mut a, KIND_KILL, &bytes(&ev));
    let k = first_kill(&mut a);
    let m = k.candidates_method.unwrap();
    assert_eq!((m.candidates, m.lost), (4, 0), "3 received + the victim's row");
    assert!(k.candidates.iter().any(|c| c.victim && c.pid == 100));
}

#[test]
fn exact_candidates_and_select_done() {
    let mut a = agent();
    // A selection that killed nothing: its candidates are dropped at out_of_memory's end,
    // and those still on their way too.
    let mut c = cand(1, "x", 10, 0, CAND_POINTS | CAND_EXACT);
    c.decision = 1;
    rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    assert!(a.candidates.contains_key(&1));
    let done = OomSelectDoneEvent {
        header: EventHeader { kind: KIND_SELECT_DONE, cpu: 0, boot_ns: 1 },
        decision: 1,
        calls: 2,
        emitted: 2,
        dropped: 0,
        ret: 1,
    };
    assert!(rec(&mut a, KIND_SELECT_DONE, &bytes(&done)));
    assert!(!a.candidates.contains_key(&1));
    rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    assert!(!a.candidates.contains_key(&1), "a late one of a selection without a kill");

    let mut ev = kill_event();
    ev.method = OOM_METHOD_FEXIT;
    ev.dflags = OOM_D_OC_ENTRY | OOM_D_HAVE_OC | OOM_D_HAVE_CHOSEN_POINTS;
    ev.cand_emitted = 1;
    let c = cand(100, "victim", 4096, 900, CAND_POINTS | CAND_EXACT);
    rec(&mut a, KIND_CANDIDATE, &bytes(&c));
    rec(&mut a, KIND_KILL, &bytes(&ev));
    // Its own end of selection keeps it.
    let mut done = done;
    done.decision = DECISION;
    rec(&mut a, KIND_SELECT_DONE, &bytes(&done));
    assert_eq!(a.pending.len(), 1);
    let k = first_kill(&mut a);
    let m = k.candidates_method.as_ref().unwrap();
    assert_eq!((m.method, m.exact, m.candidates, m.lost), (MethodKind::Fexit, true, 1, 0));
    assert!(k.constraint_source.as_str().contains("out_of_memory()'s argument"));
    assert_eq!(k.domain.memcg, None, "no memcg read for this record");
}

#[test]
fn group_members_join_their_decision() {
    let mut a = assembled();
    let m = group_member();
    assert!(rec(&mut a, KIND_KILL, &bytes(&m)));
    assert_eq!(a.pending.len(), 1, "one decision");
    assert_eq!(a.pending[0].group_kills[0].pid, 500);
    assert_eq!(a.pending[0].tracks.len(), 2);
    assert_eq!(first_kill(&mut a).group_kills[0].pid, 500);
    // A member whose decision is gone is a decision of its own, saying so.
    let mut a = agent();
    assert!(rec(&mut a, KIND_KILL, &bytes(&m)));
    assert!(a.pending[0].candidates_in(), "it waits for no candidates");
    let k = first_kill(&mut a);
    assert!(k.notes[0].contains("memory.oom.group member of decision 7000"));
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
