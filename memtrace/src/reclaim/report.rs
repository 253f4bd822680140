//! The reclaim family's text view: a fold over its records. Stalls print at once; a
//! window's `reclaim_summary` rows wait for the `reclaim_context` that closes the window,
//! then the window prints: the header with per-kind totals, the context, the per-process
//! and per-cgroup tables (top N), -H bars per kind, notes.

use memtrace_common::reclaim::{KINDS, kind_name};
use serde_json::Value;

use super::{
    args::Options,
    model::{Latency, log2_bars},
    records::{ContextRecord, ReclaimRecord, Stall, Summary, ViewOptions},
};
use crate::engine::sink::{Text, View};

pub struct ReclaimView {
    opts: ViewOptions,
    /// The open window's rows.
    rows: Vec<Summary>,
}

impl ReclaimView {
    pub fn new(o: &Options) -> ReclaimView {
        ReclaimView { opts: view_options(o), rows: Vec::new() }
    }
}

/// The text settings among the family's options (what `reclaim_options` records).
pub fn view_options(o: &Options) -> ViewOptions {
    ViewOptions {
        histogram: o.histogram,
        milliseconds: o.ms,
        top: o.top,
        min_latency_us: o.min_latency.as_nanos() as f64 / 1000.0,
    }
}

impl View for ReclaimView {
    fn record(&mut self, rec: &Value) -> Text {
        match serde_json::from_value::<ReclaimRecord>(rec.clone()) {
            // A recording shows what its session showed.
            Ok(ReclaimRecord::Options(o)) => {
                self.opts = o;
                Text::default()
            }
            Ok(ReclaimRecord::Stall(s)) => Text::out(stall_line(&s, self.opts.milliseconds)),
            Ok(ReclaimRecord::Summary(r)) => {
                self.rows.push(r);
                Text::default()
            }
            Ok(ReclaimRecord::Context(c)) => {
                let rows = std::mem::take(&mut self.rows);
                let rows: Vec<Summary> = rows.into_iter().filter(|r| r.is_final == c.is_final).collect();
                Text::out(window(&rows, &c, &self.opts))
            }
            Err(e) => Text::err(format!("memtrace: unreadable reclaim record ({e}): {rec}\n")),
        }
    }
}

fn fmt_dur(us: f64, ms: bool) -> String {
    if ms { format!("{:.2}", us / 1000.0) } else { format!("{us:.0}") }
}

/// One streamed stall.
pub fn stall_line(r: &Stall, ms: bool) -> String {
    let d = if ms { format!("{:.2} ms", r.duration_us / 1000.0) } else { format!("{:.0} us", r.duration_us) };
    let mut s = format!(
        "{}  STALL {:<10} {:>10}  pid {} ({}) tid {}  memcg {}",
        r.time.get(11..23).unwrap_or(&r.time),
        r.kind,
        d,
        r.pid,
        r.comm,
        r.tid,
        r.cgroup.as_deref().unwrap_or("?"),
    );
    if let (Some(o), Some(g)) = (r.order, &r.gfp_flags) {
        s += &format!("  order {o} {g}");
    }
    if let Some(reason) = &r.reason {
        s += &format!("  reason {reason}");
    }
    if r.nr_reclaimed > 0 {
        s += &format!("  reclaimed {} pages", r.nr_reclaimed);
    }
    s.push('\n');
    s
}

/// The numeric columns shared by the per-process and per-cgroup tables (titles, then one
/// row's values, in the same widths).
fn stat_header(unit: &str) -> String {
    format!(
        "{:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "COUNT",
        format!("TOTAL {unit}"),
        format!("P50 {unit}"),
        format!("P90 {unit}"),
        format!("P99 {unit}"),
        format!("P99.9 {unit}"),
        format!("MAX {unit}"),
        "RECLAIMED",
    )
}

fn stat_cols(r: &Summary, ms: bool) -> String {
    format!(
        "{:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        r.count,
        fmt_dur(r.total_us, ms),
        fmt_dur(r.p50_us, ms),
        fmt_dur(r.p90_us, ms),
        fmt_dur(r.p99_us, ms),
        fmt_dur(r.p999_us, ms),
        fmt_dur(r.max_us, ms),
        r.nr_reclaimed,
    )
}

/// Microseconds of a record back to the agent's nanoseconds (exact below 2^53 ns / 1000).
fn ns(us: f64) -> u64 {
    (us * 1000.0).round() as u64
}

