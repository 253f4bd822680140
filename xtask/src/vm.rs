//! `cargo xtask vm-test`: boots Debian's cloud kernels (the 6.1 and 6.12 series) in qemu
//! and runs memtrace's integration tests inside them as root, where global OOM and global
//! reclaim are safe to cause.
//!
//! - Kernels: the versioned package behind `linux-image-cloud-amd64` of the series' Debian
//!   release, resolved and downloaded by apt-get under a private configuration (its own
//!   sources, lists and cache; the host's apt state is never touched), unpacked with
//!   `dpkg-deb -x`. Cached in target/vm-cache: a second run uses no network unless
//!   `--refresh-kernels` asks for it.
//! - Guest binaries: static (musl) memtrace with its embedded BPF object, mt-stress, and
//!   every test executable of memtrace-tests (from cargo's `--message-format=json`).
//! - Initramfs: busybox-static with its applet links, the binaries, and an /init that
//!   mounts what memtrace needs, runs `memtrace doctor` and every test binary with
//!   `--include-ignored --test-threads=1`, prints `init: success|failure`, powers off.
//! - Boot: qemu with TCG (KVM guests hang on this machine kind). Two serial ports: the
//!   kernel's console on ttyS0 (qemu's stdout, watched for panics), and init's and the
//!   tests' output on ttyS1 (a file qemu writes, followed as it grows), so no kernel message
//!   can land inside a test's result line. Both stream to the terminal and to
//!   target/vm-logs/<series>.log; qemu is killed on timeout or kernel panic.
//! - Verdict: every kernel runs before anything fails; a summary table lists each test
//!   case per kernel, and the command fails if a kernel failed, timed out, panicked or ran
//!   no tests.

use std::{
    fmt, fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::util::{exec, output, workspace_root};

const MUSL: &str = "x86_64-unknown-linux-musl";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const META_PACKAGE: &str = "linux-image-cloud-amd64";
const BUSYBOX: &str = "/bin/busybox";
/// Markers of a kernel panic on the console; qemu is killed when one appears.
const PANIC_MARKERS: &[&str] = &["Kernel panic", "end Kernel panic"];
/// How long qemu may take to power off after init printed its verdict.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

#[derive(Args, Debug, PartialEq, Eq)]
pub struct Options {
    /// Kernel series to boot (repeat or separate with commas). Default: all of them.
    #[arg(
        long = "kernel",
        value_name = "SERIES",
        value_enum,
        num_args = 1..,
        value_delimiter = ','
    )]
    pub kernels: Vec<Series>,
    /// Seconds one kernel may run (boot, tests, power off) before qemu is killed.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: u32,
    /// Ask apt for the current kernel packages even when a kernel is cached.
    #[arg(long)]
    pub refresh_kernels: bool,
    /// Where kernels and private apt state are kept. Default: target/vm-cache.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl Default for Options {
    /// The same as `cargo xtask vm-test` with no arguments.
    fn default() -> Self {
        Options {
            kernels: Vec::new(),
            timeout: 900,
            memory: 1024,
            refresh_kernels: false,
            cache_dir: None,
        }
    }
}

impl Options {
    /// The selected series, each once, in the order given; all of them by default.
    fn series(&self) -> Vec<Series> {
        let mut v: Vec<Series> = Vec::new();
        for s in if self.kernels.is_empty() { &Series::ALL[..] } else { &self.kernels } {
            if !v.contains(s) {
                v.push(*s);
            }
        }
        v
    }
}

/// A kernel series and the Debian release whose cloud kernel meta package points at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    /// bookworm (+ updates, security)
    #[value(name = "6.1")]
    V6_1,
    /// trixie (+ updates, security)
    #[value(name = "6.12")]
    V6_12,
}

