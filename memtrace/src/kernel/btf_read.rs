//! Reading and checking a BTF blob (the kernel's Documentation/bpf/btf.rst): the header,
//! every type record, then the type graph. Whatever the bytes, this returns an error and
//! never panics: every offset is bounds-checked and every size is checked arithmetic.
//!
//! It also makes, in a simpler form, the checks the kernel makes before it accepts BTF
//! (`btf_check_all_metas` and the resolve pass of kernel/bpf/btf.c): known kinds and no
//! reserved bits, type ids in range, a name where the kind needs one and none where it
//! must not have one, identifiers made of identifier characters, sizes that fit in u32,
//! members that start inside their struct, no by-value cycle (a struct that contains
//! itself) and no chain of pointers, typedefs and qualifiers without an end. Any BTF the
//! kernel accepted passes; a corrupt file almost never does; and once a blob has passed,
//! the queries of [`super::btf::Btf`] cannot loop.

use super::btf::{BtfError, Kind, Member, Type};

pub const MAGIC: u16 = 0xeb9f;
/// The longest chain of pointers, typedefs and qualifiers, and the deepest by-value
/// nesting (a struct in a struct, an array of arrays), that is accepted and followed. The
/// kernel's own resolve stack stops at 32 (MAX_RESOLVE_DEPTH).
pub const MAX_DEPTH: usize = 64;
/// The kernel's limits: BTF_MAX_TYPE, and KSYM_NAME_LEN for a name.
const MAX_TYPES: usize = 0xfffff;
const MAX_NAME_LEN: usize = 512;
const HEADER_LEN: usize = 24;

fn malformed(s: impl Into<String>) -> BtfError {
    BtfError::Malformed(s.into())
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    off.checked_add(4)
        .and_then(|end| b.get(off..end))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed(format!("truncated at byte {off}")))
}

/// The type and string sections of a BTF blob, after the header's checks.
fn sections(data: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    match data.get(0..2).and_then(|s| <[u8; 2]>::try_from(s).ok()) {
        Some(m) if u16::from_le_bytes(m) == MAGIC => {}
        Some(m) if u16::from_be_bytes(m) == MAGIC => {
            return Err(malformed(
                "big-endian BTF: it describes a kernel of another architecture, not this \
                 little-endian one",
            ));
        }
        _ => return Err(malformed("not BTF (no BTF magic number at the start)")),
    }
    match (data.get(2), data.get(3)) {
        (Some(1), Some(0)) => {}
        (Some(1), Some(f)) => return Err(malformed(format!("unsupported header flags {f:#x}"))),
        (Some(v), _) => return Err(malformed(format!("unsupported BTF version {v}"))),
        _ => return Err(malformed("truncated header")),
    }
    let word = |i: usize| u32_at(data, 4 + 4 * i).map(|v| v as usize);
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (word(0)?, word(1)?, word(2)?, word(3)?, word(4)?);
    if hdr_len < HEADER_LEN || hdr_len > data.len() {
        return Err(malformed(format!("header length {hdr_len} out of range")));
    }
    let section = |off: usize, len: usize, what: &str| {
        let start = hdr_len.checked_add(off);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= data.len() => Ok(s..e),
            _ => Err(malformed(format!("{what} section out of bounds"))),
        }
    };
    let types = section(type_off, type_len, "type")?;
    let strings = section(str_off, str_len, "string")?;
    if type_off % 4 != 0 || type_len % 4 != 0 {
        return Err(malformed("type section not 4-byte aligned"));
    }
    if types.start < strings.end && strings.start < types.end {
        return Err(malformed("type and string sections overlap"));
    }
    let strs = data.get(strings).unwrap_or_default();
    if strs.first() != Some(&0) || strs.last() != Some(&0) {
        return Err(malformed("string section does not start and end with a NUL"));
    }
    Ok((data.get(types).unwrap_or_default(), strs))
}

