//! OOM family: decoding `oom:mark_victim` records into reports.

use memtrace_common::oom::{OOM_HAVE_MM, OOM_HAVE_TASK, OOM_NO_MM, OomKillEvent};
use serde::Serialize;

use memtrace_common::{EventKind, Family, oom::OomConfig};

use crate::{
    cgroup,
    cli::TraceConfig,
    family::{self, Global},
    output::{self, cstr, kib},
    system::Kernel,
};

/// Options of `memtrace oom` beyond the common ones.
#[derive(Debug, Clone, Default)]
pub struct Options {}

/// BPF globals of the oom programs.
pub fn globals(kernel: &Kernel, _cfg: &TraceConfig) -> Vec<Global> {
    let pid = crate::tracefs::format(&kernel.tracefs, "oom", "mark_victim")
        .and_then(|f| f.field("pid").map(|f| f.offset))
        .unwrap_or(8);
    vec![Global::of("OOM_CONFIG", &OomConfig { tp_pid_offset: pid, _pad: 0 })]
}

/// Prints each kill as it arrives.
pub struct Agent {
    cfg: TraceConfig,
}

impl Agent {
    pub fn new(cfg: TraceConfig, _opts: Options) -> Agent {
        Agent { cfg }
    }
}

impl family::FamilyAgent for Agent {
    fn family(&self) -> Family {
        Family::Oom
    }

