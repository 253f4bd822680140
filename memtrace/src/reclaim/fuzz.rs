//! Fuzzing the reclaim family's ring-buffer record (the driver is kernel::fuzz): stall
//! records, mutated or random, through the decoder and the text view. Nothing may panic,
//! whatever the kernel sent.

use memtrace_common::{
    reclaim::{ReclaimStallEvent, KIND_DIRECT, KIND_STALL, KIND_THROTTLE},
    CgroupPath, EventHeader, CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_NAME_LEN,
};

use super::{agent::decode_stall, records::ReclaimRecord, Options};
use crate::kernel::{
    fuzz::{self, mutate_bytes, Rng},
    gfp::Gfp,
};

fn stall(rng: &mut Rng) -> ReclaimStallEvent {
    let mut names = [[0; CGROUP_NAME_LEN]; CGROUP_DEPTH];
    names[0][..3].copy_from_slice(b"job");
    let mut comm = [0; 16];
    comm[..2].copy_from_slice(b"dd");
    let other = rng.u64() as u32;
    ReclaimStallEvent {
        header: EventHeader { kind: KIND_STALL, cpu: 0, boot_ns: 1_000_000 },
        kind: *rng.pick(&[KIND_DIRECT, KIND_THROTTLE, other]),
        flags: rng.below(4) as u32,
        tid: 11,
        tgid: 10,
        order: 0,
        reason: 5,
        gfp_flags: 0xcc0,
        nr_reclaimed: 32,
        duration_ns: 12_345_678,
        memcg_id: 77,
        comm,
        leader_comm: comm,
        cgroup: CgroupPath { id: 77, depth: 1, status: CGROUP_COMPLETE, names },
    }
}

fn bytes(ev: &ReclaimStallEvent) -> Vec<u8> {
    // SAFETY: plain #[repr(C)] data viewed as bytes.
    unsafe {
        std::slice::from_raw_parts(
            (ev as *const ReclaimStallEvent).cast::<u8>(),
            size_of::<ReclaimStallEvent>(),
        )
    }
    .to_vec()
}

#[test]
fn fuzz_reclaim_records() {
    let gfp =
        Gfp { table: vec![(0xcc0, "GFP_KERNEL".into()), (0x400, "__GFP_DIRECT_RECLAIM".into())] };
    fuzz::run(
        "reclaim_records",
        |rng| {
            let mut b = bytes(&stall(rng));
            if rng.one_in(8) {
                b = (0..rng.below(2 * b.len())).map(|_| rng.u64() as u8).collect();
            } else {
                mutate_bytes(rng, &mut b);
            }
            b
        },
        |b| b.clone(),
        |b| {
            let Some(s) = decode_stall(b, &gfp) else { return false };
            let v = serde_json::to_value(ReclaimRecord::Stall(s)).expect("a stall serializes");
            for ms in [false, true] {
                let mut view = super::family(Options { ms, ..Options::default() }).view();
                let _ = (view.record(&v), view.finish());
            }
            true
        },
    );
}
