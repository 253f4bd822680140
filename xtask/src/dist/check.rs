//! The package checks (`cargo xtask dist --check`; `cargo xtask test` runs them before the
//! host tests): the .deb and the static binary as a user gets them, through the commands
//! of the README's Install section, exactly as written there (a unit test holds
//! [`README_COMMANDS`] equal to the README), adapted only to run in test roots:
//!
//! - the .deb goes into target/dist/roots/deb with `dpkg --root` (its own dpkg database,
//!   nothing else in it), never into the host's /usr or dpkg database, and is removed with
//!   `dpkg --root ... -r`. This is a shared machine: a test never installs or removes a
//!   package of the host;
//! - `memtrace ...` runs in a chroot of that root (a private mount namespace with /proc,
//!   /sys and /dev mounted; gone with the process), so `memtrace doctor` really is the
//!   installed /usr/sbin/memtrace found on the PATH, in a root holding nothing else: the
//!   binary needs no library;
//! - the static binary is `install`ed into target/dist/roots/static/usr/local/sbin.
//!
//! Every check runs and reports; the command fails if any failed. Nothing is skipped: a
//! missing tool (lintian, man) is a failure.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use super::Dist;
use crate::{setup::BPF_LINKER_VERSION, util::workspace_root};

pub const DIST: &str = "cargo xtask dist";
pub const DPKG_INSTALL: &str = "dpkg -i target/dist/memtrace_*_amd64.deb";
pub const DOCTOR: &str = "memtrace doctor";
pub const MAN: &str = "man memtrace-oom";
pub const DPKG_REMOVE: &str = "dpkg -r memtrace";
pub const INSTALL_STATIC: &str =
    "install -m 0755 target/dist/memtrace-*-x86_64-unknown-linux-musl /usr/local/sbin/memtrace";
pub const VERSION: &str = "memtrace --version";
pub const DOCTOR_JSON: &str = "memtrace doctor --json";
pub const RUN: &str = "cargo xtask run -- doctor";
pub const BUILD: &str = "cargo xtask build";

/// The README's Install section, in order.
pub const README_COMMANDS: [&str; 10] = [
    DIST,
    DPKG_INSTALL,
    DOCTOR,
    MAN,
    DPKG_REMOVE,
    INSTALL_STATIC,
    VERSION,
    DOCTOR_JSON,
    RUN,
    BUILD,
];

/// A named check.
type Check<'a> = (&'static str, Box<dyn Fn() -> Result<()> + 'a>);

/// PATH inside the test roots (chroot finds `memtrace` through it).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn run(dist: &Dist) -> Result<()> {
    let ws = workspace_root();
    let roots = ws.join("target/dist/roots");
    clear(&roots)?;
    let deb_root = roots.join("deb");
    let static_root = roots.join("static");
    eprintln!("== package checks (test roots in {})", roots.display());
    let readme = readme_install_commands(&ws)?;
    ensure!(
        readme == README_COMMANDS,
        "README.md's Install commands are not the checked ones:\n{readme:#?}\nchecked: {README_COMMANDS:#?}"
    );
    // `cargo xtask dist` (README_COMMANDS[0]) is what made `dist`.
    let checks: Vec<Check<'_>> = vec![
        (
            "memtrace --version: commit, aya, BPF toolchain",
            Box::new(|| version(&ws, &dist.binary, &dist.version)),
        ),
        ("lintian: no errors", Box::new(|| lintian(&dist.deb))),
        (
            "dpkg -i into a test root: every file in place",
            Box::new(|| install_deb(&ws, &deb_root, dist)),
        ),
        ("memtrace doctor from /usr/sbin/memtrace", Box::new(|| doctor(&deb_root))),
        ("man -l renders every page; man memtrace-oom", Box::new(|| man_pages(&deb_root))),
        ("bash completion completes commands and options", Box::new(|| completions(&deb_root))),
        ("dpkg -r removes every file", Box::new(|| remove_deb(&deb_root))),
        (
            "static binary: install, --version, doctor --json",
            Box::new(|| static_binary(&ws, &static_root, &dist.version)),
        ),
        (
            "from source: cargo xtask run -- doctor, cargo xtask build",
            Box::new(|| from_source(&ws)),
        ),
    ];
    let mut failed = Vec::new();
    for (name, check) in &checks {
        let started = Instant::now();
        let result = check();
        let took = format!("{:.1} s", started.elapsed().as_secs_f64());
        match result {
            Ok(()) => println!("package check: {name} ... ok ({took})"),
            Err(e) => {
                println!("package check: {name} ... FAILED ({took})\n{e:#}");
                failed.push(*name);
            }
        }
    }
    println!("package checks: {} passed, {} failed", checks.len() - failed.len(), failed.len());
    if !failed.is_empty() {
        bail!(
            "package checks failed: {} (test roots kept in {})",
            failed.join("; "),
            roots.display()
        );
    }
    clear(&roots)
}

