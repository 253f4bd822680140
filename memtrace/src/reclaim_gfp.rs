//! GFP flag names. The bit values move between kernel versions, so the table is read
//! from the running kernel: the `print fmt` of vmscan:mm_vmscan_direct_reclaim_begin
//! holds the kernel's own `__print_flags(gfp_flags, "|", {value, "NAME"}, ...)` table,
//! whose values are C constant expressions (casts, shifts, or, and, not).

use std::path::Path;

/// (mask, name) in the kernel's order: composite names (GFP_KERNEL) before single bits.
#[derive(Clone, Debug, Default)]
pub struct GfpTable {
    pub flags: Vec<(u64, String)>,
}

impl GfpTable {
    /// The table of the running kernel, or an empty one (masks printed in hex).
    pub fn load(tracefs: Option<&Path>) -> GfpTable {
        let Some(t) = tracefs else { return GfpTable::default() };
        let p = t.join("events/vmscan/mm_vmscan_direct_reclaim_begin/format");
        std::fs::read_to_string(p).map(|s| GfpTable::parse(&s)).unwrap_or_default()
    }

    pub fn parse(format: &str) -> GfpTable {
        let Some(start) = format.find("__print_flags(") else { return GfpTable::default() };
        let body = &format[start..];
        let mut flags = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else { break };
            let entry = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            let Some((expr, name)) = entry.rsplit_once(',') else { continue };
            let name = name.trim();
            let Some(name) = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) else {
                break; // the terminator { 0, NULL }
            };
            match eval(expr) {
                Some(v) if v != 0 => flags.push((v, name.to_string())),
                _ => return GfpTable::default(), // an expression we do not understand
            }
        }
        GfpTable { flags }
    }

    /// The kernel's rendering: names whose whole mask is set, in table order, each
    /// clearing its bits; leftover bits in hex.
    pub fn render(&self, mask: u64) -> String {
        if mask == 0 {
            return "none".into();
        }
        let mut left = mask;
        let mut names = Vec::new();
        for (v, name) in &self.flags {
            if left & v == *v {
                names.push(name.clone());
                left &= !v;
            }
        }
        if left != 0 {
            names.push(format!("{left:#x}"));
        }
        names.join("|")
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(u64),
    Ident,
    Open,
    Close,
    Shl,
    Or,
    And,
    Not,
}

fn lex(s: &str) -> Option<Vec<Tok>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' => i += 1,
            b'(' => (out.push(Tok::Open), i += 1).1,
            b')' => (out.push(Tok::Close), i += 1).1,
            b'|' => (out.push(Tok::Or), i += 1).1,
            b'&' => (out.push(Tok::And), i += 1).1,
            b'~' => (out.push(Tok::Not), i += 1).1,
            b'<' if b.get(i + 1) == Some(&b'<') => (out.push(Tok::Shl), i += 2).1,
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let lit = s[start..i].trim_end_matches(['u', 'U', 'l', 'L']);
                let v = match lit.strip_prefix("0x").or_else(|| lit.strip_prefix("0X")) {
                    Some(h) => u64::from_str_radix(h, 16).ok()?,
                    None => lit.parse().ok()?,
                };
                out.push(Tok::Num(v));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Evaluates a C constant expression of the kind __print_flags tables hold.
