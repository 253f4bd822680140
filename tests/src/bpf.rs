//! The BPF programs loaded on this machine, for the stop tests: every loaded program (with
//! `bpftool prog` on the host, where `cargo xtask setup --for test` installs it; with the
//! kernel's own BPF_PROG_GET_NEXT_ID in the VM, which has no bpftool), and the programs
//! one process holds (the `prog_id:` lines of its /proc/PID/fdinfo: program and link
//! descriptors both name theirs).

use std::{collections::BTreeSet, process::Command};

use serde_json::Value;

use crate::in_vm;

/// A loaded BPF program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub id: u32,
    /// As bpftool shows it (the whole function name when the kernel has its BTF), or as the
    /// kernel keeps it (15 characters).
    pub name: String,
}

/// Every BPF program loaded now.
pub fn loaded() -> Vec<Program> {
    if in_vm() { by_syscall() } else { by_bpftool() }
}

fn by_bpftool() -> Vec<Program> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool (`cargo xtask setup --for test` installs it)");
    assert!(out.status.success(), "bpftool prog show: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| Program {
                    id: p["id"].as_u64().unwrap_or(0) as u32,
                    name: p["name"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

fn bpf(cmd: libc::c_long, attr: &mut [u32]) -> libc::c_long {
    // SAFETY: `attr` is a zero-padded union bpf_attr prefix of the given size.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) }
}

fn by_syscall() -> Vec<Program> {
    let mut out = Vec::new();
    let mut id = 0;
    loop {
        let mut attr = [id, 0, 0, 0];
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr) < 0 {
            return out; // ENOENT: no more
        }
        id = attr[1];
        out.push(Program { id, name: name_of(id).unwrap_or_default() });
    }
}

/// The kernel's name of program `id` (None when it went away meanwhile).
fn name_of(id: u32) -> Option<String> {
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut [id, 0, 0, 0]);
    if fd < 0 {
        return None;
    }
    // struct bpf_prog_info: name[16] at byte 64.
    let mut info = [0u8; 256];
    let ptr = info.as_mut_ptr() as u64;
    let mut attr = [fd as u32, info.len() as u32, ptr as u32, (ptr >> 32) as u32];
    let ok = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0;
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd as i32) };
    let name = &info[64..80];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    ok.then(|| String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Ids of the programs process `pid` holds now (empty once it has exited).
pub fn held_by(pid: u32) -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Ids of the programs any process holds now.
pub fn held_by_anyone() -> BTreeSet<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else { return BTreeSet::new() };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(held_by)
        .collect()
}

/// Whether a program's shown name is one of `names` (full function names): the kernel
/// keeps 15 characters, bpftool may show all of them.
pub fn named_as(shown: &str, names: &[String]) -> bool {
    !shown.is_empty() && names.iter().any(|n| n == shown || (shown.len() >= 15 && n.starts_with(shown)))
}
