//! BTF inputs: an encoder (types -> blob), a faithful subset of this machine's BTF (the
//! types memtrace's layout resolution reads, small enough to parse thousands of times),
//! mutations that know the format, and the target: the reader, then every query and the
//! layout resolution on whatever it accepts.

use std::collections::HashMap;

use super::{mutate_bytes, Rng};
use crate::kernel::{
    btf::{Btf, Kind, Member, Type},
    layout,
};

fn kind_number(k: Kind) -> u32 {
    match k {
        Kind::Void => 0,
        Kind::Int => 1,
        Kind::Ptr => 2,
        Kind::Array => 3,
        Kind::Struct => 4,
        Kind::Union => 5,
        Kind::Enum => 6,
        Kind::Fwd => 7,
        Kind::Typedef => 8,
        Kind::Volatile => 9,
        Kind::Const => 10,
        Kind::Restrict => 11,
        Kind::Func => 12,
        Kind::FuncProto => 13,
        Kind::Var => 14,
        Kind::Datasec => 15,
        Kind::Float => 16,
        Kind::DeclTag => 17,
        Kind::TypeTag => 18,
        Kind::Enum64 => 19,
    }
}

/// A BTF blob of `types` (index 0, void, is implicit and skipped). Arrays are indexed by
/// the first int (one is appended when there is none); datasec entries are not kept.
pub fn encode(types: &[Type]) -> Vec<u8> {
    let mut types = types.to_vec();
    let index = match types.iter().position(|t| t.kind == Kind::Int) {
        Some(i) => i as u32,
        None => {
            types.push(Type {
                name: "int".into(),
                kind: Kind::Int,
                size_or_type: 4,
                ..Type::void()
            });
            types.len() as u32 - 1
        }
    };
    let mut strings = vec![0u8];
    let mut offsets: HashMap<String, u32> = HashMap::new();
    let mut name = |s: &str| -> u32 {
        if s.is_empty() {
            return 0;
        }
        *offsets.entry(s.to_string()).or_insert_with(|| {
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        })
    };
    let mut out = Vec::new();
    let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
    for t in types.iter().skip(1) {
        let vlen = match t.kind {
            Kind::Struct | Kind::Union => t.members.len(),
            Kind::Enum | Kind::Enum64 => t.values.len(),
            Kind::FuncProto => t.params.len(),
            _ => 0,
        } as u32;
        put(name(&t.name));
        put(kind_number(t.kind) << 24 | vlen);
        put(t.size_or_type);
        match t.kind {
            Kind::Int => put((t.size_or_type * 8).min(128)),
            Kind::Var => put(0),
            Kind::DeclTag => put(u32::MAX),
            Kind::Array => {
                let (elem, n) = t.array.unwrap_or_default();
                [elem, index, n].into_iter().for_each(&mut put);
            }
            Kind::Struct | Kind::Union => {
                for m in &t.members {
                    [name(&m.name), m.type_id, m.bit_offset].into_iter().for_each(&mut put);
                }
            }
            Kind::Enum => t
                .values
                .iter()
                .for_each(|(n, v)| [name(n), *v as u32].into_iter().for_each(&mut put)),
            Kind::Enum64 => t.values.iter().for_each(|(n, v)| {
                [name(n), *v as u32, (*v as u64 >> 32) as u32].into_iter().for_each(&mut put)
            }),
            Kind::FuncProto => {
                t.params.iter().for_each(|(n, ty)| [name(n), *ty].into_iter().for_each(&mut put))
            }
            _ => {}
        }
    }
    crate::kernel::btf_read::assemble(&out, &strings)
}

