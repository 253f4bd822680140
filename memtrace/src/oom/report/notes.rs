//! The plain-language notes of an OOM decision: why this victim, what protected whom, the
//! constraint in a sentence. The agent writes them into the record's `notes`.

use super::{
    Candidate, Constraint, OomKill, PointsSource, Skip,
    text::{opt_kib, pages, signed},
};
use crate::engine::format::kib;

/// Plain findings, most useful first. `host_available_kb`: MemAvailable when reported.
pub fn notes(k: &OomKill, page_kib: i64, host_available_kb: Option<i64>) -> Vec<String> {
    let mut n = victim_notes(k, page_kib);
    for c in k.candidates.iter().filter(|c| c.skipped == Some(Skip::AdjMin)) {
        n.push(format!(
            "oom_score_adj -1000 protected pid {} ({}, {} resident)",
            c.tgid,
            c.comm,
            kib(c.rss_kb)
        ));
    }
    let pending: Vec<&Candidate> =
        k.candidates.iter().filter(|c| c.skipped == Some(Skip::Pending)).collect();
    if !pending.is_empty() {
        n.push(format!(
            "an earlier OOM victim was still exiting (pid {}): the kernel normally waits for it \
             instead of killing again",
            pending.iter().map(|c| c.tgid.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    n.extend(constraint_note(k, host_available_kb));
    let v = &k.victim;
    if v.pid == k.trigger.pid {
        n.push("the victim triggered the OOM itself".to_string());
    } else if k.candidates.iter().any(|c| c.tgid == k.trigger.tgid && !c.victim) {
        n.push(format!(
            "the trigger pid {} ({}) was not chosen: its score was lower than the victim's",
            k.trigger.tgid, k.trigger.comm
        ));
    }
    if !k.group_kills.is_empty() {
        n.push(format!(
            "memory.oom.group: {} more process{} of {} killed with the victim",
            k.group_kills.len(),
            if k.group_kills.len() == 1 { "" } else { "es" },
            k.domain.memcg.as_deref().or(v.cgroup.as_deref()).unwrap_or("its memcg")
        ));
    }
    if let (Some(kp), Some(b)) = (v.points, v.points_breakdown) {
        if v.points_source == Some(PointsSource::Kernel) && kp != b.total {
            n.push(format!(
                "the kernel scored the victim {kp}, the breakdown read at mark_victim sums to {} \
                 ({} pages changed between the selection and the read)",
                b.total,
                (b.total - kp).abs()
            ));
        }
    }
    if let Some(m) = &k.candidates_method {
        if m.lost > 0 {
            n.push(format!(
                "{} of {} candidates are missing from the table ({})",
                m.lost,
                m.candidates + m.lost as usize,
                m.lost_reasons.describe()
            ));
        }
    }
    if let Some(r) = &k.retries {
        if r.max_no_progress_loops > 0 {
            n.push(format!(
                "the page allocator retried reclaim {} times without progress before giving up \
                 (order {})",
                r.max_no_progress_loops, r.order
            ));
        }
    }
    n
}

/// Why this victim: not the largest process (what its oom_score_adj added), or the
/// largest with its score moved by oom_score_adj.
fn victim_notes(k: &OomKill, page_kib: i64) -> Vec<String> {
    let mut n = Vec::new();
    let size = |c: &Candidate| c.rss_kb + c.swap_kb + c.pgtables_kb;
    let Some(vc) = k.candidates.iter().find(|c| c.victim) else { return n };
    let largest = k
        .candidates
        .iter()
        .filter(|c| c.points.is_some())
        .max_by_key(|c| (size(c), std::cmp::Reverse(c.pid)));
    if let Some(big) = largest {
        if big.tgid != vc.tgid && size(big) > size(vc) {
            let adj = vc.breakdown.map(|b| b.adj_pages).unwrap_or(0);
            let big_adj = big.breakdown.map(|b| b.adj_pages).unwrap_or(0);
            let mut s = format!(
                "victim is not the largest process: pid {} ({}) uses {}, the victim {}",
                big.tgid,
                big.comm,
                kib(size(big)),
                kib(size(vc))
            );
            if adj > 0 {
                s += &format!(
                    "; its oom_score_adj {} added {} pages ({}-equivalent)",
                    signed(i64::from(vc.oom_score_adj)),
                    adj,
                    pages(adj, page_kib)
                );
            }
            if big_adj < 0 {
                s += &format!(
                    "; pid {}'s oom_score_adj {} took off {} pages ({}-equivalent)",
                    big.tgid,
                    big.oom_score_adj,
                    -big_adj,
                    pages(-big_adj, page_kib)
                );
            }
            n.push(s);
        }
    }
    if let Some(b) = vc.breakdown {
        if vc.oom_score_adj != 0 && largest.is_some_and(|l| l.tgid == vc.tgid) {
            n.push(format!(
                "oom_score_adj {} moved the victim's score by {} pages ({}-equivalent)",
                signed(i64::from(vc.oom_score_adj)),
                b.adj_pages,
                pages(b.adj_pages.abs(), page_kib)
            ));
        }
    }
    n
}

/// The constraint in a sentence.
fn constraint_note(k: &OomKill, host_available_kb: Option<i64>) -> Option<String> {
    match k.constraint {
        Constraint::Memcg => {
            let mut s = format!(
                "constraint memcg: {} hit its limit{}",
                k.domain.memcg.as_deref().unwrap_or("the memcg"),
                k.domain.memcg_limit_kb.map(|l| format!(" of {}", kib(l))).unwrap_or_default()
            );
            if let Some(a) = host_available_kb {
                s += &format!("; the host had {} available", kib(a));
            }
            Some(s)
        }
        Constraint::Global => Some(format!(
            "constraint global: the whole system ran out of memory{}",
            k.domain
                .totalpages_kb
                .map(|t| format!(" ({} of RAM + swap)", kib(t)))
                .unwrap_or_default()
        )),
        Constraint::Cpuset | Constraint::Mempolicy => Some(format!(
            "constraint {}: only the allowed nodes' memory counted (domain {})",
            k.constraint,
            opt_kib(k.domain.totalpages_kb)
        )),
        Constraint::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oom::fixtures::{PAGE, decided};

    #[test]
    fn notes_say_why_this_victim() {
        let n = notes(&decided(), PAGE, Some(20 << 20));
        assert_eq!(n, [
            "victim is not the largest process: pid 200 (grower) uses 56.6 MiB, the victim \
             17.9 MiB; its oom_score_adj +900 added 28800 pages (112.5 MiB-equivalent)",
            "oom_score_adj -1000 protected pid 400 (protected, 197.1 MiB resident)",
            "constraint memcg: /svc/job hit its limit of 128.0 MiB; the host had 20.00 GiB \
             available",
            "the trigger pid 200 (grower) was not chosen: its score was lower than the victim's",
        ]);
    }

    #[test]
    fn notes_on_the_largest_victim_and_a_global_oom() {
        let mut k = decided();
        // The grower is killed: the largest, its score moved by its own adj.
        for c in &mut k.candidates {
            c.victim = c.pid == 200;
        }
        k.candidates[1].oom_score_adj = -100;
        k.candidates[1].breakdown = k.candidates[1].breakdown.map(|mut b| {
            b.adj_pages = -3200;
            b
        });
        k.constraint = Constraint::Global;
        k.victim.pid = 200;
        k.trigger.pid = 200;
        let n = notes(&k, PAGE, None).join("\n");
        for want in [
            "oom_score_adj -100 moved the victim's score by -3200 pages (12.5 MiB-equivalent)",
            "constraint global: the whole system ran out of memory (128.0 MiB of RAM + swap)",
            "the victim triggered the OOM itself",
        ] {
            assert!(n.contains(want), "{want}: {n}");
        }
        assert!(!n.contains("not the largest"), "{n}");
    }
}
