//! Reading the guest's output: init's markers, libtest's result lines, kernel panics.

use std::time::Duration;

/// Markers of a kernel panic on the console; qemu is killed when one appears.
pub(super) const PANIC_MARKERS: &[&str] = &["Kernel panic", "end Kernel panic"];

/// The console as init reports it: the verdict and every test case's result.
#[derive(Debug, Default)]
pub(super) struct Console {
    /// When `init: started` was seen (relative to qemu's start).
    pub(super) started: Option<Duration>,
    pub(super) verdict: Option<bool>,
    /// Label of the test binary running now (its file name without cargo's hash).
    pub(super) binary: String,
    /// A test whose result line has not arrived yet.
    pub(super) pending: Option<String>,
    /// (test, result) in order; `memtrace doctor` counts as one.
    pub(super) results: Vec<(String, String)>,
    pub(super) panicked: bool,
}

impl Console {
    /// A line of the kernel's console (ttyS0): only a panic matters.
    pub(super) fn kernel_line(&mut self, line: &str) {
        if PANIC_MARKERS.iter().any(|m| line.contains(m)) {
            self.panicked = true;
        }
    }

    /// A line of init's and the tests' channel (ttyS1).
    pub(super) fn feed(&mut self, line: &str, at: Duration) {
        let line = line.trim_end_matches('\r');
        if line.contains("init: started") && self.started.is_none() {
            self.started = Some(at);
        } else if let Some(v) = line.strip_prefix("init: ") {
            self.init_line(v.trim());
        } else if let Some(bin) = line.strip_prefix("==== /tests/") {
            self.binary = binary_label(bin.trim());
        } else if let Some((name, result)) = parse_test_line(line) {
            self.test_line(name, result);
        }
    }

    pub(super) fn init_line(&mut self, v: &str) {
        match v {
            "success" => self.verdict = Some(true),
            "failure" => self.verdict = Some(false),
            _ => {
                if let Some(rc) = v.strip_prefix("doctor exit ") {
                    let ok = if rc.trim() == "0" {
                        "ok".to_string()
                    } else {
                        format!("FAILED (exit {rc})")
                    };
                    self.results.push(("memtrace doctor".into(), ok));
                } else if v.starts_with("/tests/") {
                    if let Some(name) = self.pending.take() {
                        let rc = v.rsplit(' ').next().unwrap_or("?");
                        self.results
                            .push((name, format!("no result (binary exit {rc})")));
                    }
                }
            }
        }
    }

    pub(super) fn test_line(&mut self, name: &str, result: &str) {
        let full = if self.binary.is_empty() {
            name.to_string()
        } else {
            format!("{}::{name}", self.binary)
        };
        if result.is_empty() {
            self.pending = Some(full);
        } else {
            self.pending = None;
            self.results.push((full, result.to_string()));
        }
    }

    /// Test cases that ran (doctor excluded), whatever their result.
    pub(super) fn executed(&self) -> usize {
        self.results
            .iter()
            .filter(|(n, r)| n != "memtrace doctor" && !is_not_run(r))
            .count()
    }

    /// Test cases listed as skipped (host only) in this guest.
    pub(super) fn skipped(&self) -> usize {
        self.results.iter().filter(|(_, r)| r == "skipped").count()
    }
}

/// A result that is neither a pass nor a failure: ignored by libtest, or skipped by init
/// (host-only cases).
pub(super) fn is_not_run(result: &str) -> bool {
    result.starts_with("ignored") || result == "skipped"
}

/// `test NAME ... RESULT` from libtest; RESULT is empty when the line is still open.
pub(super) fn parse_test_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ...")?;
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    let result = result.trim();
    let word = result
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .unwrap_or("");
    Some((name, word))
}

/// `vm_smoke-0123456789abcdef` -> `vm_smoke`.
pub(super) fn binary_label(file: &str) -> String {
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => file.to_string(),
    }
}

