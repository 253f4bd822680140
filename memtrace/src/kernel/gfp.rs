//! GFP flag names as the running kernel prints them (the bit values move between kernel
//! versions): the table comes from the `__print_flags(REC->gfp_flags, ...)` of a kmem or
//! vmscan tracepoint's format file (the kernel's own `show_gfp_flags`, with every value
//! spelled as a C expression), evaluated here. Composite names (GFP_KERNEL,
//! GFP_HIGHUSER_MOVABLE...) come first, as in the kernel's `%pGg`: decoding takes each
//! name whose bits are all set, in table order. The one GFP table of every family.

use std::path::Path;

/// Ordered (mask, name) pairs.
#[derive(Debug, Clone, Default)]
pub struct Gfp {
    pub table: Vec<(u64, String)>,
}

/// Tracepoints whose format prints gfp_flags with the kernel's table, best first.
const SOURCES: [(&str, &str); 3] =
    [("kmem", "mm_page_alloc"), ("kmem", "kmalloc"), ("vmscan", "mm_vmscan_direct_reclaim_begin")];

impl Gfp {
    /// Reads the table from tracefs; empty when no source parses (then masks print as hex).
    pub fn load(tracefs: &Path) -> Gfp {
        for (cat, name) in SOURCES {
            let p = tracefs.join("events").join(cat).join(name).join("format");
            if let Ok(text) = std::fs::read_to_string(&p) {
                let g = Gfp::parse_format(&text);
                if !g.table.is_empty() {
                    return g;
                }
            }
        }
        log::info!("no gfp flag table in tracefs: gfp masks are printed as numbers");
        Gfp::default()
    }

    /// Extracts `{expr, "NAME"}` pairs from the first `__print_flags(REC->gfp_flags`.
    pub fn parse_format(text: &str) -> Gfp {
        const CALL: &str = "__print_flags(REC->gfp_flags";
        let Some(start) = text.find(CALL) else { return Gfp::default() };
        // Past the flags argument and the delimiter string: `, "|", `.
        let mut rest = &text[start + CALL.len()..];
        let Some(delim_end) = rest.find('"').and_then(|a| rest[a + 1..].find('"').map(|b| a + b + 2))
        else {
            return Gfp::default();
        };
        rest = &rest[delim_end..];
        let mut table = Vec::new();
        // Entries are `{EXPR, "NAME"}` separated by commas; expressions hold neither braces
        // nor quotes. The list ends at the call's closing parenthesis.
        loop {
            rest = rest.trim_start_matches([',', ' ', '\t', '\n']);
            if !rest.starts_with('{') {
                break;
            }
            let Some(close) = rest.find('}') else { break };
            let entry = &rest[1..close];
            rest = &rest[close + 1..];
            // The table ends with a `{ 0, NULL }` sentinel.
            let Some(q) = entry.find('"') else { break };
            let expr = entry[..q].trim().trim_end_matches(',');
            let name = entry[q + 1..].split('"').next().unwrap_or("").to_string();
            match eval(expr) {
                Some(mask) if mask != 0 && !name.is_empty() => table.push((mask, name)),
                Some(_) => {}
                None => {
                    log::debug!("gfp table: cannot evaluate {expr:?} for {name}");
                    return Gfp::default();
                }
            }
        }
        Gfp { table }
    }

    /// The kernel's rendering: "GFP_KERNEL|__GFP_NOWARN", "none" for 0, hex when unknown.
    pub fn render(&self, mask: u64) -> String {
        if mask == 0 {
            return "none".into();
        }
        self.decode(mask).join("|")
    }

