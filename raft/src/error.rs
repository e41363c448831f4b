//! Errors of the Raft layer, each with a stable machine-readable code.

use std::time::Duration;

use crate::types::{NodeId, NodeInfo};

/// Why a proposed command did not produce an applied response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader; the caller should send the write to `leader`.
    #[error("this node is not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// The command was not committed in time: the region has no quorum (or no leader) right now.
    /// The command may still commit later.
    #[error("no quorum: the write was not committed within {timeout:?}")]
    NoQuorum { timeout: Duration },
    /// Raft has stopped on this node (shutdown or a storage failure).
    #[error("raft is not running on this node: {message}")]
    Stopped { message: String },
}

impl WriteError {
    /// A stable code for logs, metrics and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::NotLeader { .. } => "NOT_LEADER",
            WriteError::NoQuorum { .. } => "NO_QUORUM",
            WriteError::Stopped { .. } => "RAFT_STOPPED",
        }
    }
}

/// Failures starting or managing the Raft group.
#[derive(Debug, thiserror::Error)]
pub enum RaftGroupError {
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("raft storage: {0}")]
    Storage(String),
    #[error("raft stopped: {0}")]
    Stopped(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("membership change refused: {0}")]
    Membership(String),
}