/// The structs, enums and tracepoint prototypes memtrace reads (kernel/layout.rs and the
/// families' checks).
#[rustfmt::skip]
const ROOTS: [&str; 24] = [
    "task_struct", "signal_struct", "mm_struct", "cred", "css_set", "cgroup_subsys_state",
    "cgroup", "kernfs_node", "mem_cgroup", "page_counter", "oom_control", "compact_control",
    "kmem_cache", "pt_regs", "folio", "address_space", "inode", "super_block", "dentry",
    "percpu_counter", "mm_rss_stat", "btf_trace_mark_victim",
    "btf_trace_mm_vmscan_direct_reclaim_begin", "btf_trace_kmem_cache_alloc",
];
#[rustfmt::skip]
const ENUMS: [&str; 6] =
    ["pageflags", "node_stat_item", "MM_FILEPAGES", "memory_cgrp_id", "oom_constraint", "compact_result"];

/// The types reachable by value from [`ROOTS`] and [`ENUMS`] in `btf`, renumbered:
/// pointers to structs point at a forward declaration instead (the subset would otherwise
/// be the whole kernel), pointers to anonymous ones at void.
pub fn subset(btf: &Btf) -> Vec<Type> {
    let mut map: HashMap<u32, u32> = HashMap::new();
    let mut fwd: HashMap<String, u32> = HashMap::new();
    let mut out = vec![Type::void()];
    // (old id, new id) of the types still to copy.
    let mut queue: Vec<(u32, usize)> = Vec::new();
    let mut add = |id: u32, out: &mut Vec<Type>, queue: &mut Vec<(u32, usize)>| -> u32 {
        if id == 0 {
            return 0;
        }
        *map.entry(id).or_insert_with(|| {
            out.push(Type::void());
            queue.push((id, out.len() - 1));
            out.len() as u32 - 1
        })
    };
    let mut roots: Vec<u32> = ROOTS
        .iter()
        .filter_map(|n| btf.find(n, Kind::Struct).or_else(|| btf.find(n, Kind::Typedef)))
        .collect();
    for e in ENUMS {
        roots.extend(btf.find(e, Kind::Enum));
        roots.extend((1..btf.len() as u32).find(|&id| {
            btf.get(id)
                .is_some_and(|t| t.kind == Kind::Enum && t.values.iter().any(|(n, _)| n == e))
        }));
    }
    for r in roots {
        add(r, &mut out, &mut queue);
    }
    while let Some((old, new)) = queue.pop() {
        let Some(t) = btf.get(old) else { continue };
        let mut t = t.clone();
        match t.kind {
            Kind::Ptr => {
                let target = btf.resolve(t.size_or_type);
                t.size_or_type = match btf.get(target).map(|p| (p.kind, p.name.clone())) {
                    Some((Kind::Struct | Kind::Union, name)) if !name.is_empty() => {
                        *fwd.entry(name.clone()).or_insert_with(|| {
                            out.push(Type { name, kind: Kind::Fwd, ..Type::void() });
                            out.len() as u32 - 1
                        })
                    }
                    Some((Kind::Struct | Kind::Union, _)) => 0,
                    _ => add(t.size_or_type, &mut out, &mut queue),
                };
            }
            Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                t.size_or_type = add(t.size_or_type, &mut out, &mut queue);
            }
            Kind::FuncProto => {
                t.size_or_type = add(t.size_or_type, &mut out, &mut queue);
                for p in &mut t.params {
                    p.1 = add(p.1, &mut out, &mut queue);
                }
            }
            Kind::Array => {
                if let Some((elem, n)) = t.array {
                    t.array = Some((add(elem, &mut out, &mut queue), n));
                }
            }
            Kind::Struct | Kind::Union => {
                for m in &mut t.members {
                    m.type_id = add(m.type_id, &mut out, &mut queue);
                }
            }
            Kind::Func | Kind::Var | Kind::DeclTag | Kind::Datasec => {
                t = Type { name: t.name, kind: Kind::Int, size_or_type: 4, ..Type::void() };
            }
            _ => {}
        }
        out[new] = t;
    }
    out
}

/// One type record of a blob: where it starts and its words' offsets.
struct Record {
    at: usize,
    /// Offsets of the words after the 12-byte header (members, params, ...).
    words: Vec<usize>,
}

/// A valid blob with its records found, to mutate with knowledge of the format.
pub struct Seed {
    pub blob: Vec<u8>,
    records: Vec<Record>,
    strings: std::ops::Range<usize>,
}