    /// Names of the flags in `mask`, composites first; leftover bits as one hex value.
    pub fn decode(&self, mask: u64) -> Vec<String> {
        let mut left = mask;
        let mut out = Vec::new();
        for (m, name) in &self.table {
            if left == 0 {
                break;
            }
            if left & m == *m {
                left &= !m;
                out.push(name.clone());
            }
        }
        if left != 0 {
            out.push(format!("{left:#x}"));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(u64),
    Ident,
    Op(&'static str),
    Open,
    Close,
}

fn lex(s: &str) -> Option<Vec<Tok>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' => i += 1,
            b'(' => {
                v.push(Tok::Open);
                i += 1;
            }
            b')' => {
                v.push(Tok::Close);
                i += 1;
            }
            b'|' | b'&' | b'~' | b'^' | b'+' | b'-' | b'*' => {
                v.push(Tok::Op(match c {
                    b'|' => "|",
                    b'&' => "&",
                    b'~' => "~",
                    b'^' => "^",
                    b'+' => "+",
                    b'-' => "-",
                    _ => "*",
                }));
                i += 1;
            }
            b'<' | b'>' if b.get(i + 1) == Some(&c) => {
                v.push(Tok::Op(if c == b'<' { "<<" } else { ">>" }));
                i += 2;
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                let lit = s[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
                let n = if let Some(h) = lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                    u64::from_str_radix(h, 16).ok()?
                } else {
                    lit.parse().ok()?
                };
                v.push(Tok::Num(n));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                v.push(Tok::Ident);
            }
            _ => return None,
        }
    }
    Some(v)
}

/// Evaluates an integer C expression of literals, casts, `| & ^ ~ << >> + - *` and
/// parentheses (what the kernel's format files print for flag values). None when it is
/// anything else, or nested deeper than [`MAX_NESTING`].
pub fn eval(s: &str) -> Option<u64> {
    let toks = lex(s)?;
    let mut p = Parser { t: &toks, i: 0, depth: 0 };
    let v = p.binary(0)?;
    (p.i == toks.len()).then_some(v)
}

/// Parentheses, casts and unary operators nested deeper than this are refused (the
/// kernel's deepest flag expressions nest about 10 deep); the parser recurses once per
/// level, so this bounds its stack.
const MAX_NESTING: usize = 64;

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
    /// Current nesting of unary operators, casts and parentheses.
    depth: usize,
}