/// The indented (command) lines of the README's Install section.
fn readme_install_commands(ws: &Path) -> Result<Vec<String>> {
    let readme = fs::read_to_string(ws.join("README.md"))?;
    let section =
        readme.split("\n## Install\n").nth(1).context("README.md has no `## Install` section")?;
    let section = section.split("\n## ").next().unwrap_or_default();
    Ok(section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(|l| l.trim().to_string())
        .collect())
}

/// Removes a test root tree, refusing while anything is mounted below it.
fn clear(dir: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    if let Some(m) =
        mounts.lines().filter_map(|l| l.split(' ').nth(1)).find(|m| Path::new(m).starts_with(dir))
    {
        bail!("{m} is mounted inside the test roots: not removing {}", dir.display());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Runs a command and returns its output whatever its status.
fn run_cmd(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("spawning {cmd:?}"))
}

/// Its stdout, failing with both streams when it did not succeed.
fn succeed(cmd: &mut Command) -> Result<String> {
    let out = run_cmd(cmd)?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{cmd:?}: {}\n{stdout}\n{stderr}", out.status);
    Ok(stdout.into_owned())
}

/// A README command through `sh -c`, in the workspace (for its globs).
fn shell(ws: &Path, line: &str) -> Result<String> {
    succeed(Command::new("sh").current_dir(ws).args(["-c", line]))
}

/// A README command line (`memtrace ...`) run inside `root` as its own /: a private mount
/// namespace with /proc, /sys (tracefs, cgroups, BTF) and /dev, then chroot, which finds
/// the program on PATH inside the root.
fn in_root(root: &Path, line: &str) -> Command {
    for d in ["proc", "sys", "dev"] {
        let _ = fs::create_dir_all(root.join(d));
    }
    let mut cmd = Command::new("unshare");
    cmd.env("PATH", PATH)
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "set -e; r=$1; shift; mount -t proc proc \"$r/proc\"; mount --rbind /sys \"$r/sys\"; \
              mount --rbind /dev \"$r/dev\"; exec chroot \"$r\" \"$@\"",
        )
        .arg("in-root")
        .arg(root)
        .args(line.split_whitespace());
    cmd
}

/// `memtrace -V` is one line; `--version` names HEAD's commit, Cargo.lock's aya and the
/// pinned bpf-linker.
fn version(ws: &Path, bin: &Path, version: &str) -> Result<()> {
    let short = succeed(Command::new(bin).arg("-V"))?;
    ensure!(short == format!("memtrace {version}\n"), "memtrace -V printed {short:?}");
    check_long_version(ws, &succeed(Command::new(bin).arg("--version"))?, version)
}

fn check_long_version(ws: &Path, long: &str, version: &str) -> Result<()> {
    let field = |name: &str| {
        long.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .with_context(|| format!("--version has no `{name}:` line:\n{long}"))
    };
    ensure!(long.lines().next() == Some(&format!("memtrace {version}")), "--version:\n{long}");
    let head = succeed(Command::new("git").arg("-C").arg(ws).args(["rev-parse", "HEAD"]))?;
    let commit = field("commit")?;
    ensure!(
        commit.starts_with(&head.trim()[..12]),
        "--version says commit {commit}, HEAD is {head}"
    );
    let lock = fs::read_to_string(ws.join("Cargo.lock"))?;
    let aya = locked_version(&lock, "aya").context("no aya in Cargo.lock")?;
    let said = field("aya")?;
    ensure!(
        said.starts_with(&format!("aya {aya} (aya-ebpf ")),
        "--version says {said}, Cargo.lock has aya {aya}"
    );
    let bpf = field("bpf toolchain")?;
    for needle in ["rustc 1.", "-nightly", "LLVM ", &format!("bpf-linker {BPF_LINKER_VERSION}")] {
        ensure!(bpf.contains(needle), "bpf toolchain {bpf:?} lacks {needle:?}");
    }
    Ok(())
}

