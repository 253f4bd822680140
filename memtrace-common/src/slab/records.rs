//! The slab family streams no ring-buffer records: allocations and frees are counted in
//! per-CPU maps (maps.rs) that the agent reads every second, so it has no record kinds.
