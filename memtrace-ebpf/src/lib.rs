// The BPF programs live in the `memtrace` binary target (src/main.rs). This empty library
// lets memtrace's build.rs depend on the package so cargo rebuilds it on change.
#![no_std]