/// The version of `name` in a Cargo.lock (as memtrace/build.rs reads it).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(v.to_string());
        }
    }
    None
}

fn lintian(deb: &Path) -> Result<()> {
    let out = run_cmd(
        Command::new("lintian")
            .env("LC_ALL", "C.UTF-8")
            .args(["--fail-on", "error", "--display-info", "--show-overrides", "--tag-display-limit", "0"])
            .arg(deb),
    )
    .context("lintian (`cargo xtask setup --for test` installs it)")?;
    let report = String::from_utf8_lossy(&out.stdout);
    print!("{report}");
    ensure!(out.status.success(), "lintian reports errors ({}):\n{report}", out.status);
    ensure!(!report.lines().any(|l| l.starts_with("E: ")), "lintian reports errors:\n{report}");
    Ok(())
}

/// What the package must install (paths relative to /), besides the directories.
fn expected_files(dist: &Dist, pages: &[String]) -> Vec<String> {
    let mut v = vec![
        "usr/sbin/memtrace".to_string(),
        "usr/share/bash-completion/completions/memtrace".into(),
        "usr/share/zsh/vendor-completions/_memtrace".into(),
        "usr/share/fish/vendor_completions.d/memtrace.fish".into(),
        "usr/share/doc/memtrace/README.md.gz".into(),
        "usr/share/doc/memtrace/copyright".into(),
        "usr/share/doc/memtrace/changelog.gz".into(),
    ];
    v.extend(pages.iter().map(|p| format!("usr/share/man/man8/{p}.gz")));
    if dist.unit {
        v.push("usr/lib/systemd/system/memtrace.service".into());
    }
    v
}

/// The pages `memtrace generate man` writes: memtrace.8 and one per command.
fn generated_pages(bin: &Path) -> Result<Vec<String>> {
    let dir = tempdir("man")?;
    let listed = succeed(Command::new(bin).args(["generate", "man"]).arg(&dir))?;
    let _ = fs::remove_dir_all(&dir);
    let pages: Vec<String> = listed
        .lines()
        .filter_map(|l| Some(Path::new(l).file_name()?.to_string_lossy().into_owned()))
        .collect();
    ensure!(
        pages.len() >= 8 && pages.contains(&"memtrace.8".to_string()),
        "generated pages: {pages:?}"
    );
    Ok(pages)
}

fn tempdir(what: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("memtrace-dist-{what}-{}", std::process::id()));
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn install_deb(ws: &Path, root: &Path, dist: &Dist) -> Result<()> {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(d))?;
    }
    fs::write(admin.join("status"), "")?;
    fs::create_dir_all(root.join("var/log"))?;
    if dist.unit {
        // The unit's maintainer scripts need a shell in the root.
        fs::create_dir_all(root.join("bin"))?;
        fs::copy("/bin/busybox", root.join("bin/sh"))
            .context("busybox-static for the root's /bin/sh")?;
    }
    shell(ws, &dpkg_in(root, DPKG_INSTALL))?;
    let status = succeed(dpkg(root).args(["-s", "memtrace"]))?;
    ensure!(status.contains("Status: install ok installed"), "{status}");
    ensure!(status.contains(&format!("Version: {}\n", dist.version)), "{status}");
    let listed = succeed(dpkg(root).args(["-L", "memtrace"]))?;
    for f in expected_files(dist, &generated_pages(&dist.binary)?) {
        ensure!(listed.lines().any(|l| l == format!("/{f}")), "the package lacks /{f}:\n{listed}");
        ensure!(root.join(&f).is_file(), "/{f} was not installed");
    }
    ensure!(
        fs::read(root.join("usr/sbin/memtrace"))?.len() > 1 << 20,
        "/usr/sbin/memtrace is suspiciously small"
    );
    if dist.unit {
        unit_is_disabled(&dist.deb)?;
    }
    Ok(())
}