const LEVELS: [&[&str]; 6] = [&["|"], &["^"], &["&"], &["<<", ">>"], &["+", "-"], &["*"]];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }

    fn binary(&mut self, level: usize) -> Option<u64> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut v = self.binary(level + 1)?;
        while let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            if !LEVELS[level].contains(&op) {
                break;
            }
            self.i += 1;
            let r = self.binary(level + 1)?;
            v = match op {
                "|" => v | r,
                "^" => v ^ r,
                "&" => v & r,
                "<<" => v.checked_shl(u32::try_from(r).ok()?)?,
                ">>" => v.checked_shr(u32::try_from(r).ok()?)?,
                "+" => v.wrapping_add(r),
                "-" => v.wrapping_sub(r),
                _ => v.wrapping_mul(r),
            };
        }
        Some(v)
    }

    /// A parenthesised list of identifiers (`( unsigned long)`, `(gfp_t)`) is a cast.
    fn cast_len(&self) -> Option<usize> {
        if self.peek() != Some(&Tok::Open) {
            return None;
        }
        let mut j = self.i + 1;
        let mut idents = 0;
        while let Some(t) = self.t.get(j) {
            match t {
                Tok::Ident => idents += 1,
                Tok::Op("*") => {}
                Tok::Close if idents > 0 => return Some(j + 1 - self.i),
                _ => return None,
            }
            j += 1;
        }
        None
    }

    fn unary(&mut self) -> Option<u64> {
        if self.depth >= MAX_NESTING {
            return None;
        }
        self.depth += 1;
        let v = self.unary_inner();
        self.depth -= 1;
        v
    }

    fn unary_inner(&mut self) -> Option<u64> {
        if let Some(n) = self.cast_len() {
            self.i += n;
            return self.unary();
        }
        match self.peek()?.clone() {
            Tok::Op("~") => {
                self.i += 1;
                Some(!self.unary()?)
            }
            Tok::Op("-") => {
                self.i += 1;
                Some(self.unary()?.wrapping_neg())
            }
            Tok::Num(n) => {
                self.i += 1;
                Some(n)
            }
            Tok::Open => {
                self.i += 1;
                let v = self.binary(0)?;
                (self.peek() == Some(&Tok::Close)).then_some(())?;
                self.i += 1;
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_kernel_flag_expressions() {
        assert_eq!(eval("( unsigned long)((( gfp_t)((((1UL))) << (10))))"), Some(0x400));
        assert_eq!(eval("(( gfp_t)0x400u)|(( gfp_t)0x800u)"), Some(0xc00));
        assert_eq!(
            eval("((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))))"),
            Some(0xcc0),
            "GFP_KERNEL"
        );
        assert_eq!(eval("(0xff & ~(( gfp_t)0x0fu))"), Some(0xf0));
        assert_eq!(eval("1 << 3 | 1"), Some(9));
        assert_eq!(eval("(1"), None);
        assert_eq!(eval("foo"), None);
    }

    /// A format file in the 6.1 style (hex constants) and one in the 6.10+ style (shifted
    /// bits), both reduced to a few entries.
    #[test]
    fn parses_format_tables_and_decodes_greedily() {
        let old = r#"print fmt: "gfp_flags=%s", (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((((( gfp_t)(0x400u|0x800u)) | (( gfp_t)0x40u) | (( gfp_t)0x80u) | (( gfp_t)0x100000u)) | (( gfp_t)0x02u)) | (( gfp_t)0x08u) | (( gfp_t)0)), "GFP_HIGHUSER_MOVABLE"}, {( unsigned long)((( gfp_t)(0x400u|0x800u)) | (( gfp_t)0x40u) | (( gfp_t)0x80u)), "GFP_KERNEL"}, {( unsigned long)(( gfp_t)0x40000u), "__GFP_COMP"}, {( unsigned long)(( gfp_t)0x2000u), "__GFP_NOWARN"}, { 0, ((void *)0) } ) : "none""#;
        let g = Gfp::parse_format(old);
        assert_eq!(g.table.len(), 4, "{g:?}");
        assert_eq!(g.table[0], (0x100cca, "GFP_HIGHUSER_MOVABLE".to_string()));
        assert_eq!(g.decode(0x140cca), ["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"]);
        assert_eq!(g.decode(0xcc0), ["GFP_KERNEL"]);
        assert_eq!(g.decode(0xcc0 | 0x2000 | 0x1), ["GFP_KERNEL", "__GFP_NOWARN", "0x1"]);
        assert!(g.decode(0).is_empty());
        assert_eq!(g.render(0), "none");
        assert_eq!(g.render(0xcc0 | 0x2000), "GFP_KERNEL|__GFP_NOWARN");
        assert_eq!(Gfp::default().render(0xcc0), "0xcc0");
        assert!(Gfp::parse_format("print fmt: \"x\"").table.is_empty());
    }

    /// This machine's kernel: the table parses and names GFP_KERNEL the way the kernel does.
    #[test]
    fn reads_this_kernels_table() {
        let Some(t) = crate::kernel::tracefs::find() else {
            assert!(std::env::var_os("CI").is_none(), "CI machines have tracefs");
            return;
        };
        let g = Gfp::load(&t);
        if g.table.is_empty() {
            // Not readable without root.
            return;
        }
        assert!(g.table.iter().any(|(_, n)| n == "GFP_KERNEL"));
        let kernel = g.table.iter().find(|(_, n)| n == "GFP_KERNEL").unwrap().0;
        assert_eq!(g.decode(kernel), ["GFP_KERNEL"]);
        let movable = g.table.iter().find(|(_, n)| n == "GFP_HIGHUSER_MOVABLE").unwrap().0;
        assert_eq!(g.decode(movable), ["GFP_HIGHUSER_MOVABLE"]);
    }
}