/// Per kind, in kernel-number order: the merged distribution of the per-cgroup rows.
fn by_kind(cgs: &[&Summary]) -> Vec<(String, Latency)> {
    let order = |k: &str| (0..KINDS).position(|i| kind_name(i) == k).unwrap_or(KINDS as usize);
    let mut v: Vec<(String, Latency)> = Vec::new();
    for r in cgs {
        let i = match v.iter().position(|(k, _)| *k == r.kind) {
            Some(i) => i,
            None => {
                v.push((r.kind.clone(), Latency::default()));
                v.len() - 1
            }
        };
        let l = &mut v[i].1;
        l.count += r.count;
        l.total_ns += ns(r.total_us);
        l.max_ns = l.max_ns.max(ns(r.max_us));
        l.nr_reclaimed += r.nr_reclaimed;
        l.add_histogram(r.histogram.as_deref().unwrap_or_default());
    }
    v.sort_by_key(|(k, _)| order(k));
    v
}

/// One window: an interval, or the whole run (`c.is_final`).
fn window(rows: &[Summary], c: &ContextRecord, o: &ViewOptions) -> String {
    let unit = if o.milliseconds { "ms" } else { "us" };
    let order = |a: &&Summary, b: &&Summary| b.total_us.total_cmp(&a.total_us).then(a.kind.cmp(&b.kind));
    let mut procs: Vec<&Summary> = rows.iter().filter(|r| r.pid.is_some() || r.comm.is_some()).collect();
    let mut cgs: Vec<&Summary> = rows.iter().filter(|r| r.pid.is_none() && r.comm.is_none()).collect();
    procs.sort_by(order);
    cgs.sort_by(order);
    let kinds = by_kind(&cgs);
    let n: u64 = cgs.iter().map(|r| r.count).sum();
    let secs = c.interval_s;
    let clock = c.time.get(11..19).unwrap_or("");
    // Per kind: kinds nest (throttle sleeps happen inside reclaim), so no grand total.
    let what: Vec<String> =
        kinds.iter().map(|(k, l)| format!("{k} {} ({:.3} s)", l.count, l.total_ns as f64 / 1e9)).collect();
    let what = if what.is_empty() { "no stalls".to_string() } else { what.join(", ") };
    let mut s = if c.is_final {
        format!("\nreclaim summary over {secs:.1} s: {what}\n")
    } else {
        format!("{clock}  reclaim in the last {secs:.1} s: {what}\n")
    };
    let (ctx, v) = (&c.context, &c.context.vmstat);
    let pct = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:.1}%"));
    s += &format!(
        "  context: allocstall +{}  pgscan direct +{} kswapd +{}  pgsteal direct +{} kswapd +{}  \
         compact_stall +{}  psi some {} full {}  kswapd {} wakes, {:.0} ms awake\n",
        v.allocstall,
        v.pgscan_direct,
        v.pgscan_kswapd,
        v.pgsteal_direct,
        v.pgsteal_kswapd,
        v.compact_stall,
        pct(ctx.psi.some_pct),
        pct(ctx.psi.full_pct),
        ctx.kswapd.wakes,
        ctx.kswapd.awake_ms,
    );
    if !c.throttle.is_empty() {
        let mut th: Vec<String> =
            c.throttle.iter().map(|(k, t)| format!("{k} {} ({:.1} ms)", t.count, t.ms)).collect();
        th.sort();
        s += &format!("  throttled: {}\n", th.join(", "));
    }
    if c.is_final {
        let sc = &ctx.sysctl;
        let o = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
        s += &format!(
            "  sysctl: vm.swappiness {}  vm.min_free_kbytes {}  vm.watermark_scale_factor {}  \
             vm.zone_reclaim_mode {}  vm.overcommit_memory {}  vm.dirty_ratio {}\n",
            o(sc.swappiness),
            o(sc.min_free_kbytes),
            o(sc.watermark_scale_factor),
            o(sc.zone_reclaim_mode),
            o(sc.overcommit_memory),
            o(sc.dirty_ratio),
        );
        for z in &ctx.zones {
            s += &format!(
                "  zone: node {} {:<8} free {} KiB  min {} low {} high {} KiB\n",
                z.node, z.zone, z.free_kb, z.min_kb, z.low_kb, z.high_kb
            );
        }
    }
    if n > 0 {
        s += &tables(&procs, &cgs, o, unit);
        if o.histogram {
            for (k, l) in &kinds {
                s += &log2_bars(l, o.milliseconds, &format!("\n  {k} stalls:"));
            }
        }
    }
    for note in &ctx.notes {
        s += &format!("  note: {note}\n");
    }
    s
}

