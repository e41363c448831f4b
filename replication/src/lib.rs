//! Inter-region replication for Arca: the QUIC transport (quinn with mutual TLS over a cluster
//! CA), the change-log stream protocol, and the mirror's lag accounting.
//!
//! The primary serves its change log, chunks and state snapshots ([`server`]); a mirror's
//! leader subscribes from its last applied entry, fetches only the chunks its region lacks on
//! parallel streams, verifies them, and commits entries in order ([`client`]). Storage is only
//! reached through the traits in [`store`], which the node implements, so this crate can be
//! tested on its own.
//!
//! It does not know what a command means, where chunks are kept, or how a region agrees on
//! anything: those are the node's.

pub mod client;
pub mod error;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod store;
pub mod tls;

pub use client::{Mirror, MirrorOptions};
pub use error::{Error, Result};
pub use metrics::{LagReport, MirrorLag};
pub use protocol::{ChunkId, Entry, Head, RegionInfo, Role};
pub use store::{ChangeSink, ChangeSource, Changes, SnapshotReader};
pub use tls::TlsFiles;

/// Opens a QUIC endpoint bound to `addr` that serves (with mutual TLS) and connects (presenting
/// this node's certificate).
pub fn endpoint(addr: std::net::SocketAddr, files: &TlsFiles) -> Result<quinn::Endpoint> {
    let server = tls::server_config(files)?;
    let client = tls::client_config(files)?;
    let mut endpoint = quinn::Endpoint::server(server, addr)
        .map_err(|e| Error::Connection(format!("bind QUIC endpoint on {addr}: {e}")))?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}
