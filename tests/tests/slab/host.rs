//! Slab growth on the real kernel: processes stat unique missing paths (one negative dentry
//! each) and memtrace must name them, with the kernel call site, as the dentry growers;
//! drop_caches must show up as frees (per cache, and per allocating caller with --live);
//! the kernel maps stay bounded, whatever the output interval.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use memtrace_tests::{Memtrace, Stress, Value, run_memtrace, stats_of};

use crate::common::{
    LIVE_DENTRY, TempDir, cache_line, dentry_rows, finish, go, growth, i, kmem_strategies,
    slabinfo_objsize, stat_storm, storm, summary, u,
};

/// Sum of a field over the interval lines of a cache.
fn interval_sum(lines: &[Value], cache: &str, field: &str) -> i64 {
    lines
        .iter()
        .filter(|v| v["type"] == "slab_cache" && v["scope"] == "interval" && v["cache"] == cache)
        .map(|v| i(&v[field]))
        .sum()
}

const STORM: u64 = 120_000;
/// How long an interval line may take to show a storm's growth or frees (a loaded machine,
/// TCG in the VM).
const GROWTH_WAIT: Duration = Duration::from_secs(120);
const QUIET: u64 = 6_000;

/// A process stats 120k unique missing paths, a quieter one 6k: the first is the top dentry
/// allocator, with >= 90% of its allocations counted, at a d_alloc call site, in the
/// directory it stat-ed; the second ranks below it.
#[test]
fn stat_storm_is_the_top_dentry_allocator() {
    let d = TempDir::new("top");
    let gofile = d.go_file();
    let mt = Memtrace::start(&["slab", "--json", "--cache", "dentry", "1", "--top", "50"]);
    let (alloc, free) = kmem_strategies(&mt);
    assert_eq!((alloc.as_str(), free.as_str()), ("tp_btf", "tp_btf"), "6.18 offers tp_btf");
    let mut loud = storm(STORM, &d.sub("loud"), "mt-slab-storm", &gofile);
    let mut quiet = storm(QUIET, &d.sub("quiet"), "mt-slab-quiet", &gofile);
    go(&gofile);
    finish(&mut loud, STORM);
    finish(&mut quiet, QUIET);
    std::thread::sleep(Duration::from_millis(1500));
    let lines = mt.stop();

    let rows = growth(&lines, "total", "dentry");
    assert!(!rows.is_empty(), "no dentry callers");
    let top = rows[0];
    assert_eq!(top["tgid"], loud.pid(), "top dentry allocator: {top}");
    assert_eq!(top["comm"], "mt-slab-storm");
    assert!(top["call_site"].as_str().unwrap().contains("d_alloc"), "{top}");
    assert!(top["cgroup"].as_str().is_some_and(|c| c.starts_with('/')), "{top}");
    let loud_allocs: u64 =
        rows.iter().filter(|r| r["tgid"] == loud.pid()).map(|r| u(&r["allocs"])).sum();
    assert!(loud_allocs >= STORM * 9 / 10, "{loud_allocs} of {STORM} counted");
    assert!(loud_allocs <= STORM + 100, "{loud_allocs}: more than one dentry per stat");
    assert_eq!(
        i(&top["net_bytes"]),
        i(&top["net"]) * i(&cache_line(&lines, "total", "dentry").unwrap()["object_size"])
    );

    let qpos = rows
        .iter()
        .position(|r| r["tgid"] == quiet.pid())
        .unwrap_or_else(|| panic!("quiet process not among the callers: {rows:?}"));
    assert!(qpos > 0, "the quiet process ranks below the storm");
    let q = rows[qpos];
    assert_eq!(q["comm"], "mt-slab-quiet");
    assert!(u(&q["allocs"]) >= QUIET * 9 / 10 && u(&q["allocs"]) < loud_allocs, "{q}");

    let cache = cache_line(&lines, "total", "dentry").expect("dentry total");
    assert!(u(&cache["allocs"]) >= loud_allocs + u(&q["allocs"]));
    assert_eq!(u(&cache["object_size"]), slabinfo_objsize("dentry"));
    // /proc/slabinfo moved with the traced growth.
    let sdelta = i(&cache["slabinfo_delta"]);
    assert!(sdelta >= (STORM as i64) / 2, "slabinfo active objects grew by {sdelta}");

    // Dentry context: the storm's directory, and negative dentries grew.
    let dent = lines
        .iter()
        .find(|v| v["type"] == "slab_dentry" && v["scope"] == "total")
        .expect("slab_dentry total");
    let dirs = dent["dirs"].as_array().unwrap();
    let loud_dir = dirs
        .iter()
        .find(|x| x["dir"] == d.sub("loud").as_str())
        .unwrap_or_else(|| panic!("storm directory not reported: {dent}"));
    assert_eq!(loud_dir["tgid"], loud.pid());
    assert_eq!(loud_dir["comm"], "mt-slab-storm");
    assert!(u(&loud_dir["allocs"]) >= STORM * 9 / 10, "{loud_dir}");
    assert!(dirs.iter().any(|x| x["dir"] == d.sub("quiet").as_str()), "{dent}");
    assert!(i(&dent["negative_growth"]) >= STORM as i64 / 2, "{dent}");

    let s = stats_of(&lines, "slab");
    assert!(u(&s["events"]) >= STORM);
    assert_eq!(s["map_full"], 0);
    assert_eq!(summary(&lines)["caller_rows_full"], 0);
}

