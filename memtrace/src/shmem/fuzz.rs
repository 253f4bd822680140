//! Fuzzing the shmem family's ring-buffer record (the driver is kernel::fuzz): task
//! records, mutated or random, through the decoder and the cgroup names it learns.

use memtrace_common::{
    shmem::{ShmemTaskEvent, KIND_TASK},
    CgroupPath, EventHeader, CGROUP_DEPTH, CGROUP_NAME_LEN, CGROUP_TRUNCATED,
};

use super::agent::task_record;
use crate::kernel::{
    cgroup::Names,
    fuzz::{self, mutate_bytes},
};

#[test]
fn fuzz_shmem_records() {
    let mut names = [[b'x'; CGROUP_NAME_LEN]; CGROUP_DEPTH];
    names[1] = [0xff; CGROUP_NAME_LEN];
    let ev = ShmemTaskEvent {
        header: EventHeader { kind: KIND_TASK, cpu: 0, boot_ns: 1 },
        tgid: 1,
        pid: 1,
        cgroup_id: 9,
        comm: [b'a'; 16],
        cgroup: CgroupPath { id: 9, depth: CGROUP_DEPTH as u32, status: CGROUP_TRUNCATED, names },
    };
    // SAFETY: plain #[repr(C)] data viewed as bytes.
    let seed = unsafe {
        std::slice::from_raw_parts(
            (&ev as *const ShmemTaskEvent).cast::<u8>(),
            size_of::<ShmemTaskEvent>(),
        )
    }
    .to_vec();
    fuzz::run(
        "shmem_records",
        |rng| {
            let mut b = seed.clone();
            mutate_bytes(rng, &mut b);
            b
        },
        |b| b.clone(),
        |b| task_record(&mut Names::in_hierarchy(None), b),
    );
}