/// What names a kind's name may be.
#[derive(Clone, Copy)]
enum NameRule {
    /// No name at all (pointers, qualifiers, arrays, function prototypes).
    None,
    /// An identifier.
    Ident,
    /// An identifier, or nothing (anonymous structs, members, parameters).
    OptionalIdent,
    /// Printable ASCII, maybe with spaces ("long unsigned int", ".data..percpu").
    Printable,
}

fn is_ident(s: &str) -> bool {
    // The kernel allows [A-Za-z_][A-Za-z0-9_]*; '.' and '$' are accepted too, to stay on
    // the lenient side of it.
    let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'$';
    s.bytes().next().is_some_and(|c| !c.is_ascii_digit()) && s.bytes().all(ok)
}

struct Strings<'a>(&'a [u8]);

impl Strings<'_> {
    /// The name at `off`, checked against `rule`; `what` names it in errors.
    fn name(
        &self,
        off: u32,
        rule: NameRule,
        what: &dyn Fn() -> String,
    ) -> Result<String, BtfError> {
        let tail = self
            .0
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("{}: name offset {off} out of bounds", what())))?;
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        let bytes = tail.get(..end).unwrap_or_default();
        let s = std::str::from_utf8(bytes).unwrap_or("\u{fffd}");
        let valid = match rule {
            NameRule::None => s.is_empty(),
            NameRule::Ident => is_ident(s),
            NameRule::OptionalIdent => s.is_empty() || is_ident(s),
            NameRule::Printable => !s.is_empty() && s.bytes().all(|c| (0x20..0x7f).contains(&c)),
        };
        if !valid || s.len() > MAX_NAME_LEN {
            return Err(malformed(format!("{}: invalid name {:?}", what(), truncate(s))));
        }
        Ok(s.to_string())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

fn kind_of(k: u32) -> Option<Kind> {
    Some(match k {
        1 => Kind::Int,
        2 => Kind::Ptr,
        3 => Kind::Array,
        4 => Kind::Struct,
        5 => Kind::Union,
        6 => Kind::Enum,
        7 => Kind::Fwd,
        8 => Kind::Typedef,
        9 => Kind::Volatile,
        10 => Kind::Const,
        11 => Kind::Restrict,
        12 => Kind::Func,
        13 => Kind::FuncProto,
        14 => Kind::Var,
        15 => Kind::Datasec,
        16 => Kind::Float,
        17 => Kind::DeclTag,
        18 => Kind::TypeTag,
        19 => Kind::Enum64,
        _ => return None,
    })
}

/// A BTF blob from its type section and string section, behind a version-1 header (for
/// the unit tests and the fuzz driver, which build blobs by hand).
#[cfg(test)]
pub(crate) fn assemble(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    blob.extend_from_slice(&MAGIC.to_le_bytes());
    blob.extend_from_slice(&[1, 0]);
    for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        blob.extend_from_slice(&v.to_le_bytes());
    }
    blob.extend_from_slice(types);
    blob.extend_from_slice(strings);
    blob
}

/// Kinds whose `size_or_type` is a type id.
fn refers(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Ptr
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::TypeTag
            | Kind::Func
            | Kind::FuncProto
            | Kind::Var
            | Kind::DeclTag
    )
}

