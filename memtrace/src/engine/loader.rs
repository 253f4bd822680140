//! The embedded BPF object, loaded with the session's globals and map sizes.

use aya::{Ebpf, EbpfLoader};

use crate::{error::Error, kernel::Kernel};

/// The BPF object built by build.rs (memtrace-ebpf), embedded in the binary.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// A BPF global (a `static` in the BPF object) and its value.
#[derive(Clone, Debug)]
pub struct Global {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

impl Global {
    pub fn of<T: aya::Pod>(name: &'static str, v: &T) -> Global {
        // SAFETY: Pod types are plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        Global { name, bytes: bytes.to_vec() }
    }
}

/// The running kernel's BTF as aya reads it (for tp_btf, fentry and fexit loads).
pub fn aya_btf(kernel: &Kernel) -> Result<aya::Btf, Error> {
    aya::Btf::parse_file(&kernel.btf_path, aya::Endianness::default())
        .map_err(|e| crate::kernel::btf_unusable(&kernel.btf_path, e))
}

/// Loads the object: every global set, every sized map given its max_entries. No program
/// is loaded into the kernel yet (attachment does that, per chosen candidate).
pub fn load(btf: &aya::Btf, globals: &[Global], sizes: &[(&'static str, u32)]) -> Result<Ebpf, Error> {
    let mut loader = EbpfLoader::new();
    loader.btf(Some(btf));
    for g in globals {
        loader.override_global(g.name, g.bytes.as_slice(), true);
    }
    for (name, n) in sizes {
        loader.map_max_entries(name, *n);
    }
    loader.load(BPF_OBJECT).map_err(|e| Error::bpf("loading memtrace's BPF object", e))
}

/// Takes a map out of the loaded object as the typed map `T`.
pub fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Error::bpf(format!("opening map {name}"), anyhow::anyhow!("not in the BPF object")))?;
    T::try_from(map).map_err(|e| Error::bpf(format!("opening map {name}"), e))
}

#[cfg(test)]
mod tests {
    use crate::kernel::{
        btf::{Btf, running_kernel_btf},
        fuzz,
    };

    /// aya parses the `--btf` file again, for the loader: on whatever memtrace's own
    /// reader accepts, it returns (an error or its Btf) and does not panic.
    #[test]
    fn fuzz_aya_btf_parser_behind_the_reader() {
        let seeds = fuzz::btf::seeds(running_kernel_btf().as_ref());
        fuzz::run(
            "aya_btf",
            |rng| rng.pick(&seeds).mutate(rng),
            |b| b.clone(),
            |b| Btf::parse(b).is_ok() && aya::Btf::parse(b, aya::Endianness::default()).is_ok(),
        );
    }
}