impl Seed {
    /// `blob` must be valid (it is walked without checks).
    pub fn new(blob: Vec<u8>) -> Seed {
        let w = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        let (hdr, toff, tlen, soff, slen) = (w(4), w(8), w(12), w(16), w(20));
        let mut records = Vec::new();
        let mut p = hdr + toff;
        while p < hdr + toff + tlen {
            let info = w(p + 4) as u32;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let body = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 19 | 15 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
            records.push(Record { at: p, words: (0..body / 4).map(|i| p + 12 + 4 * i).collect() });
            p += 12 + body;
        }
        Seed { records, strings: hdr + soff..hdr + soff + slen, blob }
    }

    /// A mutated copy: 1 to 3 mutations that know the format, sometimes byte mutations.
    pub fn mutate(&self, rng: &mut Rng) -> Vec<u8> {
        let mut b = self.blob.clone();
        let n = self.records.len() as u64 + 1;
        // (A byte mutation before may have shortened the blob.)
        let set = |b: &mut Vec<u8>, at: usize, v: u32| {
            if let Some(w) = b.get_mut(at..at + 4) {
                w.copy_from_slice(&v.to_le_bytes());
            }
        };
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(self.records.len());
            let (id, r) = (i as u32 + 1, &self.records[i]);
            let any_id = |rng: &mut Rng| match rng.below(5) {
                0 => id,
                1 => 0,
                2 => (n + rng.below(3) as u64) as u32,
                3 => rng.interesting() as u32,
                _ => rng.below(n as usize) as u32,
            };
            match rng.below(8) {
                // The referenced type (or the size): often itself, a cycle.
                0 | 1 => {
                    let v = any_id(rng);
                    set(&mut b, r.at + 8, v);
                }
                // A member, parameter, element or value word.
                2 | 3 if !r.words.is_empty() => {
                    let at = *rng.pick(&r.words);
                    let v = if rng.one_in(2) { any_id(rng) } else { rng.interesting() as u32 };
                    set(&mut b, at, v);
                }
                // The kind, the item count, the kind flag.
                4 => {
                    let Some(info) = b
                        .get(r.at + 4..r.at + 8)
                        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
                    else {
                        continue;
                    };
                    let v = match rng.below(3) {
                        0 => (info & !(0x1f << 24)) | (rng.below(32) as u32) << 24,
                        1 => (info & !0xffff) | rng.interesting() as u32 & 0xffff,
                        _ => info ^ 1 << 31,
                    };
                    set(&mut b, r.at + 4, v);
                }
                // The name: an offset anywhere, or a byte of the strings.
                5 => {
                    if rng.one_in(2) {
                        let v = rng.interesting() as u32 % (self.strings.len() as u32 + 8);
                        set(&mut b, r.at, v);
                    } else if let Some(c) =
                        b.get_mut(self.strings.start + rng.below(self.strings.len()))
                    {
                        *c = rng.interesting() as u8;
                    }
                }
                // A header word.
                6 => {
                    let at = 4 + 4 * rng.below(5);
                    set(&mut b, at, rng.interesting() as u32);
                }
                _ => mutate_bytes(rng, &mut b),
            }
        }
        b
    }
}

/// Names the queries are asked about: the layout's, and the fuzzed input's own.
const NAMES: [&str; 8] =
    ["task_struct", "mm_struct", "pt_regs", "folio", "dentry", "cgroup", "x", ""];
const PATHS: [&str; 6] = ["pid", "rss_stat", "d_name.name", "css.cgroup", "a.b.c.d", ""];

/// Whatever `blob` is, the reader returns; on what it accepts, every query returns.
/// True when the reader accepted it.
pub fn check(blob: &[u8]) -> bool {
    let Ok(btf) = Btf::parse(blob) else { return false };
    let _ = layout::resolve(&btf);
    let _ = layout::check_arch(&btf);
    let n = btf.len() as u32;
    for id in (0..n + 2).take(4000) {
        let _ = (btf.size_of(id), btf.type_name(id), btf.resolve(id), btf.member_in(id, "count"));
    }
    for name in NAMES {
        for path in PATHS {
            let _ = btf.offset_of(name, path);
        }
        let _ = (btf.tracepoint_args(name), btf.enum_value(name), btf.has_func(name));
        let _ = layout::enum_value_in(&btf, name, "X");
    }
    true
}

