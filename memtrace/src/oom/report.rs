//! The OOM decision record: what `memtrace oom` prints per OOM (JSON and text), and the
//! plain-language notes derived from it.

use serde::Serialize;

use crate::engine::format::kib;

#[derive(Debug, Clone, Serialize)]
pub struct Victim {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub rss_anon_kb: Option<i64>,
    pub rss_file_kb: Option<i64>,
    pub rss_shmem_kb: Option<i64>,
    pub swap_kb: Option<i64>,
    pub pgtables_kb: Option<i64>,
    pub total_vm_kb: Option<i64>,
    /// Memory cgroup path read in BPF at kill time.
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    /// The kernel's badness score of the victim (oom_control.chosen_points when read,
    /// else the candidate table's value).
    pub points: Option<i64>,
    /// Where `points` comes from.
    pub points_source: Option<&'static str>,
    pub points_breakdown: Option<Breakdown>,
}

/// oom_badness(): points = rss + swap + page tables + oom_score_adj x (totalpages / 1000),
/// all in pages.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Breakdown {
    /// anon + file + shmem resident pages.
    pub rss_pages: i64,
    pub swap_pages: i64,
    /// pgtables_bytes / PAGE_SIZE.
    pub pgtables_pages: i64,
    pub oom_score_adj: i64,
    /// totalpages / 1000: what one unit of oom_score_adj is worth in this domain.
    pub adj_unit_pages: i64,
    /// oom_score_adj x adj_unit_pages.
    pub adj_pages: i64,
    pub total: i64,
}

impl Breakdown {
    pub fn new(rss: i64, swap: i64, pgtables: i64, adj: i64, totalpages: u64) -> Breakdown {
        let unit = (totalpages / 1000) as i64;
        Breakdown {
            rss_pages: rss,
            swap_pages: swap,
            pgtables_pages: pgtables,
            oom_score_adj: adj,
            adj_unit_pages: unit,
            adj_pages: adj * unit,
            total: rss + swap + pgtables + adj * unit,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trigger {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
}

/// The OOM domain: whose memory ran out, and its size.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Domain {
    /// "memcg", "system", "cpuset", "mempolicy", or "unknown".
    pub kind: &'static str,
    /// The memcg at its limit (memcg constraint).
    pub memcg: Option<String>,
    pub memcg_limit_kb: Option<i64>,
    pub memcg_usage_kb: Option<i64>,
    /// oom_control.totalpages: the size of the OOM domain in pages (memcg limit, or RAM +
    /// swap). It is NOT the victim's size.
    pub totalpages: Option<u64>,
    pub totalpages_kb: Option<i64>,
    pub totalpages_source: String,
}

/// One task the OOM killer evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// The memcg's kernfs id (the cgroup directory's inode number).
    pub cgroup_id: u64,
    /// The badness score; None when skipped.
    pub points: Option<i64>,
    pub oom_score_adj: i32,
    pub rss_kb: i64,
    pub rss_anon_kb: i64,
    pub rss_file_kb: i64,
    pub rss_shmem_kb: i64,
    pub swap_kb: i64,
    pub pgtables_kb: i64,
    /// Why the kernel did not consider it, when it did not.
    pub skipped: Option<&'static str>,
    /// The task killed by this decision.
    pub victim: bool,
    #[serde(skip)]
    pub breakdown: Option<Breakdown>,
}

/// How the candidate table was obtained on this kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    pub method: &'static str,
    /// True when every score is the kernel's own oom_badness() result.
    pub exact: bool,
    pub detail: String,
    /// Candidate records received.
    pub candidates: usize,
    /// Candidate records lost (ring buffer full).
    pub lost: u32,
}

/// Another process killed with the victim because its memcg has memory.oom.group set.
#[derive(Debug, Clone, Serialize)]
pub struct GroupKill {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub oom_score_adj: Option<i32>,
    pub rss_kb: Option<i64>,
}

/// What happened after the kill, in ms after it (victim exit, OOM reaper).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Reaper {
    pub victim_exit_ms: Option<f64>,
    pub wake_reaper_ms: Option<f64>,
    pub start_reaping_ms: Option<f64>,
    pub finish_reaping_ms: Option<f64>,
    pub skip_reaping: u32,
    pub summary: String,
}

/// The OOM-invoking task's page-allocator retries just before the OOM.
#[derive(Debug, Clone, Serialize)]
pub struct Retries {
    /// oom:reclaim_retry_zone hits (one per zone checked per retry loop).
    pub reclaim_checks: u32,
    /// should_reclaim_retry()'s no_progress_loops at the last check (gives up past 16).
    pub no_progress_loops: i32,
    pub max_no_progress_loops: i32,
    pub order: i32,
    pub last_zone: Option<String>,
    pub reclaimable_kb: i64,
    pub available_kb: i64,
    pub min_wmark_kb: i64,
    pub compaction_retries: Option<i32>,
    pub compaction_max_retries: Option<i32>,
    pub compaction_result: Option<String>,
    pub compaction_priority: Option<String>,
    pub span_ms: f64,
}

/// One OOM decision: the kill(s) and everything that led to them.
#[derive(Debug, Clone, Serialize)]
pub struct OomKill {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// Ties this record to its candidate and reaper events.
    pub decision_id: u64,
    /// "memcg", "global", "cpuset", "mempolicy", or "unknown".
    pub constraint: &'static str,
    pub constraint_source: &'static str,
    pub domain: Domain,
    /// Allocation order that failed (-1: sysrq-f).
    pub order: Option<i32>,
    pub gfp_mask: Option<String>,
    pub gfp_flags: Option<Vec<String>>,
    pub victim: Victim,
    pub trigger: Trigger,
    /// memory.oom.group members killed by the same decision.
    pub group_kills: Vec<GroupKill>,
    pub candidates_method: Option<Method>,
    /// Sorted by points, highest first; skipped tasks last.
    pub candidates: Vec<Candidate>,
    pub reaper: Option<Reaper>,
    pub retries: Option<Retries>,
    /// Plain findings.
    pub notes: Vec<String>,
}

