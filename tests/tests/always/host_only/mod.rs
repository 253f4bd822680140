//! Host only (the VM's /init skips `host_only`): a real Prometheus server (Debian's
//! `prometheus`, with promtool; not in the VM) and 500 churning cgroups (too slow under the
//! VM's emulation).

mod churn;
mod prometheus;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use memtrace_tests::{TempDir, Value, free_port, http_get, url_encode, wait_until};

/// A Prometheus server on 127.0.0.1 scraping `target` every second, with its own data
/// directory; killed (by its pid) and removed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(target: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: memtrace\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus (Debian's prometheus package, `cargo xtask setup`): {e}"));
        let p = Prometheus { child, addr, _dir: dir };
        wait_until(Duration::from_secs(60), "prometheus ready", || {
            std::net::TcpStream::connect(&p.addr).ok()?;
            (http_get(&p.addr, "/-/ready", None).0 == 200).then_some(())
        });
        p
    }

    /// An instant query's result vector.
    pub fn query(&self, q: &str) -> Vec<Value> {
        let (status, _, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", url_encode(q)), None);
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that gives one sample (None when it gives none).
    pub fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "{q}: {r:?}");
        r.first().and_then(|s| s["value"][1].as_str()?.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool args` with `stdin`: (success, stdout + stderr).
pub fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (Debian's prometheus package, `cargo xtask setup`): {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("promtool stdin");
    drop(input);
    let out = child.wait_with_output().expect("promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A file of the repository (contrib/...).
pub fn repo_file(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
