//! The oom family's text view: one block per OOM decision, readable at 3 a.m., rendered
//! from the `oom_kill` record alone (live, or replayed from a recording).

use serde::Deserialize as _;
use serde_json::Value;

use super::{OomKill, OomRecord, PointsSource};
use crate::engine::{
    format::kib,
    sink::{Text, View},
};

/// The text view: each `oom_kill` record as its block, the top `top` candidates (all with
/// None).
pub struct OomView {
    page_kib: i64,
    top: Option<usize>,
}

impl OomView {
    pub fn new(page_kib: i64, top: Option<usize>) -> OomView {
        OomView { page_kib, top }
    }
}

impl View for OomView {
    fn record(&mut self, rec: &Value) -> Text {
        match OomRecord::deserialize(rec) {
            Ok(OomRecord::Kill(k)) => Text::out(render_text(&k, self.page_kib, self.top)),
            Err(e) => Text::err(format!("memtrace: unreadable oom record ({e}): {rec}\n")),
        }
    }
}

/// `kib()` of pages.
pub(super) fn pages(p: i64, page_kib: i64) -> String {
    kib(p * page_kib)
}

pub(super) fn opt_kib(v: Option<i64>) -> String {
    v.map(kib).unwrap_or_else(|| "?".into())
}

pub(super) fn signed(v: i64) -> String {
    if v > 0 { format!("+{v}") } else { v.to_string() }
}

/// A memcg path, or "(unknown)".
fn cg(c: &Option<String>) -> &str {
    c.as_deref().unwrap_or("(unknown)")
}

/// One report per OOM: header, domain and request, victim with its score breakdown, what
/// happened after, the candidate table (top `top` unless all), notes.
pub fn render_text(k: &OomKill, page_kib: i64, top: Option<usize>) -> String {
    let v = &k.victim;
    let t = &k.trigger;
    let mut s = format!(
        "{}  OOM KILL  pid {} ({})  constraint {}{}  triggered by pid {} ({})\n",
        k.time,
        v.tgid,
        v.comm,
        k.constraint,
        k.domain.memcg.as_deref().map(|m| format!(" {m}")).unwrap_or_default(),
        t.tgid,
        t.comm,
    );
    // Domain.
    let total = match (k.domain.totalpages, k.domain.totalpages_kb) {
        (Some(p), Some(kb)) => format!("totalpages {p} (the domain's size: {})", kib(kb)),
        _ => "totalpages unknown".to_string(),
    };
    match &k.domain.memcg {
        Some(m) => {
            s += &format!(
                "  domain    memcg {m}: limit {}, usage {}; {total}\n",
                opt_kib(k.domain.memcg_limit_kb),
                opt_kib(k.domain.memcg_usage_kb)
            )
        }
        None => s += &format!("  domain    {}; {total}\n", k.domain.kind),
    }
    s += &format!("            ({})\n", k.domain.totalpages_source);
    if let Some(o) = k.order {
        s += &format!(
            "  request   order {o} ({}), gfp {}, by pid {} ({}) memcg {}\n",
            if o >= 0 { pages(1 << o, page_kib) } else { "sysrq".into() },
            k.gfp_flags.as_ref().map(|f| f.join("|")).unwrap_or_else(|| "?".into()),
            t.tgid,
            t.comm,
            cg(&t.cgroup)
        );
    } else {
        s += &format!("  trigger   pid {} ({}) memcg {}\n", t.tgid, t.comm, cg(&t.cgroup));
    }
    // Victim.
    s += &format!(
        "  victim    pid {} ({}) uid {} memcg {}  oom_score_adj {}\n",
        v.tgid,
        v.comm,
        v.uid.map(|u| u.to_string()).unwrap_or_else(|| "?".into()),
        cg(&v.cgroup),
        v.oom_score_adj.map(|a| signed(i64::from(a))).unwrap_or_else(|| "?".into()),
    );
    if let Some(b) = v.points_breakdown {
        s += &format!(
            "            points {} = rss {} + swap {} + page tables {} + adj {} x {} = {}{}\n",
            v.points.unwrap_or(b.total),
            b.rss_pages,
            b.swap_pages,
            b.pgtables_pages,
            signed(b.oom_score_adj),
            b.adj_unit_pages,
            b.adj_pages,
            match v.points_source {
                Some(PointsSource::Kernel | PointsSource::Exact) if v.points == Some(b.total) => {
                    "   (the kernel's score)".to_string()
                }
                Some(PointsSource::Kernel | PointsSource::Exact) => {
                    format!("   (kernel {}, breakdown sums to {})", v.points.unwrap_or(0), b.total)
                }
                _ => "   (recomputed at mark_victim)".to_string(),
            }
        );
    } else if let Some(p) = v.points {
        s += &format!("            points {p}\n");
    }
    s += &format!(
        "            rss anon {}  file {}  shmem {}  swap {}  page tables {}  vm {}\n",
        opt_kib(v.rss_anon_kb),
        opt_kib(v.rss_file_kb),
        opt_kib(v.rss_shmem_kb),
        opt_kib(v.swap_kb),
        opt_kib(v.pgtables_kb),
        opt_kib(v.total_vm_kb),
    );
    for g in &k.group_kills {
        s += &format!(
            "  group     also killed pid {} ({}) memcg {} rss {} (memory.oom.group)\n",
            g.tgid,
            g.comm,
            cg(&g.cgroup),
            opt_kib(g.rss_kb)
        );
    }
    if let Some(r) = &k.reaper {
        s += &format!("  after     {}\n", r.summary);
    }
    if let Some(r) = &k.retries {
        s += &format!(
            "  retries   {} reclaim checks, no_progress_loops {} (max {}), order {}{}\n",
            r.reclaim_checks,
            r.no_progress_loops,
            r.max_no_progress_loops,
            r.order,
            match (r.compaction_retries, &r.compaction_result) {
                (Some(n), Some(res)) => format!("; compaction retries {n} ({res})"),
                _ => String::new(),
            }
        );
    }
    s += &candidates(k, top);
    if !k.notes.is_empty() {
        s += "  notes\n";
        for n in &k.notes {
            s += &format!("    - {n}\n");
        }
    }
    s
}

