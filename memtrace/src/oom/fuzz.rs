//! Fuzzing the oom family's ring-buffer records (the driver is kernel::fuzz): sequences
//! of records of every kind, mutated from the fixtures or random, into a fresh agent, and
//! what it emits through the text view. Nothing may panic, whatever the kernel sent.

use memtrace_common::oom::{
    OomSelectDoneEvent, KIND_CANDIDATE, KIND_KILL, KIND_REAPER, KIND_SELECT_DONE, REAPER_EXIT,
    REAPER_FINISH, REAPER_START, REAPER_WAKE,
};

use super::{
    agent::OomAgent,
    fixtures::{bytes, cands, emitted, env, group_member, kill_event, reaper_event, DECISION},
    Options,
};
use crate::{
    engine::family::{Agent, Filter},
    kernel::fuzz::{self, mutate_bytes, Rng},
};

/// One record: a fixture of a random kind, mutated (often in its decision id, so that
/// records of one decision meet), or random bytes.
fn record(rng: &mut Rng) -> (u32, Vec<u8>) {
    let done = OomSelectDoneEvent {
        header: memtrace_common::EventHeader { kind: KIND_SELECT_DONE, cpu: 0, boot_ns: 5_100_000 },
        decision: DECISION,
        calls: 4,
        emitted: 4,
        dropped: 0,
        ret: 1,
    };
    let phase = *rng.pick(&[REAPER_WAKE, REAPER_START, REAPER_FINISH, REAPER_EXIT, 99]);
    let seeds = [
        (KIND_KILL, bytes(&kill_event())),
        (KIND_KILL, bytes(&group_member())),
        (KIND_CANDIDATE, bytes(rng.pick(&cands()))),
        (KIND_REAPER, bytes(&reaper_event(100, phase, 6_000_000))),
        (KIND_SELECT_DONE, bytes(&done)),
    ];
    let (mut kind, mut b) = rng.pick(&seeds).clone();
    match rng.below(6) {
        0 => b = (0..rng.below(b.len() * 2)).map(|_| rng.u64() as u8).collect(),
        1 => kind = rng.u64() as u32,
        2 => {}
        _ => mutate_bytes(rng, &mut b),
    }
    (kind, b)
}

fn serialize(recs: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, b) in recs {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The records into a fresh agent (a tick after each), its records through the view.
fn check(recs: &[(u32, Vec<u8>)]) -> bool {
    let mut agent = OomAgent::new(Filter::default(), env());
    let mut decoded = false;
    let values = emitted(|out| {
        for (kind, b) in recs {
            decoded |= agent.record(*kind, b, out);
            agent.tick(out);
        }
        agent.finish(out, crate::engine::family::End::default());
    });
    for all in [false, true] {
        let mut view = super::family(Options { all_candidates: all }).view();
        for v in &values {
            let _ = view.record(v);
        }
        let _ = view.finish();
    }
    decoded
}

#[test]
fn fuzz_oom_records() {
    fuzz::run(
        "oom_records",
        |rng| (0..1 + rng.below(12)).map(|_| record(rng)).collect::<Vec<_>>(),
        |recs| serialize(recs),
        |recs| check(recs),
    );
}
