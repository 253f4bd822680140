//! `hog --mb N [--step-kb K] [--step-us U] [--exit]`: touches N MiB of anonymous memory,
//! one page at a time in steps of K KiB (sleeping U µs between steps), prints
//! `ready <touched KiB>` and sleeps (or exits with --exit).

use crate::common::{Opts, map_anon, park, say};

pub fn run(o: &Opts) {
    let mb = o.num("mb", 16);
    let step = o.num("step-kb", 1024) as usize * 1024;
    let pause = std::time::Duration::from_micros(o.num("step-us", 0));
    let total = mb as usize * 1024 * 1024;
    let base = map_anon(total);
    let mut done = 0;
    while done < total {
        let end = (done + step).min(total);
        let mut off = done;
        while off < end {
            // SAFETY: inside the mapping.
            unsafe { base.add(off).write_volatile(1) };
            off += 4096;
        }
        done = end;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    say(&format!("ready {}", total / 1024));
    if o.flag("exit") {
        return;
    }
    park()
}