/// The candidate table: how it was obtained, the top `top` rows (all with None).
fn candidates(k: &OomKill, top: Option<usize>) -> String {
    let Some(m) = &k.candidates_method else {
        return "  candidates: not available on this kernel\n".to_string();
    };
    let mut s = format!(
        "  candidates: {} evaluated, {} ({})\n",
        k.candidates.len(),
        m.method,
        if m.exact { "exact" } else { "approximate" }
    );
    let shown = top.unwrap_or(usize::MAX).min(k.candidates.len());
    if shown > 0 {
        s += &format!(
            "    {:>9} {:>6} {:>11} {:>10} {:>10} {:>8}  {:<16} {}\n",
            "POINTS", "ADJ", "RSS", "SWAP", "PGTABLES", "PID", "COMM", "MEMCG"
        );
    }
    for c in &k.candidates[..shown] {
        s += &format!(
            "    {:>9} {:>6} {:>11} {:>10} {:>10} {:>8}  {:<16} {}{}\n",
            c.points.map(|p| p.to_string()).unwrap_or_else(|| "skipped".into()),
            signed(i64::from(c.oom_score_adj)),
            kib(c.rss_kb),
            kib(c.swap_kb),
            kib(c.pgtables_kb),
            c.tgid,
            c.comm,
            cg(&c.cgroup),
            match (c.victim, c.skipped) {
                (true, _) => "  <- killed".to_string(),
                (false, Some(why)) => format!("  ({why})"),
                _ => String::new(),
            }
        );
    }
    if shown < k.candidates.len() {
        let more = k.candidates.len() - shown;
        s += &format!("    ... {more} more (--all-candidates to list them)\n");
    }
    if !m.exact {
        s += "    (approximate: scores recomputed in BPF just after the kernel's own scan; \
              the JSON candidates_method.detail states the race)\n";
    }
    if m.lost > 0 {
        s += &format!("    ({} candidates lost: {})\n", m.lost, m.lost_reasons.describe());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oom::fixtures::{PAGE, reported};

    #[test]
    fn text_report_shows_top_candidates() {
        let k = reported();
        let t = render_text(&k, PAGE, Some(2));
        let first = "2026-11-22T02:19:37.449Z  OOM KILL  pid 100 (victim)  constraint memcg \
                     /svc/job  triggered by pid 200 (grower)\n";
        assert!(t.starts_with(first), "{t}");
        for want in [
            "totalpages 32768 (the domain's size: 128.0 MiB)",
            "order 0 (4 KiB), gfp GFP_HIGHUSER_MOVABLE|__GFP_COMP",
            "points 33376 = rss 4556 + swap 0 + page tables 20 + adj +900 x 32 = 28800   \
             (the kernel's score)",
            "  after     victim exited 3 ms after the kill; the OOM reaper was not needed\n",
            "4 evaluated, task walk at oom:mark_victim (approximate)",
            "<- killed",
            "... 2 more (--all-candidates to list them)",
            "(approximate: scores recomputed in BPF just after the kernel's own scan",
        ] {
            assert!(t.contains(want), "{want}: {t}");
        }
        assert!(!t.contains("(oom_score_adj -1000)"), "the skipped row is past the top 2: {t}");
        let last = "    - the trigger pid 200 (grower) was not chosen: its score was lower than \
                    the victim's\n";
        assert!(t.ends_with(last), "{t}");
        let all = render_text(&k, PAGE, None);
        assert!(all.contains("(oom_score_adj -1000)"), "{all}");
        assert!(!all.contains("more (--all-candidates"));
    }

    /// The view prints from the record's JSON exactly what the record renders to.
    #[test]
    fn the_view_renders_the_json_record() {
        let k = reported();
        let json = serde_json::to_value(OomRecord::Kill(k.clone())).unwrap();
        let mut view = OomView::new(PAGE, Some(10));
        assert_eq!(view.record(&json), Text::out(render_text(&k, PAGE, Some(10))));
        let bad = serde_json::json!({"type": "oom_kill", "time": 1});
        let t = view.record(&bad);
        assert!(t.out.is_empty() && t.err.starts_with("memtrace: unreadable oom record"), "{t:?}");
        assert_eq!(view.finish(), Text::default());
    }
}