/// Without --cache, the default view lists caches by net growth: dentry near the top, with
/// the storm as its top caller; names_cache (one per stat, freed at once) nets ~0 but the
/// storm is its top allocator too.
#[test]
fn default_view_ranks_caches_by_net_growth() {
    let d = TempDir::new("default");
    let mt = Memtrace::start(&["slab", "--json", "1"]);
    let pid = stat_storm(&d, "loud", STORM, "mt-slab-storm");
    std::thread::sleep(Duration::from_millis(1500));
    let lines = mt.stop();
    let caches: Vec<&Value> =
        lines.iter().filter(|v| v["type"] == "slab_cache" && v["scope"] == "total").collect();
    let pos = caches.iter().position(|c| c["cache"] == "dentry").expect("dentry listed");
    assert!(pos < 3, "dentry ranks {pos} by net growth: {:?}", &caches[..pos + 1]);
    for w in caches.windows(2) {
        assert!(i(&w[0]["net"]) >= i(&w[1]["net"]), "sorted by net growth");
    }
    let top = growth(&lines, "total", "dentry")[0];
    assert_eq!(top["tgid"], pid);
    assert!(u(&top["allocs"]) >= STORM * 9 / 10);
    let names = growth(&lines, "total", "names_cache");
    assert_eq!(names[0]["tgid"], pid, "{:?}", names);
    assert!(u(&names[0]["allocs"]) >= STORM * 9 / 10);
    let nc = cache_line(&lines, "total", "names_cache").unwrap();
    assert!(u(&nc["frees"]) >= STORM * 9 / 10, "names are freed at the end of each stat: {nc}");
    // Interval lines add up to the totals.
    assert_eq!(
        interval_sum(&lines, "dentry", "allocs"),
        i(&cache_line(&lines, "total", "dentry").unwrap()["allocs"])
    );
}

/// Dentries the storm left behind are freed by drop_caches: the frees are counted and the
/// cache's net growth drops by at least as much.
#[test]
fn drop_caches_frees_are_counted_and_net_drops() {
    const N: u64 = 60_000;
    let d = TempDir::new("drop");
    let mut mt = Memtrace::start(&["slab", "--json", "--cache", "dentry", "1"]);
    let pid = stat_storm(&d, "loud", N, "mt-slab-drop");
    let exited = memtrace_tests::now_ms();
    // The interval lines that carry the storm's growth, all of it: the storm has exited, and
    // an interval emitted two collections (1 s each) later has drained every allocation.
    mt.collect_until(GROWTH_WAIT, "the storm's dentry growth in the interval lines", |l| {
        interval_sum(l, "dentry", "net") >= (N as i64) * 9 / 10
    });
    // slab_period closes every interval, busy or not (an idle cache prints no slab_cache).
    mt.wait_after(exited + 2000, GROWTH_WAIT, "an interval after the storm's last allocations", |v| {
        v["type"] == "slab_period" && v["scope"] == "interval"
    });
    let before: Vec<Value> = mt.seen.clone();
    let net_before = interval_sum(&before, "dentry", "net");
    let frees_before = interval_sum(&before, "dentry", "frees");
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    mt.collect_until(GROWTH_WAIT, "the dropped dentries' frees in the interval lines", |l| {
        interval_sum(l, "dentry", "frees") - frees_before >= (N as i64) * 9 / 10
    });
    let lines = mt.stop();
    let total = cache_line(&lines, "total", "dentry").unwrap();
    let frees_after = u(&total["frees"]) as i64 - frees_before;
    assert!(frees_after >= (N as i64) * 9 / 10, "{frees_after} frees after drop_caches");
    let net_after = i(&total["net"]);
    assert!(
        net_after <= net_before - (N as i64) * 9 / 10,
        "net {net_before} before the drop, {net_after} after"
    );
    // Without --live, frees are per cache only.
    let row = growth(&lines, "total", "dentry").into_iter().find(|r| r["tgid"] == pid).unwrap();
    assert_eq!(row["live"], false);
    assert_eq!(row["frees"], 0);
}

