//! The shmem family's records and their text view.
//!
//! A report is, in this order: per mount its `shmem_mount` record followed by the mount's
//! `shmem_usage` rows, then the `shmem_writer` rows, then (final report only)
//! `shmem_accuracy`, and last `shmem_reconcile`, which closes the report: the view buffers
//! the report's records and prints its text when the `shmem_reconcile` arrives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{
    format::kib,
    sink::{Text, View},
};

/// Every record the shmem family emits (`"type"` is the variant's name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ShmemRecord {
    #[serde(rename = "shmem_mount")]
    Mount(MountRecord),
    #[serde(rename = "shmem_usage")]
    Usage(Usage),
    #[serde(rename = "shmem_writer")]
    Writer(WriterRecord),
    #[serde(rename = "shmem_accuracy")]
    Accuracy(Accuracy),
    /// The last record of every report.
    #[serde(rename = "shmem_reconcile")]
    Reconcile(Reconcile),
}

/// One (file, writer): what that writer put in that file and what is still live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// tmpfs | memfd | sysv | shared_anon | internal
    pub kind: String,
    pub mount: String,
    pub dev: String,
    pub inode: u64,
    pub path: Option<String>,
    /// The inode's dentry name when first seen (memfd:NAME, SYSV0000abcd, dev/zero, ...).
    pub name: String,
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub live_bytes: u64,
    /// The whole file's live bytes (all writers).
    pub file_live_bytes: u64,
    /// exact | cpu_run | drain_task: how the writer was identified.
    pub attribution: String,
    pub writer_alive: bool,
    pub first_alloc: String,
    pub last_alloc: String,
    pub time: String,
    #[serde(rename = "final")]
    pub final_: bool,
}

/// One shmem superblock: a tmpfs mount or the kernel's internal shm mount.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
    pub mount: String,
    pub dev: String,
    pub fstype: String,
    /// tmpfs (a mounted filesystem) or internal (the kernel's shm mount: memfd, SysV, shared
    /// anonymous memory).
    pub kind: String,
    pub live_bytes: u64,
    pub df_used_bytes: Option<u64>,
    pub df_size_bytes: Option<u64>,
    pub preexisting_bytes: Option<u64>,
    pub unexplained_bytes: Option<i64>,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub files: usize,
    pub writers: usize,
    pub time: String,
    #[serde(rename = "final")]
    pub final_: bool,
}

/// One task's shmem, in its own context, over all files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriterRecord {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub alive: bool,
    /// Shmem pages added, and removed, in this task's context.
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    /// What it allocated that is still live, and in how many files.
    pub live_bytes: u64,
    pub files: usize,
    /// nr_shmem (memcg NR_SHMEM tracepoint) or alloc_hook.
    pub source: String,
    pub time: String,
    #[serde(rename = "final")]
    pub final_: bool,
}

/// /proc/meminfo Shmem against what memtrace attributes: closes every report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconcile {
    pub meminfo_shmem_bytes: Option<u64>,
    pub meminfo_shmem_start_bytes: Option<u64>,
    pub attributed_live_bytes: u64,
    pub preexisting_bytes: u64,
    /// Allocated while traced, still in per-CPU LRU batches: writer known, file not yet
    /// (LRU strategy only).
    pub pending_lru_bytes: u64,
    pub unexplained_bytes: Option<i64>,
    pub tmpfs_df_used_bytes: u64,
    pub time: String,
    #[serde(rename = "final")]
    pub final_: bool,
}

/// The kernel side's accounting counters, in the final report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub alloc_folios: u64,
    pub run_attributed: u64,
    pub drain_attributed: u64,
    pub lru_reinserted: u64,
    pub lru_truncated: u64,
    pub freed_before_lru: u64,
    pub unseen_freed_pages: u64,
    pub nr_shmem_events: u64,
    pub alloc_failed: u64,
    pub runs_merged: u64,
    pub retired_inodes: u64,
    pub time: String,
}

/// The text view: buffers a report's records until its `shmem_reconcile`, then prints the
/// report (stdout) and the accuracy line (stderr).
#[derive(Default)]
pub struct ShmemView {
    mounts: Vec<MountRecord>,
    /// Per mount (`dev`), its files in arrival order.
    usage: BTreeMap<String, Vec<Usage>>,
    writers: Vec<WriterRecord>,
    accuracy: Option<Accuracy>,
}

