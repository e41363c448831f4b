//! The openraft type configuration shared by every node of a region.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity inside its region. Unique per region, chosen by the operator.
pub type NodeId = u64;

/// What the members of a region know about each other: where to reach a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the node's gRPC server (Raft, chunk transfer, admin).
    pub grpc_addr: String,
    /// `host:port` of the node's HTTP server (artifact API), used to redirect clients.
    pub http_addr: String,
    /// `host:port` (UDP) of the node's replication endpoint, empty when it has none.
    #[serde(default)]
    pub replication_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grpc={} http={}", self.grpc_addr, self.http_addr)
    }
}

/// A state-machine command, opaque to the Raft layer.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

/// The state machine's answer to one applied command, opaque to the Raft layer.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for CommandResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandResponse({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Arca's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