    fn record(&mut self, kind: EventKind, bytes: &[u8]) -> bool {
        if kind != EventKind::OomKill {
            return false;
        }
        let Some(k) = decode(bytes) else { return false };
        if matches(&k, &self.cfg) {
            if self.cfg.json {
                output::json_line(&k);
            } else {
                output::text(&render_text(&k));
            }
        }
        true
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Victim {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub rss_anon_kb: Option<i64>,
    pub rss_file_kb: Option<i64>,
    pub rss_shmem_kb: Option<i64>,
    pub swap_kb: Option<i64>,
    pub pgtables_kb: Option<i64>,
    pub total_vm_kb: Option<i64>,
    /// Memory cgroup path read in BPF at kill time.
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trigger {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OomKill {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub victim: Victim,
    pub trigger: Trigger,
    /// Plain findings.
    pub notes: Vec<String>,
}

/// Decodes a record. Returns None when it is too short (counted by the caller).
pub fn decode(bytes: &[u8]) -> Option<OomKill> {
    if bytes.len() < std::mem::size_of::<OomKillEvent>() {
        return None;
    }
    // SAFETY: length checked; the type is plain data; the read is unaligned-safe.
    let ev: OomKillEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(from_event(&ev))
}

pub fn from_event(ev: &OomKillEvent) -> OomKill {
    let page = output::page_kib();
    let have_task = ev.flags & OOM_HAVE_TASK != 0;
    let have_mm = ev.flags & OOM_HAVE_MM != 0;
    let pages = |v: i64| have_mm.then_some(v.max(0) * page);
    let mut notes = Vec::new();
    if !have_task {
        notes.push(
            "this kernel's oom:mark_victim passes only the pid: victim details unavailable"
                .to_string(),
        );
    }
    if ev.flags & OOM_NO_MM != 0 {
        notes.push("victim had already released its memory (no mm) when marked".to_string());
    }
    if have_task && ev.victim_pid == ev.trigger_pid {
        notes.push("the victim triggered the OOM itself".to_string());
    }
    let zero_if_no_mm = |v: Option<i64>| {
        if ev.flags & OOM_NO_MM != 0 { Some(0) } else { v }
    };
    OomKill {
        kind: "oom_kill",
        time: output::rfc3339(output::boot_to_wall_ns(ev.header.boot_ns)),
        victim: Victim {
            pid: ev.victim_pid,
            tgid: ev.victim_tgid,
            comm: cstr(&ev.victim_comm),
            uid: (have_task && ev.victim_uid != u32::MAX).then_some(ev.victim_uid),
            oom_score_adj: have_task.then_some(ev.victim_oom_score_adj),
            rss_anon_kb: zero_if_no_mm(pages(ev.rss_anon)),
            rss_file_kb: zero_if_no_mm(pages(ev.rss_file)),
            rss_shmem_kb: zero_if_no_mm(pages(ev.rss_shmem)),
            swap_kb: zero_if_no_mm(pages(ev.swap_ents)),
            pgtables_kb: zero_if_no_mm(have_mm.then_some(ev.pgtables_bytes.max(0) / 1024)),
            total_vm_kb: zero_if_no_mm(pages(ev.total_vm_pages as i64)),
            cgroup: cgroup::render(&ev.victim_cgroup),
            cgroup_id: cgroup::render(&ev.victim_cgroup).map(|_| ev.victim_cgroup.id),
        },
        trigger: Trigger {
            pid: ev.trigger_pid,
            tgid: ev.trigger_tgid,
            comm: cstr(&ev.trigger_comm),
            cgroup: cgroup::render(&ev.trigger_cgroup),
        },
        notes,
    }
}

/// Does the kill pass the -p / -c filters?
pub fn matches(k: &OomKill, cfg: &TraceConfig) -> bool {
    let pid_ok = cfg.pid.is_none_or(|p| {
        [k.victim.pid, k.victim.tgid, k.trigger.pid, k.trigger.tgid].contains(&p)
    });
    let cg_ok = cfg.cgroup.as_deref().is_none_or(|f| {
        [k.victim.cgroup.as_deref(), k.trigger.cgroup.as_deref()]
            .into_iter()
            .flatten()
            .any(|c| cgroup::under(c, f))
    });
    pid_ok && cg_ok
}

fn opt_kib(v: Option<i64>) -> String {
    v.map(kib).unwrap_or_else(|| "?".into())
}

/// A readable block per kill.
pub fn render_text(k: &OomKill) -> String {
    let v = &k.victim;
    let t = &k.trigger;
    let cg = |c: &Option<String>| c.clone().unwrap_or_else(|| "(unknown)".into());
    let mut s = format!(
        "{}  OOM KILL  pid {} ({}) uid {}  memcg {}\n",
        k.time,
        v.tgid,
        v.comm,
        v.uid.map(|u| u.to_string()).unwrap_or_else(|| "?".into()),
        cg(&v.cgroup),
    );
    s += &format!(
        "    rss anon {}  file {}  shmem {}  swap {}  page tables {}  vm {}  oom_score_adj {}\n",
        opt_kib(v.rss_anon_kb),
        opt_kib(v.rss_file_kb),
        opt_kib(v.rss_shmem_kb),
        opt_kib(v.swap_kb),
        opt_kib(v.pgtables_kb),
        opt_kib(v.total_vm_kb),
        v.oom_score_adj.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
    );
    s += &format!("    triggered by pid {} ({})  memcg {}\n", t.tgid, t.comm, cg(&t.cgroup));
    for n in &k.notes {
        s += &format!("    note: {n}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use memtrace_common::{
        CGROUP_COMPLETE, CGROUP_DEPTH, CGROUP_NAME_LEN, CGROUP_UNAVAILABLE, CgroupPath,
        EventHeader, EventKind,
    };

    use super::*;

    fn cg(names: &[&str]) -> CgroupPath {
        let mut p = CgroupPath {
            id: 42,
            depth: names.len() as u32,
            status: CGROUP_COMPLETE,
            names: [[0; CGROUP_NAME_LEN]; CGROUP_DEPTH],
        };
        for (i, n) in names.iter().enumerate() {
            p.names[i][..n.len()].copy_from_slice(n.as_bytes());
        }
        p
    }

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    fn event() -> OomKillEvent {
        OomKillEvent {
            header: EventHeader { kind: EventKind::OomKill as u32, cpu: 1, boot_ns: 5 },
            flags: OOM_HAVE_TASK | OOM_HAVE_MM,
            victim_pid: 100,
            victim_tgid: 100,
            victim_uid: 1000,
            victim_oom_score_adj: 500,
            trigger_pid: 201,
            trigger_tgid: 200,
            _pad: 0,
            rss_anon: 12_288,
            rss_file: 10,
            rss_shmem: 0,
            swap_ents: 0,
            pgtables_bytes: 131_072,
            total_vm_pages: 20_000,
            victim_comm: comm("victim"),
            trigger_comm: comm("grower"),
            victim_cgroup: cg(&["job", "svc"]),
            trigger_cgroup: cg(&["job", "svc"]),
        }
    }

    fn bytes(ev: &OomKillEvent) -> Vec<u8> {
        // SAFETY: plain data viewed as bytes.
        unsafe {
            std::slice::from_raw_parts((ev as *const OomKillEvent).cast::<u8>(), std::mem::size_of_val(ev))
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_record() {
        let k = decode(&bytes(&event())).unwrap();
        let page = output::page_kib();
        assert_eq!(k.victim.pid, 100);
        assert_eq!(k.victim.comm, "victim");
        assert_eq!(k.victim.uid, Some(1000));
        assert_eq!(k.victim.oom_score_adj, Some(500));
        assert_eq!(k.victim.rss_anon_kb, Some(12_288 * page));
        assert_eq!(k.victim.pgtables_kb, Some(128));
        assert_eq!(k.victim.cgroup.as_deref(), Some("/svc/job"));
        assert_eq!(k.victim.cgroup_id, Some(42));
        assert_eq!(k.trigger.tgid, 200);
        assert_eq!(k.trigger.comm, "grower");
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(json["type"], "oom_kill");
        assert_eq!(json["victim"]["rss_anon_kb"], 12_288 * page);
        assert!(render_text(&k).contains("pid 100 (victim)"));
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(decode(&bytes(&event())[..100]).is_none());
    }

    #[test]
    fn pid_only_records_say_so() {
        let mut ev = event();
        ev.flags = 0;
        ev.victim_cgroup.status = CGROUP_UNAVAILABLE;
        let k = from_event(&ev);
        assert_eq!(k.victim.rss_anon_kb, None);
        assert_eq!(k.victim.cgroup, None);
        assert!(k.notes.iter().any(|n| n.contains("only the pid")));
    }

    #[test]
    fn filters_by_pid_and_cgroup() {
        let k = from_event(&event());
        let cfg = |pid, cgroup: Option<&str>| TraceConfig {
            json: true,
            duration: None,
            pid,
            cgroup: cgroup.map(String::from),
        };
        assert!(matches(&k, &cfg(None, None)));
        assert!(matches(&k, &cfg(Some(100), None)));
        assert!(matches(&k, &cfg(Some(200), None)));
        assert!(!matches(&k, &cfg(Some(7), None)));
        assert!(matches(&k, &cfg(None, Some("/svc"))));
        assert!(!matches(&k, &cfg(None, Some("/sv"))));
    }
}