impl View for ShmemView {
    fn record(&mut self, rec: &Value) -> Text {
        let rec = match serde_json::from_value::<ShmemRecord>(rec.clone()) {
            Ok(r) => r,
            Err(e) => return Text::err(format!("memtrace: unreadable shmem record ({e}): {rec}\n")),
        };
        match rec {
            ShmemRecord::Mount(m) => self.mounts.push(m),
            ShmemRecord::Usage(u) => self.usage.entry(u.dev.clone()).or_default().push(u),
            ShmemRecord::Writer(w) => self.writers.push(w),
            ShmemRecord::Accuracy(a) => self.accuracy = Some(a),
            ShmemRecord::Reconcile(r) => {
                let out = render_text(&r, &self.mounts, &self.usage, &self.writers);
                let err = self.accuracy.take().map(|a| accuracy_text(&a)).unwrap_or_default();
                *self = ShmemView::default();
                return Text { out, err };
            }
        }
        Text::default()
    }
}

fn b(v: u64) -> String {
    kib((v / 1024) as i64)
}

fn sb(v: i64) -> String {
    kib(v / 1024)
}

fn who(tgid: u32, comm: &str, alive: bool) -> String {
    format!("{comm}[{tgid}]{}", if alive { "" } else { " (exited)" })
}

/// The accuracy line (stderr, final report).
pub fn accuracy_text(a: &Accuracy) -> String {
    format!(
        "memtrace: shmem accuracy: {} folios counted ({} via NR_SHMEM runs, {} by the draining \
         task), {} LRU re-insertions ignored, {} freed before reaching the LRU, {} pre-existing \
         pages freed, {} failed adds, {} runs merged\n",
        a.alloc_folios,
        a.run_attributed,
        a.drain_attributed,
        a.lru_reinserted,
        a.freed_before_lru,
        a.unseen_freed_pages,
        a.alloc_failed,
        a.runs_merged
    )
}

/// A report's text: the reconciliation, then per mount its files and writers, then the
/// writers over all files. `usage` holds each mount's files by `dev`.
pub fn render_text(
    r: &Reconcile,
    mounts: &[MountRecord],
    usage: &BTreeMap<String, Vec<Usage>>,
    writers: &[WriterRecord],
) -> String {
    let opt = |v: Option<u64>| v.map(b).unwrap_or_else(|| "?".into());
    let mut s = format!("{}  shmem{}\n", r.time, if r.final_ { " (final)" } else { "" });
    s += &format!(
        "  /proc/meminfo Shmem {} (at start {}): attributed live {}, pre-existing {}, {}unexplained {}\n",
        opt(r.meminfo_shmem_bytes),
        opt(r.meminfo_shmem_start_bytes),
        b(r.attributed_live_bytes),
        b(r.preexisting_bytes),
        if r.pending_lru_bytes > 0 {
            format!("waiting for the LRU {}, ", b(r.pending_lru_bytes))
        } else {
            String::new()
        },
        r.unexplained_bytes.map(sb).unwrap_or_else(|| "?".into()),
    );
    s += &format!(
        "  {:<32} {:<8} {:>11} {:>11} {:>13} {:>12}\n",
        "MOUNT", "KIND", "LIVE", "DF USED", "PRE-EXISTING", "UNEXPLAINED"
    );
    for m in mounts {
        s += &format!(
            "  {:<32} {:<8} {:>11} {:>11} {:>13} {:>12}\n",
            format!("{} ({})", m.mount, m.dev),
            m.kind,
            b(m.live_bytes),
            opt(m.df_used_bytes),
            opt(m.preexisting_bytes),
            m.unexplained_bytes.map(sb).unwrap_or_else(|| "-".into()),
        );
        let files = usage.get(&m.dev).map(Vec::as_slice).unwrap_or_default();
        for u in files {
            let place = u.path.clone().unwrap_or_else(|| {
                if u.name.is_empty() { format!("ino {}", u.inode) } else { u.name.clone() }
            });
            s += &format!(
                "      {:>10} live  {} {} (ino {})  by {}  cgroup {}  [{}{}]\n",
                b(u.live_bytes),
                u.kind,
                place,
                u.inode,
                who(u.tgid, &u.comm, u.writer_alive),
                u.cgroup.as_deref().unwrap_or("?"),
                u.attribution,
                if u.freed_bytes > 0 {
                    format!(", {} freed", b(u.freed_bytes))
                } else {
                    String::new()
                },
            );
        }
        s += &mount_writers(files);
    }
    if !writers.is_empty() {
        s += "  writers (all shmem, in their own context):\n";
        for w in writers {
            s += &format!(
                "      {:<28} allocated {:>10}  freed {:>10}  still live {:>10} in {} files  cgroup {}\n",
                who(w.tgid, &w.comm, w.alive),
                b(w.allocated_bytes),
                b(w.freed_bytes),
                b(w.live_bytes),
                w.files,
                w.cgroup.as_deref().unwrap_or("?"),
            );
        }
    }
    s
}