/// The line without terminal escape sequences (the firmware clears the screen) and other
/// control characters, so it neither garbles the terminal nor hides init's markers.
pub(super) fn strip_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                // CSI: parameters and intermediates up to a final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            '\u{1b}' => {
                chars.next();
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{qemu::End, KernelRun, Series};

    #[test]
    fn parses_libtest_lines() {
        assert_eq!(
            parse_test_line("test doctor_ok ... ok"),
            Some(("doctor_ok", "ok"))
        );
        assert_eq!(
            parse_test_line("test a::b ... FAILED"),
            Some(("a::b", "FAILED"))
        );
        assert_eq!(
            parse_test_line("test x ... ignored, needs a VM"),
            Some(("x", "ignored"))
        );
        assert_eq!(parse_test_line("test slow ... "), Some(("slow", "")));
        assert_eq!(parse_test_line("test result: ok. 1 passed; 0 failed"), None);
        assert_eq!(
            parse_test_line("test host_only::pc ... skipped (host only)"),
            Some(("host_only::pc", "skipped"))
        );
        assert!(is_not_run("skipped") && is_not_run("ignored") && !is_not_run("FAILED"));
        assert_eq!(parse_test_line("running 1 test"), None);
        assert_eq!(binary_label("vm_smoke-0123456789abcdef"), "vm_smoke");
        assert_eq!(binary_label("mt-stress"), "mt-stress");
    }

    #[test]
    fn strips_terminal_escapes() {
        assert_eq!(
            strip_controls("\u{1b}c\u{1b}[?7l\u{1b}[2Jinit: started"),
            "init: started"
        );
        assert_eq!(
            strip_controls("\u{1b}[0mSeaBIOS (version 1.16)\r"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(strip_controls("a\tb"), "a\tb");
        assert_eq!(strip_controls("dangling \u{1b}["), "dangling ");
    }

    fn console(lines: &[&str]) -> Console {
        let mut c = Console::default();
        for l in lines {
            c.feed(l, Duration::from_secs(1));
        }
        c
    }

    #[test]
    fn console_verdicts() {
        let ok = console(&[
            "init: started (kernel uptime 1.52 s)",
            "init: doctor exit 0",
            "==== /tests/vm_smoke-0123456789abcdef",
            "test doctor_json_ok ... ok\r",
            "init: /tests/vm_smoke-0123456789abcdef exit 0",
            "init: success",
        ]);
        assert_eq!(ok.verdict, Some(true));
        assert_eq!(
            ok.results[1],
            ("vm_smoke::doctor_json_ok".to_string(), "ok".to_string())
        );
        assert_eq!(ok.executed(), 1);

        let crashed = console(&[
            "Booting from ROM..init: started (kernel uptime 4.68 s)",
            "==== /tests/t",
            "test hang ... ",
            "init: /tests/t exit 139",
            "init: failure",
        ]);
        assert_eq!(crashed.verdict, Some(false));
        assert!(crashed.started.is_some());
        assert_eq!(crashed.results[0].1, "no result (binary exit 139)");

        let mut panic = console(&["init: started"]);
        panic.kernel_line("---[ end Kernel panic - not syncing: Out of memory ]---");
        assert!(panic.panicked);
        assert_eq!(panic.verdict, None);

        // A kernel line is never read as a result, and results never as a panic.
        let mut c = console(&["init: started", "test a ... "]);
        c.kernel_line("test b ... ok");
        c.feed("ok", Duration::from_secs(1));
        assert_eq!(c.pending.as_deref(), Some("a"));
        assert!(c.results.is_empty());
        let c = console(&["test x ... ok", "Kernel panic mentioned by a test"]);
        assert!(!c.panicked);
    }

    #[test]
    fn problems() {
        let mut run = KernelRun::error(Series::V6_1, anyhow::anyhow!("no network"));
        assert_eq!(run.problem().as_deref(), Some("no network"));
        run.error = None;
        run.end = Some(End::Exited(Some(0)));
        assert_eq!(
            run.problem().as_deref(),
            Some("qemu exited with 0 before init ran")
        );
        run.console = console(&["init: started", "init: doctor exit 0", "init: success"]);
        assert_eq!(run.problem().as_deref(), Some("no tests ran"));
        run.console = console(&["init: started", "test a ... ok", "init: success"]);
        assert_eq!(run.problem(), None);
        run.end = Some(End::TimedOut);
        assert_eq!(run.problem().as_deref(), Some("timed out"));
    }
}
