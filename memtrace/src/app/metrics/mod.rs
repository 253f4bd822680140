//! `--metrics ADDR`: a Prometheus endpoint, one more output. The sink folds every record
//! into the [`model::Model`] and the engine's counters every second; the server encodes
//! the model on each scrape (`GET /metrics`, Prometheus text or OpenMetrics).
//!
//! Files: series.rs (bounded label sets, the log2 histogram), model.rs (records ->
//! metrics), encode.rs (model -> exposition, content negotiation), http.rs (the server).

pub mod encode;
mod http;
pub mod model;
pub mod series;

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs as _},
    sync::{Arc, Mutex},
};

use serde_json::Value;

use self::{encode::Shared, model::Model};
use crate::{
    engine::{records::Stats, sink::Sink},
    error::Error,
    kernel::{
        self,
        cgroup::{self, MemoryCgroup},
        procfs::Procfs,
    },
};

/// The endpoint, bound (so a taken address fails before anything is loaded), not yet serving.
pub struct Endpoint {
    listener: std::net::TcpListener,
    model: Shared,
    pub addr: SocketAddr,
}

/// Binds `addr` and makes the sink that feeds the endpoint; `top` label values per metric.
pub fn bind(addr: &str, top: usize) -> Result<(Endpoint, MetricsSink), Error> {
    let usage = |why: String| Error::Usage(format!("--metrics {addr}: {why}"));
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| usage(format!("{e} (give HOST:PORT, e.g. 127.0.0.1:9435)")))?
        .collect();
    let listener = std::net::TcpListener::bind(&addrs[..]).map_err(|e| usage(e.to_string()))?;
    listener.set_nonblocking(true).map_err(|e| usage(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| usage(e.to_string()))?;
    let model = Arc::new(Mutex::new(Model::new(top, env!("CARGO_PKG_VERSION"), &kernel::kernel_release())));
    let sink = MetricsSink { model: model.clone(), memcg: cgroup::memory_cgroup(&Procfs::system()) };
    Ok((Endpoint { listener, model, addr }, sink))
}

impl Endpoint {
    /// Serves scrapes on the running tokio runtime until it ends.
    pub fn spawn(self) -> io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        eprintln!("memtrace: metrics on http://{}/metrics", self.addr);
        tokio::spawn(http::serve(listener, self.model, |m| {
            m.bpf_map_bytes = Some(Procfs::system().bpf_maps().bytes);
        }));
        Ok(())
    }
}

/// Feeds the endpoint's model.
pub struct MetricsSink {
    model: Shared,
    /// Where cgroups live: a cgroup label whose directory is gone folds into `other`.
    memcg: Option<MemoryCgroup>,
}

impl Sink for MetricsSink {
    fn record(&mut self, family: Option<&str>, rec: &Value) -> io::Result<()> {
        encode::lock(&self.model).record(family, rec);
        Ok(())
    }

    fn tick(&mut self, counters: &Stats) -> io::Result<()> {
        let mut m = encode::lock(&self.model);
        m.counters(counters);
        if let Some(h) = &self.memcg {
            m.fold_dead_cgroups(|cg| h.dir(cg).exists());
        }
        Ok(())
    }
}
