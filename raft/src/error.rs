//! Errors of the Raft layer, each with a stable machine-readable code.

use std::time::Duration;

use crate::types::{NodeId, NodeInfo};

/// Why a request that needs the leader and a quorum (a write, a read barrier, a membership
/// change) did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsensusError {
    /// This node is not the leader; the caller should go to `leader`.
    #[error("this node is not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// Not confirmed by a quorum in time: the region has no quorum (or no leader) right now.
    /// A write may still commit later.
    #[error("no quorum: not confirmed by a majority of the region within {timeout:?}")]
    NoQuorum { timeout: Duration },
    /// Raft has stopped on this node (shutdown or a storage failure).
    #[error("raft is not running on this node: {message}")]
    Stopped { message: String },
}

impl ConsensusError {
    /// A stable code for logs, metrics and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            ConsensusError::NotLeader { .. } => "NOT_LEADER",
            ConsensusError::NoQuorum { .. } => "NO_QUORUM",
            ConsensusError::Stopped { .. } => "RAFT_STOPPED",
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
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

impl RaftGroupError {
    /// A stable code for logs, metrics and API errors (a consensus failure keeps its own).
    pub fn code(&self) -> &'static str {
        match self {
            RaftGroupError::Config(_) => "RAFT_CONFIG",
            RaftGroupError::Storage(_) => "RAFT_STORAGE",
            RaftGroupError::Stopped(_) => "RAFT_STOPPED",
            RaftGroupError::Timeout(..) => "RAFT_TIMEOUT",
            RaftGroupError::Membership(_) => "MEMBERSHIP_REFUSED",
            RaftGroupError::Consensus(e) => e.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_raft_error_has_a_distinct_stable_code() {
        let errors = [
            RaftGroupError::Config(String::new()).code(),
            RaftGroupError::Storage(String::new()).code(),
            RaftGroupError::Timeout(Duration::ZERO, "x").code(),
            RaftGroupError::Membership(String::new()).code(),
            ConsensusError::NotLeader { leader: None }.code(),
            ConsensusError::NoQuorum {
                timeout: Duration::ZERO,
            }
            .code(),
            ConsensusError::Stopped {
                message: String::new(),
            }
            .code(),
        ];
        let distinct: std::collections::BTreeSet<_> = errors.iter().collect();
        assert_eq!(distinct.len(), errors.len(), "{errors:?}");
        // A group that stopped and a request that met a stopped group say the same thing.
        assert_eq!(
            RaftGroupError::Stopped(String::new()).code(),
            ConsensusError::Stopped {
                message: String::new()
            }
            .code()
        );
        assert_eq!(
            RaftGroupError::Consensus(ConsensusError::NotLeader { leader: None }).code(),
            "NOT_LEADER"
        );
    }
}