/// Reads and checks every type; index 0 is void.
pub fn read(data: &[u8]) -> Result<Vec<Type>, BtfError> {
    let (tsec, strings) = sections(data)?;
    let strs = Strings(strings);
    let mut types = vec![Type::void()];
    // References not kept in `Type`: array index types, datasec variables.
    let mut refs: Vec<(u32, u32)> = Vec::new();
    let mut p = 0usize;
    while p < tsec.len() {
        if types.len() > MAX_TYPES {
            return Err(malformed(format!("more than {MAX_TYPES} types")));
        }
        let id = types.len() as u32;
        let (name_off, info, size_or_type) =
            (u32_at(tsec, p)?, u32_at(tsec, p + 4)?, u32_at(tsec, p + 8)?);
        p += 12;
        let kind = kind_of((info >> 24) & 0x1f)
            .ok_or_else(|| malformed(format!("type {id}: unknown kind {}", (info >> 24) & 0x1f)))?;
        if info & 0x60ff_0000 != 0 {
            return Err(malformed(format!("type {id}: reserved info bits set ({info:#x})")));
        }
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        let what = || format!("type {id} ({kind:?})");
        let bad = |why: &str| Err(malformed(format!("type {id} ({kind:?}): {why}")));
        let rule = match kind {
            Kind::Ptr
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::Array
            | Kind::FuncProto => NameRule::None,
            Kind::Typedef | Kind::Fwd | Kind::Func | Kind::Var => NameRule::Ident,
            Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 => NameRule::OptionalIdent,
            _ => NameRule::Printable,
        };
        let name = strs.name(name_off, rule, &what)?;
        let item = match kind {
            Kind::Struct | Kind::Union | Kind::Enum64 | Kind::Datasec => 12,
            Kind::Enum | Kind::FuncProto => 8,
            _ => 0,
        };
        let fixed = match kind {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            _ => 0,
        };
        let body = vlen * item + fixed;
        if p.checked_add(body).is_none_or(|end| end > tsec.len()) {
            return bad(&format!("{vlen} items run past the type section"));
        }
        let has_items = item != 0 || kind == Kind::Func;
        if vlen != 0 && !has_items {
            return bad(&format!("vlen {vlen} on a kind without items"));
        }
        let mut t = Type { name, kind, size_or_type, ..Type::void() };
        match kind {
            Kind::Int => {
                let enc = u32_at(tsec, p)?;
                let (bits, off) = (enc & 0xff, (enc >> 16) & 0xff);
                if ![1, 2, 4, 8, 16].contains(&size_or_type)
                    || bits > 128
                    || off + bits > size_or_type * 8
                {
                    return bad(&format!("bad int size {size_or_type} / encoding {enc:#x}"));
                }
            }
            Kind::Float if ![2, 4, 8, 12, 16].contains(&size_or_type) => {
                return bad(&format!("bad float size {size_or_type}"));
            }
            Kind::Enum | Kind::Enum64 if ![1, 2, 4, 8].contains(&size_or_type) => {
                return bad(&format!("bad enum size {size_or_type}"));
            }
            Kind::Func if vlen > 2 => return bad(&format!("bad linkage {vlen}")),
            Kind::Array => {
                let (elem, index, n) =
                    (u32_at(tsec, p)?, u32_at(tsec, p + 4)?, u32_at(tsec, p + 8)?);
                if elem == 0 || index == 0 {
                    return bad("array of void or indexed by void");
                }
                t.array = Some((elem, n));
                refs.push((id, index));
            }
            Kind::Struct | Kind::Union => {
                for i in 0..vlen {
                    let q = p + i * 12;
                    let off = u32_at(tsec, q + 8)?;
                    let member = || format!("type {id} ({kind:?}) member {i}");
                    let bit_offset = if kflag { off & 0xff_ffff } else { off };
                    if bit_offset / 8 > size_or_type {
                        return Err(malformed(format!(
                            "{}: offset {} past the end ({size_or_type} bytes)",
                            member(),
                            bit_offset / 8
                        )));
                    }
                    t.members.push(Member {
                        name: strs.name(u32_at(tsec, q)?, NameRule::OptionalIdent, &member)?,
                        type_id: u32_at(tsec, q + 4)?,
                        bit_offset,
                    });
                }
            }
            Kind::Enum | Kind::Enum64 => {
                for i in 0..vlen {
                    let q = p + i * item;
                    let lo = u32_at(tsec, q + 4)?;
                    let v = if kind == Kind::Enum {
                        i64::from(lo as i32)
                    } else {
                        (u64::from(lo) | u64::from(u32_at(tsec, q + 8)?) << 32) as i64
                    };
                    let what = || format!("type {id} ({kind:?}) value {i}");
                    t.values.push((strs.name(u32_at(tsec, q)?, NameRule::Ident, &what)?, v));
                }
            }
            Kind::FuncProto => {
                for i in 0..vlen {
                    let q = p + i * 8;
                    let what = || format!("type {id} (FuncProto) parameter {i}");
                    let name = strs.name(u32_at(tsec, q)?, NameRule::OptionalIdent, &what)?;
                    t.params.push((name, u32_at(tsec, q + 4)?));
                }
            }
            Kind::Datasec => {
                for i in 0..vlen {
                    refs.push((id, u32_at(tsec, p + i * 12)?));
                }
            }
            _ => {}
        }
        p += body;
        types.push(t);
    }
    check_graph(&types, &refs)?;
    Ok(types)
}

