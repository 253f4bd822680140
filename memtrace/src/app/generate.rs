//! What this binary says about itself, from the same clap definition as `--help`, so none of
//! it can drift: the long version (`memtrace --version`: the git commit, aya and the BPF
//! toolchain this build used, from build.rs), and the hidden `memtrace generate man DIR` /
//! `memtrace generate completions DIR` that `cargo xtask dist` runs on the built binary to
//! fill the Debian package.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use clap::{Args, Command, CommandFactory as _, Subcommand};
use clap_complete::Shell;

use super::cli::Cli;
use crate::error::Error;

/// `memtrace --version` (`-V` stays one line: `memtrace <version>`).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit:        ",
    env!("MEMTRACE_GIT_COMMIT"),
    "\naya:           ",
    env!("MEMTRACE_AYA"),
    "\nbpf toolchain: ",
    env!("MEMTRACE_BPF_TOOLCHAIN"),
);

/// The same on one line, for the man pages' VERSION section.
const MAN_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    ", commit ",
    env!("MEMTRACE_GIT_COMMIT"),
    ", ",
    env!("MEMTRACE_AYA"),
    ", bpf toolchain ",
    env!("MEMTRACE_BPF_TOOLCHAIN"),
);

/// Man page section: system administration commands (memtrace needs root).
const SECTION: &str = "8";

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generated,
}

#[derive(Debug, Subcommand)]
pub enum Generated {
    /// memtrace.8 and memtrace-COMMAND.8 for every command, into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Completions for bash (`memtrace`), zsh (`_memtrace`) and fish (`memtrace.fish`),
    /// into DIR.
    Completions {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn run(args: &GenerateArgs) -> Result<(), Error> {
    let (dir, files) = match &args.what {
        Generated::Man { dir } => (dir, man_pages()),
        Generated::Completions { dir } => (dir, completions()),
    };
    write_all(dir, &files)
        .map_err(|e| Error::Usage(format!("generate into {}: {e}", dir.display())))
}

fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, body) in files {
        fs::write(dir.join(name), body)?;
        println!("{}", dir.join(name).display());
    }
    Ok(())
}

/// The command line as users see it: hidden commands (this one) and clap's `help`
/// subcommand left out, global options propagated to every command.
fn visible_commands() -> (Command, Vec<Command>) {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let subs = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    (cmd, subs)
}

/// (file name, roff) for memtrace.8 and one page per command.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let (top, subs) = visible_commands();
    let mut pages = vec![man_page(&top)];
    pages.extend(subs.iter().map(man_page));
    pages
}

/// One page: clap_mangen's sections, the version on one line, and the `after_help` text
/// (EXAMPLES) kept as written (no filling, so the examples stay aligned).
fn man_page(cmd: &Command) -> (String, Vec<u8>) {
    let cmd = cmd.clone().long_version(MAN_VERSION);
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section(SECTION)
        .date(env!("MEMTRACE_GIT_DATE"))
        .manual("memtrace");
    type Render = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let mut sections: Vec<Render> = vec![
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
    ];
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        sections.push(clap_mangen::Man::render_options_section);
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        sections.push(clap_mangen::Man::render_subcommands_section);
    }
    let mut page = String::new();
    for render in sections {
        let mut out = Vec::new();
        render(&man, &mut out).expect("writing to a Vec");
        let text = String::from_utf8_lossy(&out).into_owned();
        // Every section comes with roff's apostrophe prelude: keep the first only.
        page += if page.is_empty() { &text } else { text.strip_prefix(PRELUDE).unwrap_or(&text) };
    }
    if let Some(after) = cmd.get_after_help() {
        page += &verbatim_section(&after.to_string());
    }
    let mut version = Vec::new();
    man.render_version_section(&mut version).expect("writing to a Vec");
    let version = String::from_utf8_lossy(&version).into_owned();
    page += version.strip_prefix(PRELUDE).unwrap_or(&version);
    (format!("{name}.{SECTION}"), page.into_bytes())
}

/// What clap_mangen (roff) puts before every section it renders.
const PRELUDE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// A section from text whose first line is its heading (`EXAMPLES:`), in no-fill mode.
fn verbatim_section(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim();
    let (heading, rest): (&str, Vec<&str>) = match first.strip_suffix(':') {
        Some(h) => (h, lines.collect()),
        None => ("NOTES", text.lines().collect()),
    };
    let indent = rest
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut s = format!(".SH {}\n.nf\n", heading.to_uppercase());
    for l in rest {
        s += &roff_escape(l.get(indent..).unwrap_or(l.trim_start()));
        s.push('\n');
    }
    s += ".fi\n";
    s
}

