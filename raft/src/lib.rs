//! Arca's Raft layer: one openraft 0.9 group per region.
//!
//! This crate owns the openraft type configuration, the RocksDB-backed log store, the driver that
//! applies committed commands to the state-machine column family, snapshots of that column family,
//! and the tonic transport between the nodes of a region.
//!
//! It deliberately does not know what a command means. Commands are opaque bytes; the node crate
//! supplies an [`ApplyHandler`] that decodes and applies them deterministically into an
//! [`ApplyBatch`]. The driver commits the handler's writes together with `last_applied` and the
//! membership in one RocksDB write batch.

// openraft's storage traits fix `StorageError` (224 bytes) as the error type.
#![allow(clippy::result_large_err)]

pub mod cluster_id;
pub mod error;
pub mod group;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
pub mod types;

pub use cluster_id::{ClusterId, RpcKind, Standing};
pub use error::{ConsensusError, RaftGroupError};
pub use group::{Applied, MembershipView, Peering, RaftConfig, RaftGroup};
pub use log_store::LogStore;
pub use network::PeerTransport;
pub use snapshot::SnapshotFile;
pub use state_machine::{ApplyBatch, ApplyHandler, StateMachineStore};
pub use types::{Command, CommandResponse, NodeId, NodeInfo, TypeConfig};

/// The openraft handle specialised to Arca's type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
