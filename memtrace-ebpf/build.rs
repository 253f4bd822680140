use which::which;

/// Rebuild when bpf-linker changes (a new LLVM changes the object).
fn main() {
    let bpf_linker = which("bpf-linker").unwrap_or_default();
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