impl Series {
    const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    fn release(self) -> &'static str {
        match self {
            Series::V6_1 => "bookworm",
            Series::V6_12 => "trixie",
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub fn run(opts: Options) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let target = root.join("target");
    let cache = opts.cache_dir.clone().unwrap_or_else(|| target.join("vm-cache"));
    let series = opts.series();

    eprintln!("== vm-test: building static guest binaries ({MUSL})");
    let guest = build_guest(&root)?;
    let initrd = initramfs(&target.join("vm"), &guest)?;
    let logs = target.join("vm-logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let mut runs = Vec::new();
    for s in series {
        let run = kernel(s, &cache, opts.refresh_kernels)
            .and_then(|k| boot(&k, &initrd, &opts, &logs))
            .unwrap_or_else(|e| KernelRun::error(s, e));
        runs.push(run);
    }
    print_summary(&runs);
    eprintln!("vm-test: {:.1} s in all", started.elapsed().as_secs_f64());
    // A plain closing count over every kernel (a test without a result line counts as
    // failed), so CI's reader sees how many guest tests ran.
    let results = runs.iter().flat_map(|r| &r.console.results);
    let passed = results.clone().filter(|(_, res)| res == "ok").count();
    let failed = results.filter(|(_, res)| res != "ok" && !res.starts_with("ignored")).count()
        + runs.iter().filter(|r| r.console.pending.is_some()).count();
    println!("vm-test: {passed} passed, {failed} failed");
    let failed: Vec<&str> =
        runs.iter().filter(|r| r.problem().is_some()).map(|r| r.series.name()).collect();
    if !failed.is_empty() {
        bail!("vm-test failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Kernels

/// A kernel image ready to boot.
#[derive(Clone, Debug)]
struct Kernel {
    series: Series,
    package: String,
    version: String,
    vmlinuz: PathBuf,
}

/// The series' kernel: from the cache, or resolved and downloaded through apt.
fn kernel(series: Series, cache: &Path, refresh: bool) -> Result<Kernel> {
    let dir = cache.join(series.name());
    let cached = read_record(series, &dir);
    if let (Some(k), false) = (&cached, refresh) {
        return Ok(k.clone());
    }
    match fetch_kernel(series, &dir, cached.as_ref()) {
        Ok(k) => Ok(k),
        Err(e) => match cached {
            Some(k) => {
                eprintln!(
                    "vm-test: [{series}] cannot refresh the kernel ({e:#}); using the cached {}",
                    k.package
                );
                Ok(k)
            }
            None => Err(e),
        },
    }
}

/// The cached kernel record (kernel.json next to the image), if complete.
fn read_record(series: Series, dir: &Path) -> Option<Kernel> {
    let v: Value = serde_json::from_str(&fs::read_to_string(dir.join("kernel.json")).ok()?).ok()?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let vmlinuz = dir.join(field("vmlinuz")?);
    vmlinuz.is_file().then_some(Kernel {
        series,
        package: field("package")?,
        version: field("version")?,
        vmlinuz,
    })
}

fn write_record(dir: &Path, k: &Kernel) -> Result<()> {
    let file = k.vmlinuz.file_name().and_then(|f| f.to_str()).context("kernel image name")?;
    let v = serde_json::json!({ "package": k.package, "version": k.version, "vmlinuz": file });
    fs::write(dir.join("kernel.json"), format!("{v:#}\n")).context("writing kernel.json")
}

/// Resolves the current versioned package and downloads it unless it is the cached one.
fn fetch_kernel(series: Series, dir: &Path, cached: Option<&Kernel>) -> Result<Kernel> {
    let apt = Apt::new(series, &dir.join("apt"))?;
    eprintln!("vm-test: [{series}] asking apt for {META_PACKAGE} in {}", series.release());
    apt.update()?;
    let package = parse_depends(&apt.output(&["apt-cache", "depends", META_PACKAGE])?)
        .with_context(|| {
            format!("{META_PACKAGE} in {} depends on no versioned kernel", series.release())
        })?;
    let version =
        parse_version(&apt.output(&["apt-cache", "show", "--no-all-versions", &package])?)
            .with_context(|| format!("apt-cache show {package} printed no Version"))?;
    if let Some(k) = cached.filter(|k| k.package == package && k.version == version) {
        return Ok(Kernel { series, package, version, vmlinuz: k.vmlinuz.clone() });
    }
    eprintln!("vm-test: [{series}] downloading {package} {version}");
    let vmlinuz = download_image(&apt, &package, dir)?;
    if let Some(old) = cached.filter(|k| k.vmlinuz != vmlinuz) {
        let _ = fs::remove_file(&old.vmlinuz);
    }
    let k = Kernel { series, package, version, vmlinuz };
    write_record(dir, &k)?;
    Ok(k)
}

/// `apt-get download`s the package, unpacks it and keeps boot/vmlinuz-* (and its config).
fn download_image(apt: &Apt, package: &str, dir: &Path) -> Result<PathBuf> {
    let work = dir.join("download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    apt.exec_in(&work, &["apt-get", "download", "-q", package])?;
    let deb =
        find_file(&work, |n| n.ends_with(".deb"))?.context("apt-get download left no .deb")?;
    let unpacked = work.join("root");
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let image = find_file(&boot, |n| n.starts_with("vmlinuz-"))?
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    let name = image.file_name().context("image name")?.to_owned();
    let dest = dir.join(&name);
    fs::copy(&image, &dest).with_context(|| format!("copying {}", image.display()))?;
    if let Some(config) = find_file(&boot, |n| n.starts_with("config-"))? {
        let _ = fs::copy(&config, dir.join(config.file_name().context("config name")?));
    }
    let _ = fs::remove_dir_all(&work);
    Ok(dest)
}

fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Option<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_str().is_some_and(&pred))
        .map(|e| e.path()))
}

/// The versioned kernel package in `apt-cache depends <meta>` output.
fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-") && *p != META_PACKAGE)
        .map(str::to_string)
}

/// The Version field of `apt-cache show --no-all-versions` output.
fn parse_version(out: &str) -> Option<String> {
    out.lines().find_map(|l| l.strip_prefix("Version:")).map(|v| v.trim().to_string())
}

/// apt-get and apt-cache with a private configuration (APT_CONFIG): own sources for the
/// series' release, lists, cache and an empty dpkg status. The host's apt.conf.d, sources
/// and preferences are not read, and nothing under /etc/apt or /var/lib/apt is written.
struct Apt {
    config: PathBuf,
}

impl Apt {
    fn new(series: Series, dir: &Path) -> Result<Apt> {
        for d in [
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(dir.join(d))
                .with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        fs::write(dir.join("etc/sources.list"), sources(series.release()))?;
        let status = dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let config = dir.join("apt.conf");
        fs::write(&config, apt_conf(dir))?;
        Ok(Apt { config })
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    fn update(&self) -> Result<()> {
        exec(self.command(&["apt-get", "update", "-q"]).stdout(Stdio::null()))
    }

    fn output(&self, argv: &[&str]) -> Result<String> {
        output(&mut self.command(argv))
    }

    fn exec_in(&self, dir: &Path, argv: &[&str]) -> Result<()> {
        exec(self.command(argv).current_dir(dir))
    }
}

fn sources(release: &str) -> String {
    let opts = format!("[arch=amd64 signed-by={KEYRING}]");
    format!(
        "deb {opts} {MIRROR} {release} main\n\
         deb {opts} {MIRROR} {release}-updates main\n\
         deb {opts} {SECURITY_MIRROR} {release}-security main\n"
    )
}

fn apt_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "// Private apt configuration of `cargo xtask vm-test`.\n\
         Dir::Etc \"{d}/etc\";\n\
         Dir::Etc::main \"/dev/null\";\n\
         Dir::Etc::parts \"apt.conf.d\";\n\
         Dir::Etc::sourcelist \"sources.list\";\n\
         Dir::Etc::sourceparts \"sources.list.d\";\n\
         Dir::Etc::preferences \"preferences\";\n\
         Dir::Etc::preferencesparts \"preferences.d\";\n\
         Dir::State \"{d}/state\";\n\
         Dir::State::status \"{d}/state/status\";\n\
         Dir::Cache \"{d}/cache\";\n\
         Dir::Cache::pkgcache \"\";\n\
         Dir::Cache::srcpkgcache \"\";\n\
         APT::Architectures {{ \"amd64\"; }};\n\
         APT::Sandbox::User \"root\";\n\
         Acquire::Languages \"none\";\n\
         Acquire::GzipIndexes \"true\";\n"
    )
}

// ---------------------------------------------------------------------------------------
// Guest binaries and the initramfs

/// Static executables for the guest.
struct Guest {
    memtrace: PathBuf,
    mt_stress: PathBuf,
    tests: Vec<PathBuf>,
}

/// An executable from cargo's compiler-artifact messages.
#[derive(Debug, PartialEq, Eq)]
struct Artifact {
    name: String,
    test: bool,
    executable: PathBuf,
}

fn build_guest(root: &Path) -> Result<Guest> {
    let mut build = Command::new("cargo");
    build.current_dir(root).args(["build", "--release", "--target", MUSL]).args([
        "--package",
        "memtrace",
        "--bin",
        "memtrace",
        "--package",
        "memtrace-tests",
        "--bin",
        "mt-stress",
    ]);
    let bins = cargo_artifacts(&mut build)?;
    let bin = |name: &str| {
        bins.iter()
            .find(|a| a.name == name && !a.test)
            .map(|a| a.executable.clone())
            .with_context(|| format!("cargo built no `{name}` executable"))
    };
    let (memtrace, mt_stress) = (bin("memtrace")?, bin("mt-stress")?);
    let mut tests_build = Command::new("cargo");
    tests_build.current_dir(root).args([
        "test",
        "--package",
        "memtrace-tests",
        "--target",
        MUSL,
        "--no-run",
    ]);
    let mut tests: Vec<PathBuf> = cargo_artifacts(&mut tests_build)?
        .into_iter()
        .filter(|a| a.test)
        .map(|a| a.executable)
        .collect();
    tests.sort();
    tests.dedup();
    Ok(Guest { memtrace, mt_stress, tests })
}

/// Runs a cargo build with JSON messages (diagnostics still rendered on stderr) and
/// returns the executables it produced.
fn cargo_artifacts(cmd: &mut Command) -> Result<Vec<Artifact>> {
    cmd.arg("--message-format=json-render-diagnostics").stdout(Stdio::piped());
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_artifacts(stdout: &str) -> Vec<Artifact> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter_map(|m| {
            Some(Artifact {
                name: m.pointer("/target/name")?.as_str()?.to_string(),
                test: m.pointer("/profile/test")?.as_bool()?,
                executable: PathBuf::from(m.get("executable")?.as_str()?),
            })
        })
        .collect()
}

/// Stages and packs the initramfs; returns the .cpio.gz.
fn initramfs(work: &Path, guest: &Guest) -> Result<PathBuf> {
    let staging = work.join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "tests"] {
        fs::create_dir_all(staging.join(d))?;
    }
    stage_busybox(&staging)?;
    copy_executable(&guest.memtrace, &staging.join("bin/memtrace"))?;
    copy_executable(&guest.mt_stress, &staging.join("bin/mt-stress"))?;
    for t in &guest.tests {
        let name = t.file_name().context("test binary name")?;
        copy_executable(t, &staging.join("tests").join(name))?;
    }
    fs::write(staging.join("init"), INIT)?;
    fs::set_permissions(staging.join("init"), fs::Permissions::from_mode(0o755))?;
    let out = work.join("initramfs.cpio.gz");
    pack(&staging, &out)?;
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "vm-test: initramfs {} ({:.1} MiB, {} test binaries)",
        out.display(),
        size as f64 / 1048576.0,
        guest.tests.len()
    );
    Ok(out)
}