/// With --live, drop_caches frees count against the caller that allocated: the storm's
/// live (net) count falls to under 10% of what it allocated.
#[test]
fn live_attributes_frees_to_the_allocating_caller() {
    const N: u64 = 60_000;
    let d = TempDir::new("live");
    let mut mt = Memtrace::start(LIVE_DENTRY);
    let pid = stat_storm(&d, "loud", N, "mt-slab-live");
    let caller_sum = move |l: &[Value], field: &str| -> i64 {
        l.iter()
            .filter(|v| v["type"] == "slab_growth" && v["scope"] == "interval" && v["tgid"] == pid)
            .map(|v| i(&v[field]))
            .sum()
    };
    mt.collect_until(GROWTH_WAIT, "the storm's live dentries in the interval lines", |l| {
        caller_sum(l, "net") >= (N as i64) * 9 / 10
    });
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    mt.collect_until(GROWTH_WAIT, "the storm's dentries freed in the interval lines", |l| {
        caller_sum(l, "frees") >= (N as i64) * 9 / 10
    });
    let lines = mt.stop();
    let row = growth(&lines, "total", "dentry")
        .into_iter()
        .find(|r| r["tgid"] == pid)
        .expect("storm row");
    assert_eq!(row["live"], true);
    assert!(u(&row["allocs"]) >= N * 9 / 10, "{row}");
    assert!(u(&row["frees"]) >= N * 9 / 10, "its dentries were freed: {row}");
    assert!(i(&row["net"]) <= (N as i64) / 10, "live count dropped: {row}");
    let s = summary(&lines);
    assert!(u(&s["live"]["hits"]) >= N * 9 / 10, "{s}");
    assert_eq!(s["live"]["evicted"], 0, "{s}");
    assert!(u(&s["live"]["misses"]) > 0, "dentries older than the trace were freed too: {s}");
}

/// Thousands of short-lived processes (one set of caller rows each) against a caller map
/// of 1024 rows: the kernel map stays bounded, rows are pruned by the agent or counted as
/// lost, and the per-cache counts stay complete. With an output interval longer than the
/// run, the agent's collection (every second) still prunes the map.
#[test]
fn high_cardinality_stays_bounded() {
    const PROCS: u64 = 3000;
    const EACH: u64 = 10;
    for interval in ["0.2", "3600"] {
        let mt = Memtrace::start_with_env(
            &["slab", "--json", interval],
            &[("MEMTRACE_SLAB_CALLERS_MAX", "1024")],
        );
        let d = TempDir::new("many");
        let each = EACH.to_string();
        let procs = PROCS.to_string();
        let dir = d.sub("many");
        let mut s = Stress::spawn(&[
            "stat-missing",
            "--count",
            &each,
            "--procs",
            &procs,
            "--dir",
            &dir,
            "--comm",
            "mt-slab-many",
        ]);
        s.wait_line("ready", Duration::from_secs(30));
        let n: u64 = s.wait_line("done", Duration::from_secs(600)).parse().unwrap();
        assert_eq!(n, PROCS * EACH);
        // Two collections after the last process.
        std::thread::sleep(Duration::from_millis(2500));
        let lines = mt.stop();
        let sum = summary(&lines);
        assert_eq!(sum["caller_rows_max"], 1024, "{interval}: {sum}");
        assert!(u(&sum["caller_rows"]) <= 1024, "{interval}: {sum}");
        let (full, pruned) = (u(&sum["caller_rows_full"]), u(&sum["caller_rows_pruned"]));
        assert!(full + pruned > 0, "{PROCS} processes did not press a 1024-row map: {sum}");
        if interval == "3600" {
            assert!(pruned > 0, "no interval came, yet the collections pruned the map: {sum}");
        }
        assert_eq!(stats_of(&lines, "slab")["map_full"], full, "every lost row is counted");
        let dentry = cache_line(&lines, "total", "dentry").unwrap();
        assert!(
            u(&dentry["allocs"]) >= PROCS * EACH * 9 / 10,
            "{interval}: per-cache counts complete: {dentry}"
        );
        assert!(growth(&lines, "total", "dentry").len() <= 5, "--top bounds the output");
    }
}

