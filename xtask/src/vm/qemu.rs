//! Booting a kernel in qemu (TCG) and watching it: the kernel's console on ttyS0 (qemu's
//! stdout, watched for panics), init's and the tests' output on ttyS1 (a file qemu writes,
//! followed as it grows); killed on timeout or panic.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    console::{strip_controls, Console},
    kernels::Kernel,
    KernelRun, Options, Series, POWEROFF_GRACE,
};

// ---------------------------------------------------------------------------------------
// Booting and watching the console

/// How qemu ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    Exited(Option<i32>),
    TimedOut,
    Panicked,
}

/// A line from qemu's stdout (the kernel's console), its stderr, or the results port.
pub(super) enum Line {
    Out(String),
    Err(String),
    Results(String),
}

pub(super) fn boot(
    kernel: &Kernel,
    initrd: &Path,
    opts: &Options,
    logs: &Path,
) -> Result<KernelRun> {
    let series = kernel.series;
    let log_path = logs.join(format!("{series}.log"));
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!(
        "== vm-test: booting {} {} ({})",
        kernel.package,
        kernel.version,
        kernel.vmlinuz.display()
    );
    let results = logs.join(format!("{series}.results"));
    let _ = fs::remove_file(&results);
    let start = Instant::now();
    let mut child = qemu(kernel, initrd, opts.memory, &results)?;
    let rx = stream_lines(&mut child, results)?;
    let (console, end) = watch(
        &rx,
        &mut child,
        series,
        &mut log,
        start,
        Duration::from_secs(opts.timeout),
    );
    let total = start.elapsed();
    let run = KernelRun {
        series,
        kernel: format!("{} {}", kernel.package, kernel.version),
        boot: console.started,
        console,
        end: Some(end),
        error: None,
        total,
        log: Some(log_path),
    };
    eprintln!(
        "vm-test: [{series}] {} (userspace after {}, {:.1} s in all)",
        run.problem().unwrap_or_else(|| "success".into()),
        run.boot
            .map_or("-".into(), |b| format!("{:.1} s", b.as_secs_f64())),
        total.as_secs_f64()
    );
    Ok(run)
}

/// qemu with the kernel's console on stdout (ttyS0) and a second serial port (ttyS1) that
/// writes into `results`.
pub(super) fn qemu(kernel: &Kernel, initrd: &Path, memory: u32, results: &Path) -> Result<Child> {
    let path = results.to_str().context("results path is not UTF-8")?;
    Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            &format!("{memory}M"),
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-chardev", &format!("file,id=results,path={path}")])
        .args(["-device", "isa-serial,chardev=results,index=1"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning qemu-system-x86_64 (cargo xtask setup installs qemu-system-x86)")
}

/// Reader threads for qemu's stdout and stderr, and a follower of the results file; the
/// channel closes when all three end (the follower ends after qemu closed its stdout, once
/// it has read the file to its end).
pub(super) fn stream_lines(child: &mut Child, results: PathBuf) -> Result<Receiver<Line>> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().context("qemu stdout")?;
    let err = child.stderr.take().context("qemu stderr")?;
    let (tx2, tx3) = (tx.clone(), tx.clone());
    let qemu_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = qemu_done.clone();
    std::thread::spawn(move || {
        read_lines(out, |l| tx.send(Line::Out(l)).is_ok());
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    std::thread::spawn(move || read_lines(err, |l| tx2.send(Line::Err(l)).is_ok()));
    std::thread::spawn(move || {
        let ended = || qemu_done.load(std::sync::atomic::Ordering::SeqCst);
        follow(&results, ended, |l| tx3.send(Line::Results(l)).is_ok());
    });
    Ok(rx)
}

/// Reads the lines of `path` as another process appends them, until `ended()` holds and the
/// file is read to its end (waiting for the file to appear first). A last line without a
/// newline is passed on at the end.
pub(super) fn follow(path: &Path, ended: impl Fn() -> bool, mut f: impl FnMut(String) -> bool) {
    let file = loop {
        match fs::File::open(path) {
            Ok(file) => break file,
            Err(_) if ended() => return,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut r = BufReader::new(file);
    let mut partial = Vec::new();
    loop {
        // Checked before the read: after qemu ended, one more read reaches the true end.
        let last = ended();
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) if last => break,
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => {
                partial.extend_from_slice(&buf);
                if partial.ends_with(b"\n") {
                    let line = String::from_utf8_lossy(&partial)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    partial.clear();
                    if !f(line) {
                        return;
                    }
                }
            }
        }
    }
    if !partial.is_empty() {
        f(String::from_utf8_lossy(&partial)
            .trim_end_matches('\r')
            .to_string());
    }
}

/// Calls `f` per line (lossy UTF-8, without the line end) until EOF or `f` returns false.
pub(super) fn read_lines(r: impl Read, mut f: impl FnMut(String) -> bool) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if !f(line) {
                    return;
                }
            }
        }
    }
}

