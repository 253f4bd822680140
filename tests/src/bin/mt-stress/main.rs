//! mt-stress: workloads that make the kernel emit the events memtrace traces. Each takes
//! `--comm NAME` (a distinctive task name to find in memtrace's output), `--cgroup DIR`
//! (joins that cgroup first) and `--adj N` (oom_score_adj), prints `ready ...` on stdout
//! when its setup is done, and keeps its memory until killed unless told to exit.
//!
//! Usage: mt-stress <workload> [options]
//!   hog --mb N [--step-kb K] [--exit]   touch N MiB of anonymous memory, then sleep (or exit)
//!   pagecache --path F --mb N [--read] [--passes K] [--loop] [--exit]   buffered file writes
//!   lazyfree --mb N [--churn] [--forks K [--pause-ms P]]   N MiB of MADV_FREE memory
//!                                        (reclaimable without swap); K processes in turn
//!   tmpfs-write --path P --mb N [--hold] [--go F]  write N MiB into a tmpfs file, exit
//!                                        (shmem.rs)
//!   memfd-write --name S --mb N [--exit] write N MiB into a memfd, hold it
//!   shm-write --name S --mb N [--hold]   touch N MiB of /dev/shm/S through a mapping, exit
//!   sysv-write --mb N [--hold]           touch N MiB of a SysV segment, detach, exit
//!   shared-anon --mb N [--exit]          touch N MiB of shared anonymous memory, hold it
//!   stat-missing --count N --dir D      stat N unique missing paths in D (negative dentries)
//!   sleepers --count N [--stack-bytes B] N small processes sleeping until killed (clones
//!                                        sharing one address space; sleepers.rs)

mod common;
mod hog;
mod lazyfree;
mod pagecache;
mod shmem;
mod sleepers;
mod stat_missing;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((workload, rest)) = args.split_first() else {
        eprintln!("usage: mt-stress <hog|pagecache|lazyfree|stat-missing> [options]");
        std::process::exit(2);
    };
    let opts = common::Opts::parse(rest);
    opts.apply();
    match workload.as_str() {
        "hog" => hog::run(&opts),
        "pagecache" => pagecache::run(&opts),
        "lazyfree" => lazyfree::run(&opts),
        "tmpfs-write" => shmem::tmpfs_write(&opts),
        "memfd-write" => shmem::memfd_write(&opts),
        "shm-write" => shmem::shm_write(&opts),
        "sysv-write" => shmem::sysv_write(&opts),
        "shared-anon" => shmem::shared_anon(&opts),
        "stat-missing" => stat_missing::run(&opts),
        "sleepers" => sleepers::run(&opts),
        other => {
            eprintln!("mt-stress: unknown workload {other}");
            std::process::exit(2);
        }
    }
}
