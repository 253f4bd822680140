//! Options every workload shares, and the setup they imply.

use std::{collections::HashMap, io::Write as _};

pub struct Opts {
    kv: HashMap<String, String>,
    flags: Vec<String>,
}

impl Opts {
    /// `--key value` pairs; `--flag` alone when followed by another option or nothing.
    pub fn parse(args: &[String]) -> Opts {
        let mut kv = HashMap::new();
        let mut flags = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let Some(key) = args[i].strip_prefix("--") else {
                eprintln!("mt-stress: unexpected argument {}", args[i]);
                std::process::exit(2);
            };
            match args.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    kv.insert(key.to_string(), v.clone());
                    i += 2;
                }
                _ => {
                    flags.push(key.to_string());
                    i += 1;
                }
            }
        }
        Opts { kv, flags }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }

    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.get(key).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("mt-stress: --{key} {v}: not a number");
                std::process::exit(2)
            })
        })
    }

    pub fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }

    /// Joins the cgroup, sets oom_score_adj and the task name.
    pub fn apply(&self) {
        if let Some(dir) = self.get("cgroup") {
            let pid = std::process::id().to_string();
            std::fs::write(format!("{dir}/cgroup.procs"), &pid)
                .unwrap_or_else(|e| fail(&format!("joining cgroup {dir}: {e}")));
        }
        if let Some(adj) = self.get("adj") {
            std::fs::write("/proc/self/oom_score_adj", adj)
                .unwrap_or_else(|e| fail(&format!("oom_score_adj {adj}: {e}")));
        }
        if let Some(comm) = self.get("comm") {
            set_comm(comm);
        }
    }
}

pub fn fail(msg: &str) -> ! {
    eprintln!("mt-stress: {msg}");
    std::process::exit(1)
}

pub fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of up to 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// A private anonymous read-write mapping of `len` bytes (exits on failure).
pub fn map_anon(len: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping; checked for MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        fail("mmap failed");
    }
    base.cast()
}

/// Prints a line and flushes it (the harness waits for it).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Sleeps until killed.
pub fn park() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
