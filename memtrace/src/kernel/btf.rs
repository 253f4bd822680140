//! A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux): enough to find struct
//! member offsets (through anonymous structs and unions), sizes, enum values and the
//! prototypes of BTF tracepoints. The format is documented in the kernel's
//! Documentation/bpf/btf.rst; [`super::btf_read`] reads and checks it.
//!
//! Every query is bounded: walks stop after [`MAX_DEPTH`] steps and offsets and sizes are
//! checked arithmetic (None past u32), so even a type graph the reader did not check could
//! not make a query loop, overflow or panic.

use std::{
    collections::HashMap,
    io::Read as _,
    path::Path,
};

use super::btf_read::MAX_DEPTH;

/// No kernel's BTF comes near this (a 6.x vmlinux has about 6 MiB); a `--btf` that does
/// (/dev/zero, say) is not read to the end.
const MAX_FILE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
}

/// BTF kinds (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
}

#[derive(Clone, Debug)]
pub struct Type {
    pub name: String,
    pub kind: Kind,
    /// Size for int/struct/union/enum/float; referenced type for ptr/typedef/modifiers/func.
    pub size_or_type: u32,
    pub members: Vec<Member>,
    /// Enumerators (enum/enum64).
    pub values: Vec<(String, i64)>,
    /// Array: (element type, element count).
    pub array: Option<(u32, u32)>,
    /// Function prototype parameters: (name, type).
    pub params: Vec<(String, u32)>,
}

impl Type {
    /// Type 0, and the start of every type the reader builds.
    pub fn void() -> Type {
        Type {
            name: String::new(),
            kind: Kind::Void,
            size_or_type: 0,
            members: vec![],
            values: vec![],
            array: None,
            params: vec![],
        }
    }
}

pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let read = |source| BtfError::Read { path: path.display().to_string(), source };
        let mut data = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut data))
            .map_err(read)?;
        if data.len() as u64 > MAX_FILE {
            return Err(BtfError::Malformed(format!(
                "larger than {} MiB, far more than any kernel's BTF",
                MAX_FILE >> 20
            )));
        }
        Self::parse(&data)
    }

    /// Parses and checks a BTF blob (see [`super::btf_read`]): an error, never a panic.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let types = super::btf_read::read(data)?;
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if !t.name.is_empty() {
                by_name.entry(t.name.clone()).or_default().push(id as u32);
            }
        }
        Ok(Btf { types, by_name })
    }

    #[allow(clippy::len_without_is_empty, reason = "type 0 (void) always exists")]
    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// The id of the named type of this kind (the first definition; forward declarations
    /// are skipped when looking for a struct or union).
    pub fn find(&self, name: &str, kind: Kind) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| self.get(id).is_some_and(|t| t.kind == kind))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    pub fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.get(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type (after resolving typedefs); None when it has none or it
    /// does not fit in u32.
    pub fn size_of(&self, id: u32) -> Option<u32> {
        self.size_at(id, 0)
    }

    fn size_at(&self, id: u32, depth: usize) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.get(self.resolve(id))?;
        match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                Some(t.size_or_type)
            }
            Kind::Ptr => Some(8),
            Kind::Array => {
                let (elem, n) = t.array?;
                self.size_at(elem, depth + 1)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Finds `member` in the struct/union `id`, descending into anonymous members.
    /// Returns (byte offset, member type id).
    pub fn member_in(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        self.member_at(id, member, 0)
    }

    fn member_at(&self, id: u32, member: &str, depth: usize) -> Option<(u32, u32)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.get(self.resolve(id))?;
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            return None;
        }
        for m in &t.members {
            if m.name == member {
                return Some((m.bit_offset / 8, m.type_id));
            }
        }
        for m in &t.members {
            if m.name.is_empty() {
                if let Some((off, ty)) = self.member_at(m.type_id, member, depth + 1) {
                    return Some(((m.bit_offset / 8).checked_add(off)?, ty));
                }
            }
        }
        None
    }

    /// Byte offset and type of `path` ("a.b.c") inside `struct name`.
    pub fn offset_of(&self, name: &str, path: &str) -> Option<(u32, u32)> {
        let mut id = self
            .find(name, Kind::Struct)
            .or_else(|| self.find(name, Kind::Union))?;
        let mut total = 0u32;
        for part in path.split('.') {
            let (off, ty) = self.member_in(id, part)?;
            total = total.checked_add(off)?;
            id = ty;
        }
        Some((total, id))
    }

    /// The value of an enumerator, searched in every enum.
    pub fn enum_value(&self, enumerator: &str) -> Option<i64> {
        self.types
            .iter()
            .filter(|t| matches!(t.kind, Kind::Enum | Kind::Enum64))
            .find_map(|t| t.values.iter().find(|(n, _)| n == enumerator).map(|&(_, v)| v))
    }

    /// A printable name for a type: "struct task_struct *", "int", ...
    pub fn type_name(&self, id: u32) -> String {
        self.name_at(id, 0)
    }

    fn name_at(&self, id: u32, depth: usize) -> String {
        let Some(t) = self.get(id).filter(|_| depth <= MAX_DEPTH) else { return "?".into() };
        let inner = |id| self.name_at(id, depth + 1);
        match t.kind {
            Kind::Void => "void".into(),
            Kind::Ptr => format!("{} *", inner(t.size_or_type)),
            Kind::Struct => format!("struct {}", t.name),
            Kind::Union => format!("union {}", t.name),
            Kind::Enum | Kind::Enum64 => format!("enum {}", t.name),
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => inner(t.size_or_type),
            Kind::Array => match t.array {
                Some((e, n)) => format!("{}[{n}]", inner(e)),
                None => "[]".into(),
            },
            _ => t.name.clone(),
        }
    }

    /// The arguments of the BTF tracepoint `name` (from `typedef void (*btf_trace_NAME)(void
    /// *, args...)`), as printable type names; `None` when the kernel has no such tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<(String, String)>> {
        let td = self.find(&format!("btf_trace_{name}"), Kind::Typedef)?;
        let ptr = self.get(td)?;
        let proto = self.get(self.get(ptr.size_or_type)?.size_or_type)?;
        if proto.kind != Kind::FuncProto {
            return None;
        }
        Some(
            proto
                .params
                .iter()
                .skip(1)
                .map(|(n, ty)| (n.clone(), self.type_name(*ty)))
                .collect(),
        )
    }

    /// Whether a function of this name is in BTF (fentry/kprobe targets).
    pub fn has_func(&self, name: &str) -> bool {
        self.find(name, Kind::Func).is_some()
    }
}

