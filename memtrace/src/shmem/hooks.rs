//! The shmem family's hooks: allocation (exact with fexit/kprobe on
//! shmem_add_to_page_cache; else LRU insertion of shmem folios), the NR_SHMEM memcg
//! counter that names the allocating task on the LRU path, and frees (page cache deletion).

use crate::{
    engine::hook::{Candidate, Hook, Strategy},
    kernel::{checks::Check, layout::Resolved},
    tracepoints,
};

const SHMEM_ADD: &str = "shmem_add_to_page_cache";
const SHMEM_ADD_ARGS: &[(&str, &str)] =
    &[("folio", "struct folio *"), ("mapping", "struct address_space *")];
const LRU_LIMITS: &str = "the file is exact; the allocating task is matched through per-CPU \
    memcg NR_SHMEM runs, or is the task that drained the per-CPU LRU batch without them: \
    usually, not always, the allocator";

/// Whether BPF can follow folio -> mapping -> inode -> superblock on this kernel.
fn shmem_layout(l: &Resolved) -> Result<(), String> {
    if l.shmem_missing.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel layout incomplete: {}", l.shmem_missing.join("; ")))
    }
}

const LAYOUT: Check = Check::Layout(shmem_layout);
const NR_SHMEM: Check = Check::Enumerator("node_stat_item", "NR_SHMEM");

pub fn hooks() -> Vec<Hook> {
    let mut alloc = vec![
        Candidate::new(Strategy::Fexit, "shmem_add_fexit", SHMEM_ADD).requires([
            Check::BtfFunc(SHMEM_ADD),
            Check::ParamsStart(SHMEM_ADD, SHMEM_ADD_ARGS),
            LAYOUT,
        ]),
        Candidate::new(Strategy::Kprobe, "shmem_add_kprobe", SHMEM_ADD)
            .requires([Check::Kprobe(SHMEM_ADD), Check::ParamsStart(SHMEM_ADD, SHMEM_ADD_ARGS), LAYOUT])
            .limits(
                "counted on entry: an add that then fails (a racing fault on the same page, a \
                 memcg charge failure on kernels that charge inside) is counted as allocated",
            ),
        Candidate::new(Strategy::Kretprobe, "shmem_alloc_kretprobe", "shmem_alloc_and_add_folio")
            .requires([
                Check::Kprobe("shmem_alloc_and_add_folio"),
                Check::Returns("shmem_alloc_and_add_folio", "struct folio *"),
                LAYOUT,
            ])
            .limits("pages re-added to the page cache by swap-in are not seen"),
    ];
    alloc.extend(
        tracepoints!("shmem_lru", "pagemap", "mm_lru_insertion", TpArgs["struct folio *"],
            ["folio", "flags"], [LAYOUT])
        .into_iter()
        .map(|c| c.limits(LRU_LIMITS)),
    );
    let mut nr_shmem = tracepoints!("shmem_memcg", "memcg", "mod_memcg_lruvec_state",
        TpArgs["struct mem_cgroup *"], ["id", "item", "val"], [NR_SHMEM, Check::MemcgEnabled]);
    nr_shmem[2].limits = "the cgroup path is the current task's (the charged memcg differs only \
        for remote charges)";
    let mut free = tracepoints!("shmem_free", "filemap", "mm_filemap_delete_from_page_cache",
        TpArgs["struct folio *"], ["s_dev", "i_ino"]);
    free[0].requires.push(LAYOUT);
    free[1].requires.push(LAYOUT);
    free[2].limits = "no folio: shmem is recognised by superblock (tmpfs mounts, the internal \
        shm mount, superblocks seen allocating), and folios truncated before their LRU \
        insertion are not counted (LRU allocation strategy)";
    vec![
        Hook::new("shmem:alloc", alloc),
        Hook::new("shmem:nr_shmem", nr_shmem),
        Hook::new("shmem:free", free),
    ]
}
