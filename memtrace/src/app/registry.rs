//! The only file that names every family. The engine walks what it is given here.

use std::time::Duration;

use crate::{
    engine::family::Family,
    error::Error,
    oom, reclaim, shmem, slab,
};

use super::cli::Command;

/// Every family of this build, with the options `cmd` gives it (defaults for the families
/// the command does not trace), and the names of those it traces. `interval` and `count`
/// are the command's, resolved.
pub fn for_command(
    cmd: &Command,
    interval: Option<Duration>,
    count: Option<u64>,
) -> Result<(Vec<Box<dyn Family>>, Vec<&'static str>), Error> {
    let mut o = oom::Options::default();
    let mut r = reclaim::Options::default();
    let mut sl = slab::Options::default();
    let mut sh = shmem::Options::default();
    let traced = match cmd {
        Command::Watch(_) | Command::Doctor(_) => vec!["oom", "reclaim", "slab", "shmem"],
        Command::Oom(c) => {
            o = c.args.validate()?;
            vec!["oom"]
        }
        Command::Reclaim(c) => {
            r = c.args.validate()?;
            vec!["reclaim"]
        }
        Command::Slab(c) => {
            sl = c.args.validate()?;
            vec!["slab"]
        }
        Command::Shmem(c) => {
            sh = c.args.validate()?;
            vec!["shmem"]
        }
    };
    // TRANSITIONAL: what agents still decide from the command's interval and output.
    r.interval = interval;
    r.count = count;
    sh.periodic = interval.is_some();
    sl.json = match cmd {
        Command::Watch(c) => c.trace.json,
        Command::Slab(c) => c.trace.json,
        _ => false,
    };
    let all = vec![oom::family(o), reclaim::family(r), slab::family(sl), shmem::family(sh)];
    Ok((all, traced))
}

/// Every family with its default options.
pub fn all() -> Vec<Box<dyn Family>> {
    vec![
        oom::family(oom::Options::default()),
        reclaim::family(reclaim::Options::default()),
        slab::family(slab::Options::default()),
        shmem::family(shmem::Options::default()),
    ]
}
