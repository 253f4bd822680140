//! What happened to the victim (and the memory.oom.group members) after the kill: its
//! exit and the OOM reaper, in ms after the kill.

use crate::oom::report::Reaper;

/// A group member or the victim, and what happened to it after the kill (boot ns).
#[derive(Debug, Clone, Default)]
pub struct Track {
    pub pid: u32,
    pub kill_ns: u64,
    pub exit_ns: Option<u64>,
    pub wake_ns: Option<u64>,
    pub start_ns: Option<u64>,
    pub finish_ns: Option<u64>,
    pub skips: u32,
    /// Already exiting when the kill record was sent (its exit may precede the hook).
    pub exiting_at_send: bool,
}

impl Track {
    /// Exited, or reaped.
    pub fn ended(&self) -> bool {
        self.exit_ns.is_some() || self.finish_ns.is_some()
    }
}

/// ns from `from` to `to` in ms, two decimals.
fn ms(from: u64, to: u64) -> f64 {
    (to.saturating_sub(from) as f64 / 1e4).round() / 100.0
}

/// The victim's fate after the kill (the first track), group members summarised.
pub fn reaper_summary(tracks: &[Track]) -> Reaper {
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
    let mut parts = vec![victim_fate(v, &r)];
    let members = &tracks[1..];
    if !members.is_empty() {
        let exited = members.iter().filter(|t| t.exit_ns.is_some()).count();
        parts.push(format!("{exited} of {} group members exited", members.len()));
    }
    r.summary = parts.join("; ");
    r
}

/// The victim's exit or the reaper's work, in a sentence.
fn victim_fate(v: &Track, r: &Reaper) -> String {
    match (r.victim_exit_ms, r.wake_reaper_ms) {
        (Some(_), None) if v.exit_ns.is_some_and(|x| x <= v.kill_ns) => {
            "the victim exited right at the kill (before mark_victim had finished); the OOM \
             reaper was not needed"
                .to_string()
        }
        (Some(e), None) => {
            format!("victim exited {e} ms after the kill; the OOM reaper was not needed")
        }
        (exit, Some(w)) => {
            let mut s = format!("the OOM reaper woke {w} ms after the kill");
            match (r.start_reaping_ms, r.finish_reaping_ms) {
                (Some(a), Some(b)) => {
                    s += &format!(", reaped the victim in {:.2} ms (done at {b} ms)", b - a)
                }
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
            s
        }
        (None, None) if v.exiting_at_send => {
            "the victim was already exiting when the kill was recorded; the OOM reaper was not \
             needed"
                .to_string()
        }
        (None, None) => "the victim's exit was not seen before the report (still exiting, or \
                         the exit hook is not attached)"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn victim() -> Track {
        Track { pid: 100, kill_ns: 5_000_000, ..Track::default() }
    }

    #[test]
    fn the_victims_exit_or_the_reapers_work() {
        let mut v = victim();
        v.exit_ns = Some(8_000_000);
        let r = reaper_summary(&[v.clone()]);
        assert_eq!(r.victim_exit_ms, Some(3.0));
        assert_eq!(r.summary, "victim exited 3 ms after the kill; the OOM reaper was not needed");
        v.exit_ns = Some(4_000_000);
        assert!(reaper_summary(&[v]).summary.starts_with("the victim exited right at the kill"));

        let mut v = victim();
        (v.wake_ns, v.start_ns, v.finish_ns) =
            (Some(2_005_000_000), Some(2_006_000_000), Some(2_010_000_000));
        v.skips = 2;
        assert!(v.ended());
        let r = reaper_summary(&[v]);
        assert_eq!((r.wake_reaper_ms, r.finish_reaping_ms), (Some(2000.0), Some(2005.0)));
        assert_eq!(
            r.summary,
            "the OOM reaper woke 2000 ms after the kill, reaped the victim in 4.00 ms (done at \
             2005 ms); it could not take the victim's mmap lock 2 times"
        );
    }

    #[test]
    fn unseen_exits_and_group_members() {
        let mut v = victim();
        assert!(!v.ended());
        assert!(reaper_summary(&[v.clone()]).summary.starts_with("the victim's exit was not seen"));
        v.exiting_at_send = true;
        let member = Track { pid: 101, exit_ns: Some(6_000_000), ..victim() };
        let other = Track { pid: 102, ..victim() };
        let r = reaper_summary(&[v, member, other]);
        assert_eq!(
            r.summary,
            "the victim was already exiting when the kill was recorded; the OOM reaper was not \
             needed; 1 of 2 group members exited"
        );
        assert_eq!(reaper_summary(&[]).summary, "");
    }
}
