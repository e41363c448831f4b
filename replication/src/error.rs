//! Errors of the replication layer, each with a stable code.

/// A replication failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tls: {0}")]
    Tls(String),
    #[error("quic connection: {0}")]
    Connection(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("chunk {chunk} failed verification: its bytes do not hash to its name")]
    CorruptChunk { chunk: String },
    #[error("chunk {chunk} is not available at the primary")]
    ChunkUnavailable { chunk: String },
    #[error("the primary no longer retains entries after {after} (oldest retained: {oldest}); a snapshot is needed")]
    Truncated { after: u64, oldest: u64 },
    #[error("storage: {0}")]
    Storage(String),
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("replication stopped: {0}")]
    Stopped(String),
    #[error("this region's history diverged from the primary's: {0}")]
    Diverged(String),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Tls(_) => "TLS",
            Error::Connection(_) => "CONNECTION",
            Error::Protocol(_) => "PROTOCOL",
            Error::CorruptChunk { .. } => "CORRUPT_CHUNK",
            Error::ChunkUnavailable { .. } => "CHUNK_UNAVAILABLE",
            Error::Truncated { .. } => "TRUNCATED",
            Error::Storage(_) => "STORAGE",
            Error::Refused(_) => "REFUSED",
            Error::Stopped(_) => "STOPPED",
            Error::Diverged(_) => "DIVERGED",
        }
    }

    pub fn storage(e: impl std::fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
