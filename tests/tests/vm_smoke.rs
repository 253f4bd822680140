//! Smoke test for the VM harness (`cargo xtask vm-test`): memtrace runs as root on the
//! booted kernel, `doctor --json` says it can trace, and the oom family has a strategy.
//! Also meaningful on the host (`cargo xtask test` sets MEMTRACE_BIN there too).

use std::process::Command;

use serde_json::Value;

fn memtrace_bin() -> String {
    std::env::var("MEMTRACE_BIN").expect("MEMTRACE_BIN must name the memtrace binary")
}

#[test]
fn doctor_json_is_ok_and_oom_has_a_strategy() {
    let out =
        Command::new(memtrace_bin()).args(["doctor", "--json"]).output().expect("running memtrace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("doctor printed no JSON");
    let report: Value = serde_json::from_str(line).expect("doctor's JSON parses");
    assert_eq!(report["ok"], Value::Bool(true), "{report:#}");
    let hooks = report["hooks"].as_array().expect("hooks is an array");
    let oom: Vec<&str> = hooks
        .iter()
        .filter(|h| h["family"] == "oom")
        .filter_map(|h| h["chosen"]["strategy"].as_str())
        .collect();
    assert!(!oom.is_empty(), "no chosen strategy for the oom family: {report:#}");
    println!("kernel {} oom via {oom:?}", report["kernel"]);
}
