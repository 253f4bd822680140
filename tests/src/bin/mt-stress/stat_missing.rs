//! `stat-missing --count N --dir D [--go-file F] [--via stat|statx|open|access] [--hold]`:
//! stats N unique paths that do not exist in directory D (created if needed), so the
//! kernel allocates one negative dentry per path. Prints `ready` when set up (after
//! waiting for file F to exist, with --go-file), then `done <ENOENT count>` and exits
//! (or sleeps until killed with --hold).

use std::{ffi::CString, path::Path};

use crate::common::{Opts, fail, park, say};

pub fn run(o: &Opts) {
    let count = o.num("count", 10_000);
    let dir = o.get("dir").unwrap_or_else(|| fail("stat-missing needs --dir DIR"));
    let via = o.get("via").unwrap_or("stat").to_string();
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("mkdir {dir}: {e}")));
    say("ready");
    if let Some(go) = o.get("go-file") {
        while !Path::new(go).exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let pid = std::process::id();
    let mut enoent = 0u64;
    for i in 0..count {
        let p = CString::new(format!("{dir}/mt-miss-{pid}-{i}")).expect("no NUL");
        // SAFETY: valid C string and out buffers.
        let rc = unsafe {
            match via.as_str() {
                "statx" => {
                    let mut sx: libc::statx = std::mem::zeroed();
                    libc::statx(libc::AT_FDCWD, p.as_ptr(), 0, libc::STATX_BASIC_STATS, &mut sx)
                }
                "open" => libc::open(p.as_ptr(), libc::O_RDONLY),
                "access" => libc::access(p.as_ptr(), libc::F_OK),
                _ => {
                    let mut st: libc::stat = std::mem::zeroed();
                    libc::stat(p.as_ptr(), &mut st)
                }
            }
        };
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            enoent += 1;
        }
    }
    say(&format!("done {enoent}"));
    if o.flag("hold") {
        park()
    }
}