/// Streams the console to the terminal and the log until qemu exits, killing it on a
/// timeout, a kernel panic, or when it does not power off after init's verdict.
pub(super) fn watch(
    rx: &Receiver<Line>,
    child: &mut Child,
    series: Series,
    log: &mut fs::File,
    start: Instant,
    timeout: Duration,
) -> (Console, End) {
    let mut console = Console::default();
    let mut deadline = start + timeout;
    let mut killed: Option<End> = None;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Line::Out(l)) => {
                let text = strip_controls(&l);
                emit(series, log, &format!("kernel: {text}"));
                console.kernel_line(&text);
                if console.panicked && killed.is_none() {
                    emit(series, log, "vm-test: kernel panic, killing qemu");
                    killed = Some(End::Panicked);
                    kill(child, &mut deadline);
                }
            }
            Ok(Line::Results(l)) => {
                let text = strip_controls(&l);
                emit(series, log, &text);
                let had_verdict = console.verdict.is_some();
                console.feed(&text, start.elapsed());
                if console.verdict.is_some() && !had_verdict {
                    deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
                }
            }
            Ok(Line::Err(l)) => emit(series, log, &format!("qemu: {}", strip_controls(&l))),
            Err(RecvTimeoutError::Timeout) if killed.is_none() => {
                let (why, end) = match console.verdict {
                    None => (
                        format!("timed out after {} s", timeout.as_secs()),
                        End::TimedOut,
                    ),
                    Some(_) => ("qemu did not power off".to_string(), End::Exited(None)),
                };
                emit(series, log, &format!("vm-test: {why}, killing qemu"));
                killed = Some(end);
                kill(child, &mut deadline);
            }
            Err(_) => break,
        }
    }
    let status = child.wait().ok();
    let end = killed.unwrap_or(End::Exited(status.and_then(|s: ExitStatus| s.code())));
    (console, end)
}

/// A console line to the terminal (prefixed with the series) and to the log.
pub(super) fn emit(series: Series, log: &mut fs::File, text: &str) {
    println!("[{series}] {text}");
    let _ = writeln!(log, "{text}");
}

/// Kills qemu and leaves a few seconds to drain what it wrote.
pub(super) fn kill(child: &mut Child, deadline: &mut Instant) {
    let _ = child.kill();
    *deadline = Instant::now() + Duration::from_secs(5);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_growing_file_to_its_end() {
        let dir = std::env::temp_dir().join(format!("xtask-follow-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results");
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, ended) = (path.clone(), ended.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(120));
                let mut f = fs::File::create(&path).unwrap();
                f.write_all(b"init: started\r\ntest a ..").unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(120));
                f.write_all(b". ok\ninit: success\nno newline").unwrap();
                ended.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let mut lines = Vec::new();
        follow(
            &path,
            || ended.load(std::sync::atomic::Ordering::SeqCst),
            |l| {
                lines.push(l);
                true
            },
        );
        writer.join().unwrap();
        assert_eq!(
            lines,
            [
                "init: started",
                "test a ... ok",
                "init: success",
                "no newline"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