/// The writers of one mount, from its files, most live bytes first.
fn mount_writers(files: &[Usage]) -> String {
    let mut per: BTreeMap<(u32, String), (u64, bool, Option<String>)> = BTreeMap::new();
    for u in files {
        let e = per.entry((u.tgid, u.comm.clone())).or_insert((0, u.writer_alive, u.cgroup.clone()));
        e.0 += u.live_bytes;
    }
    let mut per: Vec<_> = per.into_iter().collect();
    per.sort_by_key(|p| std::cmp::Reverse(p.1.0));
    if per.is_empty() {
        return String::new();
    }
    let list: Vec<String> = per
        .iter()
        .map(|((tgid, comm), (live, alive, cg))| {
            format!("{} {} in {}", who(*tgid, comm, *alive), b(*live), cg.as_deref().unwrap_or("?"))
        })
        .collect();
    format!("      writers: {}\n", list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconcile() -> Reconcile {
        Reconcile {
            meminfo_shmem_bytes: Some(80 << 20),
            meminfo_shmem_start_bytes: Some(16 << 20),
            attributed_live_bytes: 64 << 20,
            preexisting_bytes: 16 << 20,
            pending_lru_bytes: 0,
            unexplained_bytes: Some(0),
            tmpfs_df_used_bytes: 64 << 20,
            time: "t".into(),
            final_: true,
        }
    }

    fn mount() -> MountRecord {
        MountRecord {
            mount: "/run".into(),
            dev: "0:25".into(),
            fstype: "tmpfs".into(),
            kind: "tmpfs".into(),
            live_bytes: 64 << 20,
            df_used_bytes: Some(64 << 20),
            df_size_bytes: Some(128 << 20),
            preexisting_bytes: Some(0),
            unexplained_bytes: Some(0),
            allocated_bytes: 64 << 20,
            freed_bytes: 0,
            files: 1,
            writers: 1,
            time: "t".into(),
            final_: true,
        }
    }

    fn usage() -> Usage {
        Usage {
            kind: "tmpfs".into(),
            mount: "/run".into(),
            dev: "0:25".into(),
            inode: 7,
            path: Some("/run/log/big.log".into()),
            name: "big.log".into(),
            tgid: 42,
            pid: 42,
            comm: "logger".into(),
            cgroup: Some("/system.slice".into()),
            cgroup_id: 3,
            allocated_bytes: 64 << 20,
            freed_bytes: 0,
            live_bytes: 64 << 20,
            file_live_bytes: 64 << 20,
            attribution: "exact".into(),
            writer_alive: false,
            first_alloc: "t".into(),
            last_alloc: "t".into(),
            time: "t".into(),
            final_: true,
        }
    }

    fn writer() -> WriterRecord {
        WriterRecord {
            tgid: 42,
            pid: 42,
            comm: "logger".into(),
            cgroup: Some("/system.slice".into()),
            alive: false,
            allocated_bytes: 64 << 20,
            freed_bytes: 0,
            live_bytes: 64 << 20,
            files: 1,
            source: "alloc_hook".into(),
            time: "t".into(),
            final_: true,
        }
    }

    fn accuracy() -> Accuracy {
        Accuracy {
            alloc_folios: 16_384,
            run_attributed: 0,
            drain_attributed: 0,
            lru_reinserted: 0,
            lru_truncated: 0,
            freed_before_lru: 0,
            unseen_freed_pages: 0,
            nr_shmem_events: 0,
            alloc_failed: 0,
            runs_merged: 0,
            retired_inodes: 0,
            time: "t".into(),
        }
    }

    fn json(r: ShmemRecord) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn records_keep_their_json_shape() {
        let cases = [
            (
                json(ShmemRecord::Usage(usage())),
                r#"{"type":"shmem_usage","kind":"tmpfs","mount":"/run","dev":"0:25","inode":7,"path":"/run/log/big.log","name":"big.log","tgid":42,"pid":42,"comm":"logger","cgroup":"/system.slice","cgroup_id":3,"allocated_bytes":67108864,"freed_bytes":0,"live_bytes":67108864,"file_live_bytes":67108864,"attribution":"exact","writer_alive":false,"first_alloc":"t","last_alloc":"t","time":"t","final":true}"#,
            ),
            (
                json(ShmemRecord::Mount(mount())),
                r#"{"type":"shmem_mount","mount":"/run","dev":"0:25","fstype":"tmpfs","kind":"tmpfs","live_bytes":67108864,"df_used_bytes":67108864,"df_size_bytes":134217728,"preexisting_bytes":0,"unexplained_bytes":0,"allocated_bytes":67108864,"freed_bytes":0,"files":1,"writers":1,"time":"t","final":true}"#,
            ),
            (
                json(ShmemRecord::Writer(writer())),
                r#"{"type":"shmem_writer","tgid":42,"pid":42,"comm":"logger","cgroup":"/system.slice","alive":false,"allocated_bytes":67108864,"freed_bytes":0,"live_bytes":67108864,"files":1,"source":"alloc_hook","time":"t","final":true}"#,
            ),
            (
                json(ShmemRecord::Reconcile(reconcile())),
                r#"{"type":"shmem_reconcile","meminfo_shmem_bytes":83886080,"meminfo_shmem_start_bytes":16777216,"attributed_live_bytes":67108864,"preexisting_bytes":16777216,"pending_lru_bytes":0,"unexplained_bytes":0,"tmpfs_df_used_bytes":67108864,"time":"t","final":true}"#,
            ),
            (
                json(ShmemRecord::Accuracy(accuracy())),
                r#"{"type":"shmem_accuracy","alloc_folios":16384,"run_attributed":0,"drain_attributed":0,"lru_reinserted":0,"lru_truncated":0,"freed_before_lru":0,"unseen_freed_pages":0,"nr_shmem_events":0,"alloc_failed":0,"runs_merged":0,"retired_inodes":0,"time":"t"}"#,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(v.to_string(), want);
            let back: ShmemRecord = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(json(back), v, "round trip");
        }
        let mut u = usage();
        u.path = None;
        u.cgroup = None;
        let v = json(ShmemRecord::Usage(u.clone()));
        assert_eq!(v["path"], Value::Null);
        assert_eq!(serde_json::from_value::<ShmemRecord>(v).unwrap(), ShmemRecord::Usage(u));
    }

    #[test]
    fn text_lists_mounts_files_and_writers() {
        let mut usage_by_dev = BTreeMap::new();
        usage_by_dev.insert("0:25".to_string(), vec![usage()]);
        let s = render_text(&reconcile(), &[mount()], &usage_by_dev, &[]);
        assert!(s.starts_with("t  shmem (final)\n"), "{s}");
        assert!(s.contains("/run (0:25)"), "{s}");
        assert!(
            s.contains("64.0 MiB live  tmpfs /run/log/big.log (ino 7)  by logger[42] (exited)"),
            "{s}"
        );
        assert!(s.contains("writers: logger[42] (exited) 64.0 MiB in /system.slice"), "{s}");
    }

    #[test]
    fn the_view_prints_a_report_when_its_reconcile_arrives() {
        let mut view = ShmemView::default();
        let report = [
            ShmemRecord::Mount(mount()),
            ShmemRecord::Usage(usage()),
            ShmemRecord::Writer(writer()),
            ShmemRecord::Accuracy(accuracy()),
        ];
        for r in report.clone() {
            assert_eq!(view.record(&json(r)), Text::default(), "nothing before the reconcile");
        }
        let t = view.record(&json(ShmemRecord::Reconcile(reconcile())));
        let mut usage_by_dev = BTreeMap::new();
        usage_by_dev.insert("0:25".to_string(), vec![usage()]);
        assert_eq!(t.out, render_text(&reconcile(), &[mount()], &usage_by_dev, &[writer()]));
        assert!(t.out.contains("writers (all shmem, in their own context):"), "{}", t.out);
        assert!(t.out.contains("logger[42] (exited)          allocated   64.0 MiB"), "{}", t.out);
        assert_eq!(t.err, accuracy_text(&accuracy()));
        assert!(t.err.starts_with("memtrace: shmem accuracy: 16384 folios counted"), "{}", t.err);
        assert!(t.err.ends_with("0 runs merged\n"), "{}", t.err);
        // The next report starts empty: an interval report has no accuracy line.
        let mut r = reconcile();
        r.final_ = false;
        let t = view.record(&json(ShmemRecord::Reconcile(r)));
        assert!(t.out.starts_with("t  shmem\n"), "{}", t.out);
        assert!(!t.out.contains("/run (0:25)"), "{}", t.out);
        assert_eq!(t.err, "");
        let t = view.record(&serde_json::json!({"type": "shmem_mount", "mount": 3}));
        assert!(t.err.contains("unreadable shmem record"), "{t:?}");
    }
}