fn eval(s: &str) -> Option<u64> {
    let toks = lex(s)?;
    let mut p = Parser { t: &toks, i: 0 };
    let v = p.or()?;
    (p.i == toks.len()).then_some(v)
}

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }

    fn or(&mut self) -> Option<u64> {
        let mut v = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.i += 1;
            v |= self.and()?;
        }
        Some(v)
    }

    fn and(&mut self) -> Option<u64> {
        let mut v = self.shift()?;
        while self.peek() == Some(&Tok::And) {
            self.i += 1;
            v &= self.shift()?;
        }
        Some(v)
    }

    fn shift(&mut self) -> Option<u64> {
        let mut v = self.unary()?;
        while self.peek() == Some(&Tok::Shl) {
            self.i += 1;
            let n = self.unary()?;
            v = v.checked_shl(u32::try_from(n).ok()?)?;
        }
        Some(v)
    }

    fn unary(&mut self) -> Option<u64> {
        match self.peek()?.clone() {
            Tok::Not => {
                self.i += 1;
                // gfp_t is 32 bits: ~ within unsigned int.
                Some(!self.unary()? & 0xffff_ffff)
            }
            Tok::Num(v) => {
                self.i += 1;
                Some(v)
            }
            Tok::Open => {
                self.i += 1;
                if self.peek() == Some(&Tok::Ident) {
                    // A cast: "( unsigned long)", "( gfp_t)".
                    while self.peek() == Some(&Tok::Ident) {
                        self.i += 1;
                    }
                    if self.peek() != Some(&Tok::Close) {
                        return None;
                    }
                    self.i += 1;
                    return self.unary();
                }
                let v = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return None;
                }
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

    /// The 6.18 table, abridged (shift form).
    const FMT_618: &str = r#"print fmt: "order=%d gfp_flags=%s", REC->order, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))) | (( gfp_t)((((1UL))) << (3))) | (( gfp_t)0)), "GFP_HIGHUSER_MOVABLE"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)((( gfp_t)((((1UL))) << (11))) | (( gfp_t)((((1UL))) << (13)))), "GFP_NOWAIT"}, {( unsigned long)(( gfp_t)((((1UL))) << (10))), "__GFP_DIRECT_RECLAIM"}, {( unsigned long)(( gfp_t)((((1UL))) << (8))), "__GFP_ZERO"}, {( unsigned long)(( gfp_t)((((1UL))) << (18))), "__GFP_COMP"}, { 0, ((void *)0) } ) : "none""#;

    /// The older literal form (5.x/6.1).
    const FMT_61: &str = r#"print fmt: "order=%d gfp_flags=%s", REC->order, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {(unsigned long)(((( gfp_t)0x400u)|(( gfp_t)0x800u)) | (( gfp_t)0x40u) | (( gfp_t)0x80u)), "GFP_KERNEL"}, {(unsigned long)(( gfp_t)0x100u), "__GFP_ZERO"}, {(unsigned long)(( gfp_t)~0x400u & 0xff), "ODD"}, { 0, ((void *)0) } ) : "none""#;

    #[test]
    fn parses_shift_form() {
        let t = GfpTable::parse(FMT_618);
        assert_eq!(t.flags.len(), 6);
        assert_eq!(t.flags[0], (0x100cca, "GFP_HIGHUSER_MOVABLE".to_string()));
        assert_eq!(t.flags[1], (0xcc0, "GFP_KERNEL".to_string()));
        assert_eq!(t.render(0x100cca), "GFP_HIGHUSER_MOVABLE");
        assert_eq!(t.render(0x140cca), "GFP_HIGHUSER_MOVABLE|__GFP_COMP");
        assert_eq!(t.render(0xcc0 | 0x100 | 0x1_0000_0000), "GFP_KERNEL|__GFP_ZERO|0x100000000");
        assert_eq!(t.render(0), "none");
    }

    #[test]
    fn parses_literal_form() {
        let t = GfpTable::parse(FMT_61);
        assert_eq!(t.flags[0], (0xcc0, "GFP_KERNEL".to_string()));
        assert_eq!(t.flags[1], (0x100, "__GFP_ZERO".to_string()));
        assert_eq!(t.flags[2].0, 0xff);
    }

    #[test]
    fn unknown_syntax_gives_hex_only() {
        let t = GfpTable::parse(r#"__print_flags(REC->gfp_flags, "|", {(unsigned long)(1 + 2), "X"}, { 0, NULL })"#);
        assert!(t.flags.is_empty());
        assert_eq!(t.render(0x10), "0x10");
    }

    #[test]
    fn this_kernel_table_names_its_bits() {
        let Some(tracefs) = crate::tracefs::find() else { return };
        let t = GfpTable::load(Some(&tracefs));
        if !tracefs.join("events/vmscan/mm_vmscan_direct_reclaim_begin").exists() {
            return;
        }
        assert!(t.flags.iter().any(|(_, n)| n == "GFP_KERNEL"), "{t:?}");
        let kernel = t.flags.iter().find(|(_, n)| n == "GFP_KERNEL").unwrap().0;
        assert_eq!(t.render(kernel), "GFP_KERNEL");
    }
}
