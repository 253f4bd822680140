//! VM only (cargo xtask vm-test): on Debian 6.1 and 6.12, which have kprobes and fentry, the
//! exact strategies are chosen and give the same answers as the host's fallback: the
//! issue's 64 MiB tmpfs writer, attributed after it exits, freed on delete.

use memtrace_tests::{require_vm, run_memtrace};

use super::scenario::{is, strategy, tmpfs_scenario};

const EXACT: &[&str] = &["fexit", "fentry", "kprobe", "kretprobe"];

/// The default choice: fexit on shmem_add_to_page_cache (fentry family), as doctor says.
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn vm_best_strategy_is_fentry_family_and_exact() {
    require_vm();
    let (code, out, err) = run_memtrace(&["doctor", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doctor: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let hook = doctor["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == "shmem:alloc")
        .unwrap_or_else(|| panic!("no shmem:alloc in doctor: {doctor}"));
    let chosen = hook["chosen"]["strategy"].as_str().unwrap_or("none");
    assert!(EXACT.contains(&chosen), "doctor chose {chosen} for shmem:alloc: {hook}");

    let lines = tmpfs_scenario("vm-fexit", &[], &["exact"]);
    let s = strategy(&lines[0], "shmem:alloc").unwrap();
    assert!(EXACT.contains(&s), "ready: {}", lines[0]);
    assert_eq!(s, chosen, "doctor and the run agree");
    // The free hook has the folio (and so the PG_lru and swap-backed tests) on 6.1 and 6.12.
    assert_eq!(strategy(&lines[0], "shmem:free"), Some("tp_btf"), "{}", lines[0]);
    assert!(lines.iter().any(|v| is(v, "shmem_writer") && v["source"] == "alloc_hook"));
}

/// With fexit/fentry disabled, the kprobe on shmem_add_to_page_cache: same answers.
#[test]
#[ignore = "VM only: cargo xtask vm-test"]
fn vm_kprobe_strategy_gives_the_same_answers() {
    require_vm();
    let lines = tmpfs_scenario("vm-kprobe", &[("MEMTRACE_DISABLE", "fexit,fentry")], &["exact"]);
    assert_eq!(strategy(&lines[0], "shmem:alloc"), Some("kprobe"), "{}", lines[0]);
}