/// Type ids in range, functions with prototypes, chains that end, sizes without cycles.
fn check_graph(types: &[Type], refs: &[(u32, u32)]) -> Result<(), BtfError> {
    let n = types.len();
    let in_range = |from: usize, to: u32| {
        if (to as usize) < n {
            Ok(())
        } else {
            Err(malformed(format!("type {from}: refers to type {to}, past the last ({})", n - 1)))
        }
    };
    for &(from, to) in refs {
        in_range(from as usize, to)?;
    }
    for (id, t) in types.iter().enumerate() {
        if refers(t.kind) {
            in_range(id, t.size_or_type)?;
        }
        if let Some((elem, _)) = t.array {
            in_range(id, elem)?;
        }
        for m in &t.members {
            in_range(id, m.type_id)?;
        }
        for (_, ty) in &t.params {
            in_range(id, *ty)?;
        }
        if t.kind == Kind::Func
            && types.get(t.size_or_type as usize).map(|p| p.kind) != Some(Kind::FuncProto)
        {
            return Err(malformed(format!("type {id}: a function without a prototype")));
        }
    }
    // Chains of pointers, typedefs and qualifiers end within MAX_DEPTH steps.
    let chain = |k: Kind| {
        matches!(
            k,
            Kind::Ptr
                | Kind::Typedef
                | Kind::Volatile
                | Kind::Const
                | Kind::Restrict
                | Kind::TypeTag
        )
    };
    for (id, t) in types.iter().enumerate() {
        let mut cur = t;
        let mut steps = 0;
        while chain(cur.kind) {
            steps += 1;
            match types.get(cur.size_or_type as usize) {
                Some(next) if steps <= MAX_DEPTH => cur = next,
                _ => {
                    return Err(malformed(format!(
                        "type {id}: a reference chain that does not end"
                    )))
                }
            }
        }
    }
    let mut sizes = Sizes { types, state: vec![State::New; n] };
    for id in 0..n {
        sizes.size(id as u32, 0)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    New,
    Busy,
    Done(Option<u32>),
}

/// Sizes of every type, following by-value edges only (pointers end a walk): a cycle, a
/// nesting deeper than MAX_DEPTH, a member without a size or past its struct's end, and
/// an array larger than u32 are errors.
struct Sizes<'a> {
    types: &'a [Type],
    state: Vec<State>,
}