/// Plain text as one roff text line: backslashes and hyphens escaped (so options print
/// as ASCII minus signs), a leading control character neutralized.
fn roff_escape(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// (file name, script) for bash, zsh and fish, named as Debian's completion directories
/// expect (/usr/share/bash-completion/completions/memtrace, .../vendor-completions/_memtrace,
/// .../vendor_completions.d/memtrace.fish).
pub fn completions() -> Vec<(String, Vec<u8>)> {
    // clap_complete offers hidden subcommands too: complete a copy without them (global
    // options and --version propagate when clap_complete builds it).
    let cli = Cli::command();
    let mut cmd = Command::new("memtrace")
        .about(cli.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(true)
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    [(Shell::Bash, "memtrace"), (Shell::Zsh, "_memtrace"), (Shell::Fish, "memtrace.fish")]
        .into_iter()
        .map(|(shell, file)| {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "memtrace", &mut out);
            out.flush().expect("writing to a Vec");
            (file.to_string(), out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMANDS: [&str; 7] = ["watch", "oom", "reclaim", "slab", "shmem", "doctor", "replay"];

    #[test]
    fn a_man_page_per_visible_command() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "memtrace.8");
        let mut want: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("memtrace-{}.8", s.get_name()))
            .collect();
        assert_eq!(names[1..], want, "one page per command, in --help order");
        want.sort();
        for c in COMMANDS {
            assert!(want.contains(&format!("memtrace-{c}.8")), "no page for {c}");
        }
        for (name, body) in &pages {
            let text = String::from_utf8(body.clone()).unwrap();
            assert!(
                text.starts_with(&format!(
                    "{PRELUDE}.TH {} 8 ",
                    name.trim_end_matches(".8").to_uppercase()
                )),
                "{name}"
            );
            assert_eq!(text.matches(PRELUDE).count(), 1, "{name}");
            assert!(text.contains(".SH NAME") && text.contains(".SH SYNOPSIS"), "{name}");
            assert!(!text.contains("generate"), "{name} shows the hidden command");
            assert!(text.contains(concat!("v", env!("CARGO_PKG_VERSION"), ", commit ")), "{name}");
        }
        let top = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(top.contains(".SH EXAMPLES\n.nf\nmemtrace watch "), "{top}");
        assert!(top.contains("memtrace\\-oom(8)"), "the subcommand pages are referenced");
        let oom = &pages.iter().find(|(n, _)| n == "memtrace-oom.8").unwrap().1;
        let oom = String::from_utf8(oom.clone()).unwrap();
        assert!(oom.contains("all\\-candidates") && oom.contains("btf"), "{oom}");
    }

    #[test]
    fn completions_name_every_visible_command() {
        let files = completions();
        assert_eq!(files.len(), 3);
        for (name, body) in files {
            let text = String::from_utf8(body).unwrap();
            for c in COMMANDS {
                assert!(text.contains(c), "{name} lacks {c}");
            }
            assert!(!text.contains("generate"), "{name} completes the hidden command");
            assert!(text.contains("--btf") || text.contains("-l btf"), "{name} lacks --btf");
        }
    }

    #[test]
    fn verbatim_sections_keep_layout_and_escape() {
        let s = verbatim_section("EXAMPLES:\n    memtrace -v x   # a\n      .dot \\n\n");
        assert_eq!(s, ".SH EXAMPLES\n.nf\nmemtrace \\-v x   # a\n  .dot \\en\n.fi\n");
        assert_eq!(roff_escape(".x"), "\\&.x");
        assert_eq!(roff_escape("'x"), "\\&'x");
    }

    #[test]
    fn long_version_says_where_the_build_came_from() {
        let lines: Vec<&str> = LONG_VERSION.lines().collect();
        assert_eq!(lines[0], env!("CARGO_PKG_VERSION"));
        assert!(lines[1].starts_with("commit:"), "{LONG_VERSION}");
        assert!(lines[2].contains("aya 0.") && lines[2].contains("aya-ebpf"), "{LONG_VERSION}");
        assert!(lines[3].starts_with("bpf toolchain:"), "{LONG_VERSION}");
        assert_eq!(lines.len(), 4);
    }
}
