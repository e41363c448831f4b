//! The tonic transport between the nodes of one region.
//!
//! openraft's messages travel MessagePack-encoded inside a small protobuf envelope (see
//! `proto/arca/v1/raft.proto`), so the wire format follows openraft's serde types without a
//! hand-maintained protobuf mirror of them.

/// The largest encoded Raft message a node decodes (the server, requests; the client,
/// replies) or sends: 64 MiB. Bounding it keeps a faulty or hostile peer from making a node
/// buffer an arbitrarily large message. It exceeds what the transport sends:
///
/// - an AppendEntries holds entries worth at most the peer's byte budget (at most 16 MiB), or a
///   single entry larger than that, so any command up to about 63 MiB encoded replicates
///   (larger ones never would: proposals must stay well below this);
/// - an InstallSnapshot chunk holds `snapshot_max_chunk_size` (4 MiB) of data, which
///   MessagePack encodes as an array of integers, at most 2 bytes per byte: 8 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

const _: () = assert!(client::APPEND_BUDGET_MAX < MAX_MESSAGE_BYTES);
const _: () = assert!(2 * crate::group::SNAPSHOT_CHUNK_BYTES + (1 << 20) < MAX_MESSAGE_BYTES);

pub mod client;
pub mod server;
pub mod transport;

pub use client::{NetworkClient, NetworkFactory};
pub use server::RaftGrpcService;
pub use transport::PeerTransport;
