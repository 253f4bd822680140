//! /proc/kallsyms: whether a function exists (for kprobe strategies), and kernel text
//! addresses to `symbol+0xoff` (read once at start; module symbols included, so call sites
//! in modules resolve as `sym+0x10 [module]`). One line parser serves both.

use std::io::BufRead as _;

/// One kallsyms line: (address, type letter, name, `[module]` if any).
fn parse_line(l: &str) -> Option<(u64, &str, &str, Option<&str>)> {
    let mut it = l.split_whitespace();
    let addr = u64::from_str_radix(it.next()?, 16).ok()?;
    let ty = it.next()?;
    let name = it.next()?;
    Some((addr, ty, name, it.next()))
}

/// Whether /proc/kallsyms has a text symbol of this name (".isra"/".constprop" clones
/// count). Streams the file: nothing is kept.
pub fn has_function(func: &str) -> bool {
    let Ok(f) = std::fs::File::open("/proc/kallsyms") else { return false };
    std::io::BufReader::new(f).lines().map_while(Result::ok).any(|l| {
        parse_line(&l).is_some_and(|(_, ty, name, _)| {
            matches!(ty, "t" | "T") && (name == func || name.split('.').next() == Some(func))
        })
    })
}

/// Sorted text symbols.
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Kallsyms {
        match std::fs::read_to_string("/proc/kallsyms") {
            Ok(text) => Kallsyms::parse(&text),
            Err(e) => {
                log::warn!("/proc/kallsyms unreadable ({e}): call sites shown as addresses");
                Kallsyms { syms: Vec::new() }
            }
        }
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let (addr, ty, name, module) = parse_line(l)?;
                if addr == 0 || !matches!(ty, "t" | "T" | "w" | "W") {
                    return None;
                }
                Some(match module {
                    Some(module) => (addr, format!("{name} {module}")),
                    None => (addr, name.to_string()),
                })
            })
            .collect();
        syms.sort_by_key(|s| s.0);
        Kallsyms { syms }
    }

    /// True when addresses are visible (kptr_restrict lets root see them).
    pub fn usable(&self) -> bool {
        !self.syms.is_empty()
    }

    /// `name+0xoff` (with ` [module]` after it), or the hex address when unknown.
    pub fn resolve(&self, addr: u64) -> String {
        if addr == 0 {
            return "?".into();
        }
        let i = self.syms.partition_point(|s| s.0 <= addr);
        if i == 0 {
            return format!("{addr:#x}");
        }
        let (base, name) = &self.syms[i - 1];
        let off = addr - base;
        // Beyond 1 MiB past the last symbol is not that symbol.
        if off > 1 << 20 {
            return format!("{addr:#x}");
        }
        match name.split_once(' ') {
            Some((sym, module)) => format!("{sym}+{off:#x} {module}"),
            None => format!("{name}+{off:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff816dcca0 t d_alloc_pseudo
ffffffff816dccd0 t __d_alloc
ffffffff816dcf00 T d_alloc
ffffffff82a00000 D some_data
ffffffffc0a01000 t xfs_iget\t[xfs]
";

    #[test]
    fn resolves_offsets_in_text_symbols() {
        let k = Kallsyms::parse(SAMPLE);
        assert!(k.usable());
        assert_eq!(k.resolve(0xffffffff816dccf9), "__d_alloc+0x29");
        assert_eq!(k.resolve(0xffffffff816dcf00), "d_alloc+0x0");
        assert_eq!(k.resolve(0xffffffffc0a01010), "xfs_iget+0x10 [xfs]");
        assert_eq!(k.resolve(0x1000), "0x1000");
        assert_eq!(k.resolve(0), "?");
        // Data symbols are not call sites.
        assert_eq!(k.resolve(0xffffffff82a00008), "0xffffffff82a00008");
    }

    #[test]
    fn restricted_kallsyms_is_unusable() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\n");
        assert!(!k.usable());
        assert_eq!(k.resolve(0xffffffff81000000), "0xffffffff81000000");
    }

    #[test]
    fn finds_functions_of_the_running_kernel() {
        assert!(has_function("__d_alloc") || has_function("d_alloc"), "kallsyms lists d_alloc");
        assert!(!has_function("memtrace_no_such_function"));
    }

    /// On this machine, as root: __d_alloc is a text symbol.
    #[test]
    fn running_kernel_has_d_alloc() {
        let k = Kallsyms::load();
        if !k.usable() {
            return; // not root, or kptr_restrict: addresses hidden
        }
        let addr = k.syms.iter().find(|s| s.1 == "__d_alloc").map(|s| s.0);
        if let Some(a) = addr {
            assert_eq!(k.resolve(a + 0x29), "__d_alloc+0x29");
        }
    }
}
