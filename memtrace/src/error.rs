//! Errors and their exit codes: 2 for anything the user can fix (usage, privileges,
//! missing kernel features), 1 for failures while tracing.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The system lacks something memtrace needs (root, BTF, tracefs, a hook).
    #[error("{0}")]
    Environment(String),
    /// A flag value that parsed but makes no sense (a PID that does not exist, ...).
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Bpf {
        context: String,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Environment(_) | Error::Usage(_) => 2,
            Error::Bpf { .. } | Error::Other(_) => 1,
        }
    }

    pub fn bpf(context: impl Into<String>, source: impl Into<anyhow::Error>) -> Error {
        Error::Bpf { context: context.into(), source: source.into() }
    }
}
