//! The fallback strategies on the host kernel (forced with MEMTRACE_DISABLE): raw and
//! classic tracepoints count the same storm, the classic record without a cache name groups
//! by object size, and directories come from syscall hooks where registers cannot serve.

use std::time::Duration;

use memtrace_tests::{Memtrace, Value, run_memtrace};

use crate::common::{
    TempDir, cache_line, dentry_rows, kmem_strategies, slabinfo_objsize, stat_storm, summary, u,
};

/// Runs a 30k storm under memtrace with MEMTRACE_DISABLE set and
/// returns (lines, storm pid, dir).
fn run_forced(env: &[(&str, &str)], args: &[&str], name: &str) -> (Vec<Value>, u32, String) {
    const N: u64 = 30_000;
    let mt = Memtrace::start_with_env(args, env);
    let d = TempDir::new(name);
    let pid = stat_storm(&d, "loud", N, "mt-slab-forced");
    std::thread::sleep(Duration::from_millis(1500));
    let strategies = kmem_strategies(&mt);
    let mut lines = mt.stop();
    lines.push(
        serde_json::json!({"type": "test_strategies", "alloc": strategies.0, "free": strategies.1}),
    );
    (lines, pid, d.sub("loud"))
}

/// The storm's dentry allocations, and the caches they were counted under.
fn storm_dentry_allocs(lines: &[Value], pid: u32) -> (u64, Vec<String>) {
    let rows = dentry_rows(lines, pid);
    (
        rows.iter().map(|r| u(&r["allocs"])).sum(),
        rows.iter().map(|r| r["cache"].as_str().unwrap().to_string()).collect(),
    )
}

/// Whether this kernel's classic kmem_cache_alloc record carries the cache name (6.18:
/// yes; 6.1/6.12: no, see classic_without_name_groups_by_object_size).
fn classic_alloc_has_name() -> bool {
    // memtrace mounts tracefs when it is missing.
    let (code, _, err) = run_memtrace(&["doctor", "--json"]);
    assert_eq!(code, 0, "{err}");
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].iter().any(|t| {
        std::fs::read_to_string(format!("{t}/events/kmem/kmem_cache_alloc/format"))
            .is_ok_and(|f| f.contains(" name;"))
    })
}

/// The fallbacks count the same storm: raw tracepoints, and the classic tracepoints keyed
/// by the name in the record (where the record has one).
#[test]
fn fallback_strategies_count_the_same() {
    let strategies: &[&str] =
        if classic_alloc_has_name() { &["raw_tp", "tracepoint"] } else { &["raw_tp"] };
    for &strategy in strategies {
        let (lines, pid, _) = run_forced(
            &[("MEMTRACE_DISABLE", if strategy == "raw_tp" { "tp_btf" } else { "tp_btf,raw_tp" })],
            &["slab", "--json", "--cache", "dentry", "1", "--top", "20"],
            strategy,
        );
        let st = lines.last().unwrap();
        assert_eq!((st["alloc"].as_str(), st["free"].as_str()), (Some(strategy), Some(strategy)));
        let (n, caches) = storm_dentry_allocs(&lines, pid);
        assert!(n >= 27_000, "{strategy}: {n} of 30000 counted");
        assert!(caches.iter().all(|c| c == "dentry"), "{strategy}: {caches:?}");
        let total = cache_line(&lines, "total", "dentry").unwrap();
        assert_eq!(u(&total["object_size"]), slabinfo_objsize("dentry"), "{strategy}");
        assert!(
            !lines.iter().any(|v| v["type"] == "slab_cache" && v["cache"] != "dentry"),
            "{strategy}: --cache filters"
        );
    }
}

/// Kernels whose classic kmem_cache_alloc record has no cache name (6.1, 6.12): the
/// allocations are grouped by object size ("size-192"), still with caller and call site.
#[test]
fn classic_without_name_groups_by_object_size() {
    let (lines, pid, _) = run_forced(
        &[("MEMTRACE_DISABLE", "tp_btf,raw_tp,slab_alloc_tp:named")],
        &["slab", "--json", "1", "--top", "20"],
        "noname",
    );
    let st = lines.last().unwrap();
    assert_eq!(st["alloc"], "tracepoint");
    let (n, caches) = storm_dentry_allocs(&lines, pid);
    assert!(n >= 27_000, "{n} of 30000 counted");
    let want = format!("size-{}", slabinfo_objsize("dentry"));
    assert!(caches.iter().all(|c| *c == want), "{caches:?}");
    let s = summary(&lines);
    assert!(s["notes"].to_string().contains("names no cache"), "{s}");
}

/// Directories through syscalls:sys_enter_* hooks (the fallback where the syscall table is
/// unknown) find the storm's directory as well as the register read does.
#[test]
fn syscall_hook_directories_match() {
    let (lines, pid, dir) = run_forced(
        &[("MEMTRACE_DISABLE", "slab_dirs_regs")],
        &["slab", "--json", "--cache", "dentry", "1"],
        "syshooks",
    );
    let ready = lines.iter().find(|v| v["type"] == "ready").unwrap();
    assert!(ready.to_string().contains("syscalls:sys_enter_newfstatat"), "{ready}");
    let dent = lines.iter().find(|v| v["type"] == "slab_dentry" && v["scope"] == "total").unwrap();
    let row = dent["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["dir"] == dir.as_str())
        .unwrap_or_else(|| panic!("{dent}"));
    assert_eq!(row["tgid"], pid);
    assert!(u(&row["allocs"]) >= 27_000, "{row}");
}
