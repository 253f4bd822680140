//! Builds the BPF object (memtrace-ebpf's `memtrace` binary) with aya-build; main.rs
//! embeds it with include_bytes_aligned!.

fn main() -> anyhow::Result<()> {
    let metadata_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("memtrace-ebpf");
    let root = metadata_root.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package { name: "memtrace-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