/// The unit's postinst (cargo-deb's dh_installsystemd snippets) keeps a new install
/// disabled and stopped: only a unit the admin enabled before is re-enabled.
fn unit_is_disabled(deb: &Path) -> Result<()> {
    let postinst = succeed(Command::new("dpkg-deb").arg("--info").arg(deb).arg("postinst"))?;
    ensure!(
        postinst.contains("deb-systemd-helper debian-installed memtrace.service"),
        "the postinst does not handle memtrace.service:\n{postinst}"
    );
    for enabling in ["Enables the unit on first installation", "deb-systemd-invoke start"] {
        ensure!(!postinst.contains(enabling), "the postinst enables or starts the unit:\n{postinst}");
    }
    Ok(())
}

/// A README `dpkg ...` line made to act on the test root.
fn dpkg_in(root: &Path, line: &str) -> String {
    let log = root.join("var/log/dpkg.log");
    line.replacen("dpkg ", &format!("dpkg --root={} --log={} ", root.display(), log.display()), 1)
}

fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()));
    c
}

fn doctor(root: &Path) -> Result<()> {
    let out = succeed(&mut in_root(root, DOCTOR))?;
    for needle in ["kernel ", "btf           ok", "hooks:", "oom "] {
        ensure!(out.contains(needle), "`{DOCTOR}` output lacks {needle:?}:\n{out}");
    }
    Ok(())
}

