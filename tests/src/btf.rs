//! Broken copies of this kernel's BTF, for the `--btf` tests: corrupt, truncated, of
//! another byte order or architecture, and with the type graphs that crashed memtrace's
//! BTF reader before it checked them (a struct that contains itself, a type id past the
//! end, an array whose size overflows u32).

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// This kernel's BTF with its type records found.
pub struct KernelBtf {
    pub data: Vec<u8>,
    /// Start of the type and of the string section.
    types: usize,
    strings: usize,
    /// Per type id (index 0: void, None): record offset, kind, vlen, name.
    records: Vec<Option<(usize, u32, usize, String)>>,
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}

fn set_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl KernelBtf {
    pub fn read() -> KernelBtf {
        let data = std::fs::read(KERNEL_BTF).expect("this kernel's BTF (CONFIG_DEBUG_INFO_BTF)");
        let w = |i: usize| u32_at(&data, 4 + 4 * i) as usize;
        let (hdr, toff, tlen, soff) = (w(0), w(1), w(2), w(3));
        let (types, strings) = (hdr + toff, hdr + soff);
        let name = |off: usize| {
            let s = &data[strings + off..];
            String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
        };
        let mut records = vec![None];
        let mut p = types;
        while p < types + tlen {
            let info = u32_at(&data, p + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            records.push(Some((p, kind, vlen, name(u32_at(&data, p) as usize))));
            p += 12
                + match kind {
                    1 | 14 | 17 => 4,
                    3 => 12,
                    4 | 5 | 15 | 19 => 12 * vlen,
                    6 | 13 => 8 * vlen,
                    _ => 0,
                };
        }
        KernelBtf { data, types, strings, records }
    }

    fn find_struct(&self, name: &str) -> usize {
        self.records
            .iter()
            .position(|r| r.as_ref().is_some_and(|(_, k, _, n)| *k == 4 && n == name))
            .unwrap_or_else(|| panic!("struct {name} in this kernel's BTF"))
    }

    /// (offset of the member record, name, type id) of each member of type `id`.
    fn members(&self, id: usize) -> Vec<(usize, String, usize)> {
        let (p, _, vlen, _) = self.records[id].clone().unwrap();
        (0..vlen)
            .map(|j| {
                let at = p + 12 + 12 * j;
                let off = self.strings + u32_at(&self.data, at) as usize;
                let s = &self.data[off..];
                let name = String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]);
                (at, name.into_owned(), u32_at(&self.data, at + 4) as usize)
            })
            .collect()
    }

    /// mm_struct's members sit in an anonymous struct on 6.x kernels, directly before.
    fn mm_holder(&self) -> usize {
        let mm = self.find_struct("mm_struct");
        let anon = self.members(mm).into_iter().find(|(_, n, _)| n.is_empty());
        anon.map_or(mm, |(_, _, ty)| ty)
    }

    /// 16 bytes of the type section, halfway, inverted.
    pub fn flipped(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        let at = self.types
            + (self.records.last().unwrap().as_ref().unwrap().0 - self.types) / 2 / 4 * 4;
        d[at..at + 16].iter_mut().for_each(|b| *b ^= 0xff);
        d
    }

    /// Cut in the middle of the type section.
    pub fn truncated(&self) -> Vec<u8> {
        self.data[..self.data.len() / 3].to_vec()
    }

    /// The same BTF in big-endian byte order, as a big-endian architecture's kernel
    /// (s390x) has it: every header and type-section field is a u16 or u32.
    pub fn big_endian(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        d.swap(0, 1);
        let tlen = u32_at(&self.data, 12) as usize;
        let words = (4..24).step_by(4).chain((self.types..self.types + tlen).step_by(4));
        for at in words {
            d[at..at + 4].reverse();
        }
        d
    }

    /// The x86 register member of struct pt_regs renamed as arm64's is (orig_x0): what a
    /// BTF of another little-endian architecture looks like to memtrace.
    pub fn other_arch(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        let (from, to) = (b"\0orig_ax\0", b"\0orig_x0\0");
        let at = d.windows(from.len()).position(|w| w == from).expect("orig_ax (an x86_64 kernel)");
        d[at..at + to.len()].copy_from_slice(to);
        d
    }

    /// mm_struct's anonymous struct made mm_struct itself: the reader used to recurse
    /// until the stack overflowed.
    pub fn cyclic(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        let mm = self.find_struct("mm_struct");
        let (at, _, _) =
            self.members(mm).into_iter().find(|(_, n, _)| n.is_empty()).expect("anonymous member");
        set_u32(&mut d, at + 4, mm as u32);
        d
    }

    /// mm_struct.rss_stat of a type id past the last: layout.rs's `expect` used to panic.
    pub fn dangling(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        let (at, _, _) =
            self.members(self.mm_holder()).into_iter().find(|(_, n, _)| n == "rss_stat").unwrap();
        set_u32(&mut d, at + 4, 0xffff0);
        d
    }

    /// mm_struct.rss_stat an array of arrays of 2^30 elements: `size_of(elem) * n` used
    /// to overflow u32 (a panic in debug builds, a wrong stride in release).
    pub fn overflowing(&self) -> Vec<u8> {
        let mut d = self.data.clone();
        let (_, _, mut arr) =
            self.members(self.mm_holder()).into_iter().find(|(_, n, _)| n == "rss_stat").unwrap();
        if self.records[arr].as_ref().unwrap().1 != 3 {
            // Before 6.2: struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }.
            arr = self.members(arr).into_iter().find(|(_, n, _)| n == "count").unwrap().2;
        }
        let other = (1..self.records.len())
            .find(|&i| i != arr && self.records[i].as_ref().is_some_and(|r| r.1 == 3))
            .expect("another array type");
        let (arr_at, other_at) =
            (self.records[arr].as_ref().unwrap().0, self.records[other].as_ref().unwrap().0);
        set_u32(&mut d, other_at + 12 + 8, 1 << 30);
        set_u32(&mut d, arr_at + 12, other as u32);
        d
    }
}