/// `kib()` of pages.
pub fn pages(p: i64, page_kib: i64) -> String {
    kib(p * page_kib)
}

fn opt_kib(v: Option<i64>) -> String {
    v.map(kib).unwrap_or_else(|| "?".into())
}

fn signed(v: i64) -> String {
    if v > 0 { format!("+{v}") } else { v.to_string() }
}

/// Sorts candidates: highest points first, skipped last, then by pid.
pub fn sort_candidates(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.points.cmp(&a.points).then(a.pid.cmp(&b.pid)));
}

/// Plain findings, most useful first.
pub fn notes(k: &OomKill, page_kib: i64, host_available_kb: Option<i64>) -> Vec<String> {
    let mut n = Vec::new();
    let v = &k.victim;
    let size = |c: &Candidate| c.rss_kb + c.swap_kb + c.pgtables_kb;
    let victim_cand = k.candidates.iter().find(|c| c.victim);
    let largest = k
        .candidates
        .iter()
        .filter(|c| c.points.is_some())
        .max_by_key(|c| (size(c), std::cmp::Reverse(c.pid)));
    if let (Some(vc), Some(big)) = (victim_cand, largest) {
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
    if let Some(vc) = victim_cand {
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
    }
    for c in k.candidates.iter().filter(|c| c.skipped == Some(SKIP_ADJ_MIN)) {
        n.push(format!(
            "oom_score_adj -1000 protected pid {} ({}, {} resident)",
            c.tgid,
            c.comm,
            kib(c.rss_kb)
        ));
    }
    let pending: Vec<&Candidate> =
        k.candidates.iter().filter(|c| c.skipped == Some(SKIP_PENDING)).collect();
    if !pending.is_empty() {
        n.push(format!(
            "an earlier OOM victim was still exiting (pid {}): the kernel normally waits for it \
             instead of killing again",
            pending.iter().map(|c| c.tgid.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    match k.constraint {
        "memcg" => {
            let mut s = format!(
                "constraint memcg: {} hit its limit{}",
                k.domain.memcg.as_deref().unwrap_or("the memcg"),
                k.domain.memcg_limit_kb.map(|l| format!(" of {}", kib(l))).unwrap_or_default()
            );
            if let Some(a) = host_available_kb {
                s += &format!("; the host had {} available", kib(a));
            }
            n.push(s);
        }
        "global" => n.push(format!(
            "constraint global: the whole system ran out of memory{}",
            k.domain.totalpages_kb.map(|t| format!(" ({} of RAM + swap)", kib(t))).unwrap_or_default()
        )),
        "cpuset" | "mempolicy" => n.push(format!(
            "constraint {}: only the allowed nodes' memory counted (domain {})",
            k.constraint,
            opt_kib(k.domain.totalpages_kb)
        )),
        _ => {}
    }
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
        if v.points_source == Some(POINTS_KERNEL) && kp != b.total {
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
            n.push(format!("{} candidate records were lost (ring buffer full)", m.lost));
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

pub const POINTS_KERNEL: &str = "kernel: oom_control.chosen_points";
pub const POINTS_EXACT: &str = "kernel: oom_badness() return value";
pub const POINTS_WALK: &str = "recomputed by the task walk at oom:mark_victim";
pub const POINTS_RECOMPUTED: &str = "recomputed from the victim's counters at mark_victim";

pub const SKIP_ADJ_MIN: &str = "oom_score_adj -1000";
pub const SKIP_OOM_SKIP: &str = "MMF_OOM_SKIP: already reaped or exiting";
pub const SKIP_VFORK: &str = "in vfork";
pub const SKIP_NO_MM: &str = "no memory (exited)";
pub const SKIP_OLD_VICTIM: &str = "earlier OOM victim, memory already reaped";
pub const SKIP_PENDING: &str = "earlier OOM victim still exiting";
pub const SKIP_OTHER: &str = "ineligible (oom_badness returned LONG_MIN)";

/// One report per OOM, readable at 3 a.m.: header, domain and request, victim with its
/// score breakdown, what happened after, the candidate table (top `top` unless all), notes.
pub fn render_text(k: &OomKill, page_kib: i64, top: Option<usize>) -> String {
    let v = &k.victim;
    let t = &k.trigger;
    let cg = |c: &Option<String>| c.clone().unwrap_or_else(|| "(unknown)".into());
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
                Some(POINTS_KERNEL) | Some(POINTS_EXACT) if v.points == Some(b.total) => {
                    "   (the kernel's score)".to_string()
                }
                Some(POINTS_KERNEL) | Some(POINTS_EXACT) => {
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
    // Candidates.
    match &k.candidates_method {
        Some(m) => {
            s += &format!(
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
                s += &format!(
                    "    ... {} more (--all-candidates to list them)\n",
                    k.candidates.len() - shown
                );
            }
            if !m.exact {
                s += "    (approximate: scores recomputed in BPF just after the kernel's own scan; \
                      the JSON candidates_method.detail states the race)\n";
            }
            if m.lost > 0 {
                s += &format!("    ({} candidate records lost: ring buffer full)\n", m.lost);
            }
        }
        None => s += "  candidates: not available on this kernel\n",
    }
    if !k.notes.is_empty() {
        s += "  notes\n";
        for n in &k.notes {
            s += &format!("    - {n}\n");
        }
    }
    s
}