/// Seeds: tiny hand-made blobs (cycles one mutation away) and the subset of this
/// machine's BTF when it has one.
pub fn seeds(machine: Option<&Btf>) -> Vec<Seed> {
    let int = Type { name: "int".into(), kind: Kind::Int, size_or_type: 4, ..Type::void() };
    let m = |name: &str, type_id, bit_offset| Member { name: name.into(), type_id, bit_offset };
    let tiny = vec![
        Type::void(),
        int.clone(),
        Type { kind: Kind::Ptr, size_or_type: 3, ..Type::void() },
        Type {
            name: "a".into(),
            kind: Kind::Struct,
            size_or_type: 16,
            members: vec![m("next", 2, 0), m("v", 1, 64)],
            ..Type::void()
        },
        Type { name: "t".into(), kind: Kind::Typedef, size_or_type: 3, ..Type::void() },
        Type { kind: Kind::Array, array: Some((4, 2)), ..Type::void() },
        Type {
            kind: Kind::Struct,
            size_or_type: 32,
            members: vec![m("arr", 5, 0)],
            ..Type::void()
        },
        Type {
            name: "pt_regs".into(),
            kind: Kind::Struct,
            size_or_type: 40,
            members: vec![m("", 6, 0), m("orig_ax", 1, 256)],
            ..Type::void()
        },
        Type {
            name: "E".into(),
            kind: Kind::Enum,
            size_or_type: 4,
            values: vec![("MM_FILEPAGES".into(), 0)],
            ..Type::void()
        },
        Type {
            kind: Kind::FuncProto,
            params: vec![("".into(), 2), ("p".into(), 1)],
            ..Type::void()
        },
        Type { kind: Kind::Ptr, size_or_type: 9, ..Type::void() },
        Type { name: "btf_trace_x".into(), kind: Kind::Typedef, size_or_type: 10, ..Type::void() },
    ];
    let mut seeds = vec![Seed::new(encode(&tiny))];
    if let Some(btf) = machine {
        seeds.push(Seed::new(encode(&subset(btf))));
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::running_kernel_btf;

    /// The fuzzer's subset of this machine's BTF resolves to the same layout as the whole:
    /// the seed is faithful where memtrace reads.
    #[test]
    fn the_subset_of_this_kernels_btf_keeps_the_layout() {
        let Some(full) = running_kernel_btf() else { return };
        let types = subset(&full);
        assert!(types.len() < 20_000, "{} types", types.len());
        let small = Btf::parse(&encode(&types)).expect("the subset is valid BTF");
        let (a, b) = (layout::resolve(&full), layout::resolve(&small));
        assert_eq!(a.missing, b.missing);
        assert_eq!(a.shmem_missing, b.shmem_missing);
        assert_eq!(format!("{:?}", a.layout), format!("{:?}", b.layout));
        // (Pointed-to structs are forward declarations there: "task_struct *".)
        let args = |b: &Btf| b.tracepoint_args("mark_victim").map(|a| a.len());
        assert_eq!(args(&full), args(&small));
    }

    #[test]
    fn fuzz_btf_reader_and_layout() {
        let machine = running_kernel_btf();
        let seeds = seeds(machine.as_ref());
        let full =
            machine.is_some().then(|| std::fs::read(crate::kernel::DEFAULT_BTF).ok()).flatten();
        crate::kernel::fuzz::run(
            "btf",
            |rng| match (rng.one_in(200), &full) {
                // Now and then the whole of this machine's BTF (slow to parse: rarely).
                (true, Some(f)) => {
                    let mut b = f.clone();
                    mutate_bytes(rng, &mut b);
                    b
                }
                _ => rng.pick(&seeds).mutate(rng),
            },
            |b| b.clone(),
            |b| check(b),
        );
    }
}