/// --live with a small map: the oldest objects are evicted, and the evictions are counted.
#[test]
fn live_map_is_bounded_and_counts_evictions() {
    const N: u64 = 20_000;
    let d = TempDir::new("evict");
    let mt = Memtrace::start(&[
        "slab",
        "--json",
        "--cache",
        "dentry",
        "--live",
        "--live-max",
        "1024",
        "1",
    ]);
    stat_storm(&d, "loud", N, "mt-slab-evict");
    std::thread::sleep(Duration::from_millis(1500));
    let lines = mt.stop();
    let live = &summary(&lines)["live"];
    assert_eq!(live["max"], 1024);
    assert!(u(&live["inserts"]) >= N * 9 / 10, "{live}");
    assert!(u(&live["entries"]) <= 1024, "{live}");
    // The storm's negative dentries stay cached, so at most 1,024 of them can still be
    // remembered and nearly all were pushed out of the LRU map.
    assert!(u(&live["evicted"]) >= N / 2, "{live}");
}

/// -p counts only that process (in the kernel): another process's storm is not reported.
#[test]
fn pid_filter_counts_only_that_process() {
    const N: u64 = 20_000;
    let d = TempDir::new("pid");
    let gofile = d.go_file();
    let mut mine = storm(N, &d.sub("mine"), "mt-slab-mine", &gofile);
    let mut other = storm(N, &d.sub("other"), "mt-slab-other", &gofile);
    let pid = mine.pid().to_string();
    let mt = Memtrace::start(&["slab", "--json", "-p", &pid, "1"]);
    go(&gofile);
    finish(&mut mine, N);
    finish(&mut other, N);
    std::thread::sleep(Duration::from_millis(1500));
    let lines = mt.stop();
    let rows: Vec<&Value> =
        lines.iter().filter(|v| v["type"] == "slab_growth" && v["scope"] == "total").collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["tgid"] == mine.pid()), "{rows:?}");
    let n: u64 = dentry_rows(&lines, mine.pid()).iter().map(|r| u(&r["allocs"])).sum();
    assert!(n >= N * 9 / 10);
    let dentry = cache_line(&lines, "total", "dentry").unwrap();
    assert!(u(&dentry["allocs"]) < N * 3 / 2, "the other storm is not counted: {dentry}");
}

/// Bad values exit 2 with a message, never a panic.
#[test]
fn bad_slab_input_is_rejected() {
    for (args, needle) in [
        (&["slab", "--live"][..], "--cache"),
        (&["slab", "--cache", "no-such-cache-xyz"], "no slab cache"),
        (&["slab", "--cache", "dentr"], "did you mean dentry"),
        (&["slab", "--top", "0"], "--top"),
        (&["slab", "0"], "positive"),
        (&["slab", "--interval", "1"], "memtrace slab 5"),
        (&["slab", "-i", "1"], "memtrace slab 5"),
        (&["slab", "--count", "3"], "memtrace slab 5 3"),
        (&["slab", "--cache", "dentry", "--live", "--live-max", "5"], "--live-max"),
        (&["slab", "--cache", "a,b,c,d,e,f,g,h,i"], "--cache"),
    ] {
        let (code, _, err) = run_memtrace(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A name merged into another cache (a /sys/kernel/slab symlink) selects that cache.
#[test]
fn merged_cache_names_resolve_to_their_cache() {
    let info = std::fs::read_to_string("/proc/slabinfo").unwrap();
    let listed: Vec<&str> =
        info.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    let root = Path::new("/sys/kernel/slab");
    let mut by_target: std::collections::HashMap<PathBuf, Vec<String>> = Default::default();
    for e in std::fs::read_dir(root).unwrap().flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            by_target.entry(t).or_default().push(e.file_name().to_string_lossy().into_owned());
        }
    }
    // An alias that slabinfo does not list, merged with one it does.
    let (alias, canonical) = by_target
        .values()
        .find_map(|names| {
            let c = names.iter().find(|n| listed.contains(&n.as_str()))?;
            let a = names.iter().find(|n| !listed.contains(&n.as_str()))?;
            Some((a.clone(), c.clone()))
        })
        .expect("this kernel merges some caches");
    let (code, out, err) = run_memtrace(&["slab", "--json", "--cache", &alias, "--duration", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("merged into cache {canonical}")), "{err}");
    for l in out.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["type"] == "slab_cache" {
            assert_eq!(v["cache"], canonical.as_str());
            assert!(v["aliases"].to_string().contains(&alias), "{v}");
        }
    }
}