impl Sizes<'_> {
    fn size(&mut self, id: u32, depth: usize) -> Result<Option<u32>, BtfError> {
        let err = |why: String| Err(malformed(format!("type {id}: {why}")));
        match self.state.get(id as usize) {
            Some(State::Done(s)) => return Ok(*s),
            Some(State::Busy) => return err("contains itself (a type cycle)".into()),
            Some(State::New) if depth <= MAX_DEPTH => {}
            Some(State::New) => return err(format!("nested more than {MAX_DEPTH} deep")),
            None => return err("no such type".into()),
        }
        let Some(t) = self.types.get(id as usize) else { return err("no such type".into()) };
        if let Some(s) = self.state.get_mut(id as usize) {
            *s = State::Busy;
        }
        let size = match t.kind {
            Kind::Int | Kind::Enum | Kind::Enum64 | Kind::Float => Some(t.size_or_type),
            Kind::Ptr => Some(8),
            Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                self.size(t.size_or_type, depth + 1)?
            }
            Kind::Array => {
                let (elem, n) = t.array.unwrap_or_default();
                let Some(e) = self.size(elem, depth + 1)? else {
                    return err("an array of elements without a size".into());
                };
                match e.checked_mul(n) {
                    Some(s) => Some(s),
                    None => return err(format!("array of {n} x {e} bytes overflows")),
                }
            }
            Kind::Struct | Kind::Union => {
                for (i, m) in t.members.iter().enumerate() {
                    let Some(ms) = self.size(m.type_id, depth + 1)? else {
                        return err(format!("member {i} has a type without a size"));
                    };
                    let by_value = self.types.get(m.type_id as usize).is_some_and(|mt| {
                        matches!(mt.kind, Kind::Struct | Kind::Union | Kind::Array)
                    });
                    let end = (m.bit_offset / 8).checked_add(ms);
                    if by_value && end.is_none_or(|e| e > t.size_or_type) {
                        return err(format!(
                            "member {i} ends past the struct's {} bytes",
                            t.size_or_type
                        ));
                    }
                }
                Some(t.size_or_type)
            }
            _ => None,
        };
        if let Some(s) = self.state.get_mut(id as usize) {
            *s = State::Done(size);
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::{
        btf::{Btf, Kind, Member, Type},
        fuzz::btf::encode,
    };

    fn parse(types: &[Type]) -> Result<Btf, String> {
        Btf::parse(&encode(types)).map_err(|e| e.to_string())
    }

    fn int() -> Type {
        Type { name: "int".into(), kind: Kind::Int, size_or_type: 4, ..Type::void() }
    }

    /// Each malformed graph the reader refuses: the ones that made the queries loop or
    /// overflow before it checked them.
    #[test]
    fn the_reader_refuses_cycles_overflows_and_dangling_ids() {
        let member = |type_id, bit_offset| Member { name: "m".into(), type_id, bit_offset };
        let strukt = |size, members| Type {
            name: "s".into(),
            kind: Kind::Struct,
            size_or_type: size,
            members,
            ..Type::void()
        };
        let cases: Vec<(&str, Vec<Type>, &str)> = vec![
            (
                "a struct containing itself",
                vec![Type::void(), strukt(8, vec![member(1, 0)])],
                "cycle",
            ),
            (
                "a typedef of itself",
                vec![
                    Type::void(),
                    Type { name: "t".into(), kind: Kind::Typedef, size_or_type: 1, ..Type::void() },
                ],
                "does not end",
            ),
            (
                "a pointer to itself",
                vec![Type::void(), Type { kind: Kind::Ptr, size_or_type: 1, ..Type::void() }],
                "does not end",
            ),
            (
                "an array of 2^31 ints (the u32 overflow of size_of)",
                vec![
                    Type::void(),
                    int(),
                    Type { kind: Kind::Array, array: Some((1, 1 << 31)), ..Type::void() },
                ],
                "overflows",
            ),
            (
                "a member of a type that does not exist",
                vec![Type::void(), strukt(8, vec![member(9, 0)])],
                "past the last",
            ),
            (
                "a member past its struct's end",
                vec![Type::void(), int(), strukt(8, vec![member(1, 8 * 4096)])],
                "past the end",
            ),
            (
                "a member of a struct larger than its container",
                vec![
                    Type::void(),
                    int(),
                    strukt(4, vec![member(3, 0)]),
                    Type { kind: Kind::Array, array: Some((1, 4)), ..Type::void() },
                ],
                "ends past",
            ),
            (
                "a struct name that is no identifier",
                vec![
                    Type::void(),
                    Type {
                        name: "a b".into(),
                        kind: Kind::Struct,
                        size_or_type: 0,
                        ..Type::void()
                    },
                ],
                "invalid name",
            ),
        ];
        for (what, types, needle) in cases {
            let e = parse(&types).err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(e.contains(needle), "{what}: {e}");
        }
        // A deep but finite chain of typedefs is fine up to the limit.
        let mut chain = vec![Type::void(), int()];
        for i in 0..60 {
            chain.push(Type {
                name: format!("t{i}"),
                kind: Kind::Typedef,
                size_or_type: chain.len() as u32 - 1,
                ..Type::void()
            });
        }
        let btf = parse(&chain).unwrap();
        assert_eq!(btf.size_of(chain.len() as u32 - 1), Some(4));
    }
}