/// busybox-static at /bin/busybox with a link per applet at its usual path.
fn stage_busybox(staging: &Path) -> Result<()> {
    copy_executable(Path::new(BUSYBOX), &staging.join("bin/busybox"))
        .context("busybox-static is needed (cargo xtask setup installs it)")?;
    let applets = output(Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && !a.contains("..")) {
        let link = staging.join(applet.trim_start_matches('/'));
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// cpio (newc, every file owned by root) piped through gzip.
fn pack(staging: &Path, out: &Path) -> Result<()> {
    exec(
        Command::new("sh")
            .args([
                "-c",
                "cd \"$1\" && find . -print0 | LC_ALL=C sort -z \
             | cpio --null --create --format=newc --owner=0:0 --quiet | gzip -1 > \"$2\"",
                "pack",
            ])
            .arg(staging)
            .arg(out),
    )
}

/// The guest's /init (busybox sh as PID 1). The kernel finds no /dev/console in the
/// archive; once devtmpfs is mounted, init's and the tests' output goes to the second serial
/// port, ttyS1, which carries nothing else (the kernel's console is ttyS0).
const INIT: &str = r#"#!/bin/sh
# Generated by `cargo xtask vm-test` (xtask/src/vm.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
if [ ! -c /dev/ttyS1 ]; then
    echo "init: no /dev/ttyS1 for the results" >/dev/console
    poweroff -f
fi
exec </dev/null >/dev/ttyS1 2>&1
mount -t proc proc /proc
echo
echo "init: started (kernel uptime $(cut -d' ' -f1 /proc/uptime) s)"
status=success
must() { "$@" || { echo "init: '$*' failed"; status=failure; }; }
must mount -t sysfs sysfs /sys
must mount -t tracefs tracefs /sys/kernel/tracing
# Optional: lets doctor report the lockdown mode.
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
must mount -t cgroup2 cgroup2 /sys/fs/cgroup
must mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && must mount -t tmpfs tmpfs /dev/shm
must sh -c 'echo +memory > /sys/fs/cgroup/cgroup.subtree_control'
# Console loglevel 1: the kernel's console stays short (results travel on ttyS1 anyway);
# dmesg keeps everything and its tail is printed on failure.
echo 1 > /proc/sys/kernel/printk
export MEMTRACE_BIN=/bin/memtrace MT_STRESS_BIN=/bin/mt-stress MEMTRACE_VM=1 CI=true
echo "init: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
echo "==== memtrace doctor"
memtrace doctor
rc=$?
echo "init: doctor exit $rc"
[ $rc -eq 0 ] || status=failure
for t in /tests/*; do
    [ -x "$t" ] || continue
    echo "==== $t"
    "$t" --include-ignored --test-threads=1
    rc=$?
    echo "init: $t exit $rc"
    [ $rc -eq 0 ] || status=failure
done
if [ $status != success ]; then
    echo "==== dmesg (last 80 lines)"
    dmesg | tail -n 80
fi
echo "init: $status"
poweroff -f
"#;

// ---------------------------------------------------------------------------------------
// Booting and watching the console

/// How qemu ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exited(Option<i32>),
    TimedOut,
    Panicked,
}

/// One kernel's result.
struct KernelRun {
    series: Series,
    kernel: String,
    console: Console,
    end: Option<End>,
    /// Something failed before or around qemu (resolving the kernel, spawning qemu).
    error: Option<String>,
    boot: Option<Duration>,
    total: Duration,
    log: Option<PathBuf>,
}

impl KernelRun {
    fn error(series: Series, e: anyhow::Error) -> KernelRun {
        eprintln!("vm-test: [{series}] {e:#}");
        KernelRun {
            series,
            kernel: String::new(),
            console: Console::default(),
            end: None,
            error: Some(format!("{e:#}")),
            boot: None,
            total: Duration::ZERO,
            log: None,
        }
    }

    /// Why this kernel counts as failed, or None when it passed.
    fn problem(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        match self.end {
            Some(End::TimedOut) => return Some("timed out".into()),
            Some(End::Panicked) => return Some("kernel panic".into()),
            _ => {}
        }
        let qemu = match &self.end {
            Some(End::Exited(Some(code))) => format!("qemu exited with {code}"),
            _ => "qemu ended".to_string(),
        };
        match self.console.verdict {
            None if self.console.started.is_none() => Some(format!("{qemu} before init ran")),
            None => Some(format!("{qemu} without an `init: success|failure` line")),
            Some(false) => Some("init: failure".into()),
            Some(true) if self.console.executed() == 0 => Some("no tests ran".into()),
            Some(true) => None,
        }
    }
}

/// The console as init reports it: the verdict and every test case's result.
#[derive(Debug, Default)]
struct Console {
    /// When `init: started` was seen (relative to qemu's start).
    started: Option<Duration>,
    verdict: Option<bool>,
    /// Label of the test binary running now (its file name without cargo's hash).
    binary: String,
    /// A test whose result line has not arrived yet.
    pending: Option<String>,
    /// (test, result) in order; `memtrace doctor` counts as one.
    results: Vec<(String, String)>,
    panicked: bool,
}

impl Console {
    /// A line of the kernel's console (ttyS0): only a panic matters.
    fn kernel_line(&mut self, line: &str) {
        if PANIC_MARKERS.iter().any(|m| line.contains(m)) {
            self.panicked = true;
        }
    }

    /// A line of init's and the tests' channel (ttyS1).
    fn feed(&mut self, line: &str, at: Duration) {
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

    fn init_line(&mut self, v: &str) {
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
                        self.results.push((name, format!("no result (binary exit {rc})")));
                    }
                }
            }
        }
    }

    fn test_line(&mut self, name: &str, result: &str) {
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
    fn executed(&self) -> usize {
        self.results
            .iter()
            .filter(|(n, r)| n != "memtrace doctor" && !r.starts_with("ignored"))
            .count()
    }
}

/// `test NAME ... RESULT` from libtest; RESULT is empty when the line is still open.
fn parse_test_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ...")?;
    if name.is_empty() || name.contains(' ') {
        return None;
    }
    let result = result.trim();
    let word = result.split(|c: char| c == ',' || c.is_whitespace()).next().unwrap_or("");
    Some((name, word))
}

/// `vm_smoke-0123456789abcdef` -> `vm_smoke`.
fn binary_label(file: &str) -> String {
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => file.to_string(),
    }
}

/// A line from qemu's stdout (the kernel's console), its stderr, or the results port.
enum Line {
    Out(String),
    Err(String),
    Results(String),
}

fn boot(kernel: &Kernel, initrd: &Path, opts: &Options, logs: &Path) -> Result<KernelRun> {
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
    let (console, end) =
        watch(&rx, &mut child, series, &mut log, start, Duration::from_secs(opts.timeout));
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
        run.boot.map_or("-".into(), |b| format!("{:.1} s", b.as_secs_f64())),
        total.as_secs_f64()
    );
    Ok(run)
}

/// qemu with the kernel's console on stdout (ttyS0) and a second serial port (ttyS1) that
/// writes into `results`.
fn qemu(kernel: &Kernel, initrd: &Path, memory: u32, results: &Path) -> Result<Child> {
    let path = results.to_str().context("results path is not UTF-8")?;
    Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", &format!("{memory}M"), "-smp", "2"])
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
fn stream_lines(child: &mut Child, results: PathBuf) -> Result<Receiver<Line>> {
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
fn follow(path: &Path, ended: impl Fn() -> bool, mut f: impl FnMut(String) -> bool) {
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
                    let line = String::from_utf8_lossy(&partial).trim_end_matches(['\n', '\r']).to_string();
                    partial.clear();
                    if !f(line) {
                        return;
                    }
                }
            }
        }
    }
    if !partial.is_empty() {
        f(String::from_utf8_lossy(&partial).trim_end_matches('\r').to_string());
    }
}

/// Calls `f` per line (lossy UTF-8, without the line end) until EOF or `f` returns false.
fn read_lines(r: impl Read, mut f: impl FnMut(String) -> bool) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                if !f(line) {
                    return;
                }
            }
        }
    }
}

/// Streams the console to the terminal and the log until qemu exits, killing it on a
/// timeout, a kernel panic, or when it does not power off after init's verdict.
fn watch(
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
                    None => (format!("timed out after {} s", timeout.as_secs()), End::TimedOut),
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
fn emit(series: Series, log: &mut fs::File, text: &str) {
    println!("[{series}] {text}");
    let _ = writeln!(log, "{text}");
}

/// The line without terminal escape sequences (the firmware clears the screen) and other
/// control characters, so it neither garbles the terminal nor hides init's markers.
fn strip_controls(line: &str) -> String {
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

/// Kills qemu and leaves a few seconds to drain what it wrote.
fn kill(child: &mut Child, deadline: &mut Instant) {
    let _ = child.kill();
    *deadline = Instant::now() + Duration::from_secs(5);
}

// ---------------------------------------------------------------------------------------
// Summary

fn print_summary(runs: &[KernelRun]) {
    println!();
    println!("== vm-test summary");
    let width = runs
        .iter()
        .flat_map(|r| r.console.results.iter().map(|(n, _)| n.len()))
        .max()
        .unwrap_or(0)
        .max(24);
    println!("{:<7} {:<width$}  result", "kernel", "test");
    for r in runs {
        for (name, result) in &r.console.results {
            println!("{:<7} {:<width$}  {result}", r.series.name(), name);
        }
        if let Some(p) = &r.console.pending {
            println!("{:<7} {:<width$}  no result", r.series.name(), p);
        }
    }
    println!();
    for r in runs {
        let verdict = r.problem().map_or_else(|| "PASSED".to_string(), |p| format!("FAILED: {p}"));
        let passed = r.console.results.iter().filter(|(_, res)| res == "ok").count();
        println!(
            "kernel {:<5} {}  {}/{} ok, userspace after {}, total {:.1} s{}  {}",
            r.series.name(),
            if r.kernel.is_empty() { "(no kernel)" } else { &r.kernel },
            passed,
            r.console.results.len(),
            r.boot.map_or("-".into(), |b| format!("{:.1} s", b.as_secs_f64())),
            r.total.as_secs_f64(),
            r.log.as_ref().map_or(String::new(), |l| format!(", log {}", l.display())),
            verdict
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("vm-test").chain(args.iter().copied())).map(|c| c.opts)
    }

    #[test]
    fn default_matches_no_arguments() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
    }

    #[test]
    fn kernel_selection() {
        assert_eq!(parse(&["--kernel", "6.1"]).unwrap().kernels, [Series::V6_1]);
        assert_eq!(
            parse(&["--kernel", "6.12", "6.1"]).unwrap().kernels,
            [Series::V6_12, Series::V6_1]
        );
        assert_eq!(
            parse(&["--kernel", "6.1,6.12"]).unwrap().kernels,
            [Series::V6_1, Series::V6_12]
        );
        assert_eq!(parse(&["--kernel", "6.12,6.12"]).unwrap().series(), [Series::V6_12]);
        assert_eq!(parse(&[]).unwrap().series(), Series::ALL);
        assert!(parse(&["--kernel", "5.15"]).is_err());
        assert!(parse(&["--timeout", "soon"]).is_err());
    }

    #[test]
    fn resolves_versioned_package() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.12.117+deb13-cloud-amd64\n";
        assert_eq!(parse_depends(out).as_deref(), Some("linux-image-6.12.117+deb13-cloud-amd64"));
        let alt = "linux-image-cloud-amd64\n |Depends: <linux-image-6.1.0-41-cloud-amd64>\n";
        assert_eq!(parse_depends(alt).as_deref(), Some("linux-image-6.1.0-41-cloud-amd64"));
        assert_eq!(parse_depends("linux-image-cloud-amd64\n  Depends: kmod\n"), None);
        assert_eq!(parse_depends(""), None);
        assert_eq!(parse_version("Package: x\nVersion: 6.1.158-1\n").as_deref(), Some("6.1.158-1"));
        assert_eq!(parse_version("Package: x\n"), None);
    }

    #[test]
    fn collects_test_executables() {
        let out = r#"{"reason":"compiler-artifact","target":{"name":"vm_smoke","kind":["test"]},"profile":{"test":true},"executable":"/t/vm_smoke-0123"}
{"reason":"compiler-artifact","target":{"name":"libc","kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}
not json
{"reason":"compiler-artifact","target":{"name":"mt-stress","kind":["bin"]},"profile":{"test":false},"executable":"/t/mt-stress"}"#;
        let a = parse_artifacts(out);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0],
            Artifact { name: "vm_smoke".into(), test: true, executable: "/t/vm_smoke-0123".into() }
        );
        assert!(!a[1].test);
    }

    #[test]
    fn parses_libtest_lines() {
        assert_eq!(parse_test_line("test doctor_ok ... ok"), Some(("doctor_ok", "ok")));
        assert_eq!(parse_test_line("test a::b ... FAILED"), Some(("a::b", "FAILED")));
        assert_eq!(parse_test_line("test x ... ignored, needs a VM"), Some(("x", "ignored")));
        assert_eq!(parse_test_line("test slow ... "), Some(("slow", "")));
        assert_eq!(parse_test_line("test result: ok. 1 passed; 0 failed"), None);
        assert_eq!(parse_test_line("running 1 test"), None);
        assert_eq!(binary_label("vm_smoke-0123456789abcdef"), "vm_smoke");
        assert_eq!(binary_label("mt-stress"), "mt-stress");
    }

    #[test]
    fn strips_terminal_escapes() {
        assert_eq!(strip_controls("\u{1b}c\u{1b}[?7l\u{1b}[2Jinit: started"), "init: started");
        assert_eq!(strip_controls("\u{1b}[0mSeaBIOS (version 1.16)\r"), "SeaBIOS (version 1.16)");
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
        assert_eq!(ok.results[1], ("vm_smoke::doctor_json_ok".to_string(), "ok".to_string()));
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
        follow(&path, || ended.load(std::sync::atomic::Ordering::SeqCst), |l| {
            lines.push(l);
            true
        });
        writer.join().unwrap();
        assert_eq!(lines, ["init: started", "test a ... ok", "init: success", "no newline"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn problems() {
        let mut run = KernelRun::error(Series::V6_1, anyhow::anyhow!("no network"));
        assert_eq!(run.problem().as_deref(), Some("no network"));
        run.error = None;
        run.end = Some(End::Exited(Some(0)));
        assert_eq!(run.problem().as_deref(), Some("qemu exited with 0 before init ran"));
        run.console = console(&["init: started", "init: doctor exit 0", "init: success"]);
        assert_eq!(run.problem().as_deref(), Some("no tests ran"));
        run.console = console(&["init: started", "test a ... ok", "init: success"]);
        assert_eq!(run.problem(), None);
        run.end = Some(End::TimedOut);
        assert_eq!(run.problem().as_deref(), Some("timed out"));
    }

    #[test]
    fn init_script_does_what_the_tests_need() {
        for needed in [
            "mount -t tracefs",
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
            "+memory > /sys/fs/cgroup/cgroup.subtree_control",
            "MEMTRACE_BIN=/bin/memtrace MT_STRESS_BIN=/bin/mt-stress MEMTRACE_VM=1 CI=true",
            "exec </dev/null >/dev/ttyS1 2>&1",
            "--include-ignored --test-threads=1",
            "echo \"init: $status\"",
            "poweroff -f",
        ] {
            assert!(INIT.contains(needed), "{needed}");
        }
    }
}