/// The per-process and per-cgroup tables, top N rows each.
fn tables(procs: &[&Summary], cgs: &[&Summary], o: &ViewOptions, unit: &str) -> String {
    let mut s = format!("  {:<10} {:>7} {:<16} {:<28} {}\n", "KIND", "PID", "COMM", "CGROUP", stat_header(unit));
    for r in procs.iter().take(o.top) {
        s += &format!(
            "  {:<10} {:>7} {:<16} {:<28} {}\n",
            r.kind,
            r.pid.map_or("-".into(), |p| p.to_string()),
            r.comm.as_deref().unwrap_or(""),
            r.cgroup.as_deref().unwrap_or("?"),
            stat_cols(r, o.milliseconds),
        );
    }
    if procs.len() > o.top {
        s += &format!("  ... {} more processes\n", procs.len() - o.top);
    }
    s += &format!("  {:<10} {:<53} {}\n", "BY CGROUP", "", stat_header(unit));
    for r in cgs.iter().take(o.top) {
        s += &format!(
            "  {:<10} {:<53} {}\n",
            r.kind,
            r.cgroup.clone().unwrap_or_else(|| r.cgroup_id.map_or("?".into(), |i| format!("id {i}"))),
            stat_cols(r, o.milliseconds),
        );
    }
    if cgs.len() > o.top {
        s += &format!("  ... {} more cgroups\n", cgs.len() - o.top);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reclaim::records::tests::{context, summary};

    fn feed(v: &mut ReclaimView, r: ReclaimRecord) -> Text {
        v.record(&serde_json::to_value(&r).unwrap())
    }

    #[test]
    fn a_window_prints_when_its_context_arrives() {
        let mut v = ReclaimView::new(&Options::default());
        let mut rows = vec![
            summary("memcg", Some(28048), "/shop", 240, 373125.0),
            summary("memcg", None, "/shop", 240, 373125.0),
            summary("throttle", Some(28048), "/shop", 204, 328000.0),
            summary("throttle", None, "/shop", 204, 328000.0),
        ];
        rows[2].comm = Some("dd".into());
        for r in rows {
            assert_eq!(feed(&mut v, ReclaimRecord::Summary(r)), Text::default(), "rows wait");
        }
        let t = feed(&mut v, ReclaimRecord::Context(context(false)));
        let out = t.out;
        assert!(out.starts_with("01:57:06  reclaim in the last 2.0 s: memcg 240 (0.373 s), throttle 204 (0.328 s)\n"), "{out}");
        assert!(out.contains("  context: allocstall +3  pgscan direct +0"), "{out}");
        assert!(out.contains("psi some 6.7% full 3.6%  kswapd 2 wakes, 2 ms awake\n"), "{out}");
        assert!(out.contains("  throttled: writeback 205 (348.0 ms)\n"), "{out}");
        assert!(out.contains("P99.9 us"), "{out}");
        assert!(out.contains("  memcg        28048 dd               /shop                            240     373125"), "{out}");
        assert!(out.contains("  memcg      /shop                                                     240     373125"), "{out}");
        assert!(out.ends_with("  note: no swap\n"), "{out}");
        assert!(!out.contains("stalls:"), "no bars without -H: {out}");
        assert!(!out.contains("sysctl"), "{out}");
        // -H and -m from a recorded reclaim_options; the final window has sysctls.
        let o = ViewOptions { histogram: true, milliseconds: true, top: 1, min_latency_us: 0.0 };
        feed(&mut v, ReclaimRecord::Options(o));
        for mut r in [summary("memcg", Some(1), "/a", 5, 500.0), summary("memcg", Some(2), "/a", 5, 400.0), summary("memcg", None, "/a", 10, 900.0)] {
            r.is_final = true;
            r.histogram = r.histogram.map(|_| vec![[81920, 86016, 9], [14155776, 14680064, 1]]);
            feed(&mut v, ReclaimRecord::Summary(r));
        }
        let out = feed(&mut v, ReclaimRecord::Context(context(true))).out;
        assert!(out.starts_with("\nreclaim summary over 2.0 s: memcg 10 (0.001 s)\n"), "{out}");
        assert!(out.contains("  sysctl: vm.swappiness 60  vm.min_free_kbytes ?"), "{out}");
        assert!(out.contains("P99.9 ms") && out.contains("  ... 1 more processes\n"), "{out}");
        assert!(out.contains("\n  memcg stalls:\n                   msecs : count    distribution\n"), "{out}");
        assert!(out.contains("         0 -> 0          : 9        |****************************************|\n"), "{out}");
        assert!(out.contains("         8 -> 15         : 1        |*****                                   |\n"), "{out}");
    }

    #[test]
    fn stalls_print_at_once() {
        let mut v = ReclaimView::new(&Options { ms: true, ..Options::default() });
        let s = Stall {
            time: "2026-11-22T01:56:56.063Z".into(),
            kind: "throttle".into(),
            pid: 28048,
            tid: 28048,
            comm: "dd".into(),
            thread_comm: None,
            cgroup: Some("/shop".into()),
            cgroup_id: Some(1),
            duration_us: 12345.678,
            order: None,
            gfp_flags: None,
            gfp_mask: None,
            nr_reclaimed: 0,
            reason: Some("writeback".into()),
        };
        assert_eq!(
            feed(&mut v, ReclaimRecord::Stall(s)).out,
            "01:56:56.063  STALL throttle     12.35 ms  pid 28048 (dd) tid 28048  memcg /shop  reason writeback\n"
        );
        assert!(v.record(&serde_json::json!({"type": "reclaim_bogus"})).err.contains("unreadable reclaim record"));
    }
}