/// For tests against this machine's kernel: its BTF, or None where the kernel has none
/// (only off CI: CI machines have BTF, so there a missing file fails the test).
#[cfg(test)]
pub fn running_kernel_btf() -> Option<Btf> {
    let path = Path::new(crate::kernel::DEFAULT_BTF);
    if !path.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI machines have BTF at {}", path.display());
        return None;
    }
    Some(Btf::from_file(path).expect("this kernel's BTF parses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: struct outer { int a; struct { long b; }; } and an enum.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0long\0outer\0a\0b\0E\0X\0Y\0".to_vec();
        let s = |n: &str| -> u32 {
            let needle = format!("\0{n}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut push = |v: &[u32]| v.iter().for_each(|x| t.extend_from_slice(&x.to_le_bytes()));
        push(&[s("int"), 1 << 24, 4, 32]); // 1: int
        push(&[s("long"), 1 << 24, 8, 64]); // 2: long
        push(&[0, 4 << 24 | 1, 8, s("b"), 2, 0]); // 3: anon struct { long b; }
        push(&[s("outer"), 4 << 24 | 2, 16, s("a"), 1, 0, 0, 3, 64]); // 4: outer
        push(&[s("E"), 6 << 24 | 2, 4, s("X"), 3, s("Y"), 7]); // 5: enum E
        crate::kernel::btf_read::assemble(&t, &strings)
    }

    #[test]
    fn parses_members_through_anonymous_structs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("outer", "a"), Some((0, 1)));
        assert_eq!(btf.offset_of("outer", "b"), Some((8, 2)));
        assert_eq!(btf.offset_of("outer", "c"), None);
        assert_eq!(btf.size_of(btf.find("outer", Kind::Struct).unwrap()), Some(16));
        assert_eq!(btf.enum_value("Y"), Some(7));
        assert_eq!(btf.enum_value("Z"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&sample()[..30]).is_err());
    }

    /// Against this machine's kernel: the members memtrace depends on exist.
    #[test]
    fn reads_running_kernel_btf() {
        let Some(btf) = crate::kernel::btf::running_kernel_btf() else { return };
        let (pid, _) = btf.offset_of("task_struct", "pid").unwrap();
        let (tgid, _) = btf.offset_of("task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4, "pid and tgid are adjacent pid_t");
        let (_, comm_ty) = btf.offset_of("task_struct", "comm").unwrap();
        assert_eq!(btf.size_of(comm_ty), Some(16));
        // total_vm lives inside mm_struct's anonymous struct on 6.x.
        assert!(btf.offset_of("mm_struct", "total_vm").is_some());
        assert!(btf.enum_value("MM_ANONPAGES").is_some());
        let args = btf.tracepoint_args("mark_victim").expect("oom:mark_victim in BTF");
        assert!(!args.is_empty());
    }
}