fn man_pages(root: &Path) -> Result<()> {
    let dir = root.join("usr/share/man/man8");
    let mut pages: Vec<PathBuf> =
        fs::read_dir(&dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    pages.sort();
    ensure!(!pages.is_empty(), "no man pages in {}", dir.display());
    for page in &pages {
        let name = page.file_name().unwrap_or_default().to_string_lossy().replace(".8.gz", "");
        let out =
            run_cmd(Command::new("man").env("MANWIDTH", "80").args(["--warnings", "-l"]).arg(page))
                .context("man (`cargo xtask setup --for test` installs man-db)")?;
        let (text, warnings) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(
            out.status.success() && warnings.trim().is_empty(),
            "man -l {}: {}\n{warnings}",
            page.display(),
            out.status
        );
        for needle in ["NAME", "SYNOPSIS", "OPTIONS", "VERSION", &name] {
            ensure!(text.contains(needle), "man -l {}: no {needle:?}:\n{text}", page.display());
        }
    }
    // README: `man memtrace-oom`, looked up by name in the root's man tree.
    let line =
        MAN.replacen("man ", &format!("man -M {} ", root.join("usr/share/man").display()), 1);
    let text = succeed(Command::new("sh").env("MANWIDTH", "80").args(["-c", &line]))?;
    ensure!(text.contains("memtrace-oom") && text.contains("--all-candidates"), "{line}:\n{text}");
    Ok(())
}

/// Bash: the installed script completes the commands (not the hidden one) and a command's
/// options; zsh and fish: the installed scripts are clap's for memtrace.
fn completions(root: &Path) -> Result<()> {
    let bash = root.join("usr/share/bash-completion/completions/memtrace");
    let complete = |words: &str| -> Result<Vec<String>> {
        let script = format!(
            "source \"$1\"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _memtrace memtrace \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = succeed(Command::new("bash").args(["-c", &script, "complete"]).arg(&bash))?;
        Ok(out.lines().map(str::to_string).collect())
    };
    let commands = complete("memtrace ''")?;
    for c in ["watch", "oom", "reclaim", "slab", "shmem", "doctor", "replay", "--btf", "--version"]
    {
        ensure!(
            commands.iter().any(|w| w == c),
            "bash completes `memtrace ` without {c}: {commands:?}"
        );
    }
    ensure!(!commands.iter().any(|w| w == "generate"), "bash completes the hidden command");
    let options = complete("memtrace oom --a")?;
    ensure!(options == ["--all-candidates"], "`memtrace oom --a` completes to {options:?}");
    let zsh = fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_memtrace"))?;
    ensure!(
        zsh.starts_with("#compdef memtrace"),
        "zsh completion header: {:?}",
        zsh.lines().next()
    );
    let fish = fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/memtrace.fish"))?;
    ensure!(fish.contains("complete -c memtrace"), "fish completion names no memtrace");
    for c in ["reclaim", "all-candidates"] {
        ensure!(zsh.contains(c) && fish.contains(c), "zsh or fish completion lacks {c}");
    }
    Ok(())
}

fn remove_deb(root: &Path) -> Result<()> {
    succeed(Command::new("sh").args(["-c", &dpkg_in(root, DPKG_REMOVE)]))?;
    let status = run_cmd(dpkg(root).args(["-s", "memtrace"]))?;
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(!text.contains("install ok installed"), "still installed after {DPKG_REMOVE}:\n{text}");
    for f in [
        "usr/sbin/memtrace",
        "usr/share/man/man8/memtrace.8.gz",
        "usr/share/bash-completion/completions/memtrace",
    ] {
        ensure!(!root.join(f).exists(), "/{f} is left after {DPKG_REMOVE}");
    }
    Ok(())
}

/// The static binary installed as the README says into an empty root, then run there.
fn static_binary(ws: &Path, root: &Path, version: &str) -> Result<()> {
    let dest = root.join("usr/local/sbin");
    fs::create_dir_all(&dest)?;
    shell(
        ws,
        &INSTALL_STATIC
            .replace("/usr/local/sbin/memtrace", &dest.join("memtrace").to_string_lossy()),
    )?;
    check_long_version(ws, &succeed(&mut in_root(root, VERSION))?, version)?;
    let out = succeed(&mut in_root(root, DOCTOR_JSON))?;
    let line = out.lines().find(|l| l.starts_with('{')).context("doctor --json printed no JSON")?;
    let report: Value = serde_json::from_str(line).context("doctor's JSON")?;
    ensure!(report["ok"] == Value::Bool(true), "doctor --json: not ok: {report:#}");
    ensure!(report["hooks"].as_array().is_some_and(|h| !h.is_empty()), "doctor --json: no hooks");
    Ok(())
}

/// README: build from this repository.
fn from_source(ws: &Path) -> Result<()> {
    let out = shell(ws, RUN)?;
    ensure!(out.contains("hooks:"), "`{RUN}` printed no doctor report:\n{out}");
    let built = shell(ws, BUILD)?;
    let bin = PathBuf::from(built.lines().last().unwrap_or_default());
    ensure!(
        bin == ws.join("target/release/memtrace") && bin.is_file(),
        "`{BUILD}` printed {built:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_install_commands_are_the_checked_ones() {
        assert_eq!(readme_install_commands(&workspace_root()).unwrap(), README_COMMANDS);
    }

    #[test]
    fn dpkg_lines_act_on_the_test_root() {
        let r = Path::new("/t/r");
        assert_eq!(
            dpkg_in(r, DPKG_INSTALL),
            "dpkg --root=/t/r --log=/t/r/var/log/dpkg.log -i target/dist/memtrace_*_amd64.deb"
        );
        assert_eq!(
            dpkg_in(r, DPKG_REMOVE),
            "dpkg --root=/t/r --log=/t/r/var/log/dpkg.log -r memtrace"
        );
    }

    #[test]
    fn long_version_is_checked_field_by_field() {
        let ws = workspace_root();
        let head =
            succeed(Command::new("git").arg("-C").arg(&ws).args(["rev-parse", "HEAD"])).unwrap();
        let aya =
            locked_version(&fs::read_to_string(ws.join("Cargo.lock")).unwrap(), "aya").unwrap();
        let good = format!(
            "memtrace 9.9.9\ncommit:        {} (2026-01-01)\naya:           aya {aya} (aya-ebpf 0.2.1)\n\
             bpf toolchain: rustc 1.97.0-nightly (x 2026-05-19), LLVM 22.1.4; bpf-linker {BPF_LINKER_VERSION}\n",
            &head[..12]
        );
        check_long_version(&ws, &good, "9.9.9").unwrap();
        assert!(check_long_version(&ws, &good, "1.0.0").is_err());
        assert!(
            check_long_version(&ws, &good.replace(&head[..12], "000000000000"), "9.9.9").is_err()
        );
        assert!(check_long_version(&ws, &good.replace("bpf-linker", "linker"), "9.9.9").is_err());
    }
}
