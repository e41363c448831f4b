//! Starting a region's Raft group on a node and proposing commands to it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::raft_service_server::RaftServiceServer;
use openraft::error::{ClientWriteError, RaftError};
use openraft::SnapshotPolicy;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::error::{RaftGroupError, WriteError};
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, RaftGrpcService};
use crate::state_machine::{ApplyHandler, StateMachineStore};
use crate::types::{Command, NodeId, NodeInfo};
use crate::Raft;

/// Timing and log-retention settings of the region's Raft group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat period, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower catches up from the log.
    pub keep_logs_after_snapshot: u64,
    /// How long a proposal may wait for commit and apply before the write fails with
    /// `NO_QUORUM`, in milliseconds.
    pub write_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            snapshot_every_entries: 20_000,
            keep_logs_after_snapshot: 5_000,
            write_timeout_ms: 10_000,
        }
    }
}

impl RaftConfig {
    /// Checks the rules that span fields.
    pub fn validate(&self) -> Result<(), RaftGroupError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(RaftGroupError::Config(
                "heartbeat_interval_ms must be > 0".into(),
            ));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms * 2 {
            return Err(RaftGroupError::Config(
                "election_timeout_min_ms must exceed twice heartbeat_interval_ms".into(),
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(RaftGroupError::Config(
                "election_timeout_max_ms must exceed election_timeout_min_ms".into(),
            ));
        }
        if self.write_timeout_ms == 0 {
            return Err(RaftGroupError::Config(
                "write_timeout_ms must be > 0".into(),
            ));
        }
        Ok(())
    }

    fn to_openraft(&self, region: &str) -> Result<openraft::Config, RaftGroupError> {
        let config = openraft::Config {
            cluster_name: region.to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            // Metadata snapshots are small, but give slow links room (a 200 ms timeout has been
            // seen retrying one chunk forever).
            install_snapshot_timeout: 60_000,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| RaftGroupError::Config(e.to_string()))
    }
}

/// A node's membership in its region's Raft group.
#[derive(Clone)]
pub struct RaftGroup {
    raft: Raft,
    node_id: NodeId,
    region: String,
    write_timeout: Duration,
}

impl RaftGroup {
    /// Starts Raft on this node over the given database. Does not initialize a new group; see
    /// [`RaftGroup::initialize`].
    pub async fn start(
        config: &RaftConfig,
        region: &str,
        node_id: NodeId,
        db: Arc<DB>,
        handler: Arc<dyn ApplyHandler>,
        snapshot_dir: PathBuf,
    ) -> Result<Self, RaftGroupError> {
        config.validate()?;
        let openraft_config = Arc::new(config.to_openraft(region)?);
        let log_store =
            LogStore::new(db.clone()).map_err(|e| RaftGroupError::Storage(e.to_string()))?;
        let state_machine = StateMachineStore::new(db, handler, snapshot_dir)
            .map_err(|e| RaftGroupError::Storage(e.to_string()))?;
        let network = NetworkFactory::new(region);
        let raft = Raft::new(node_id, openraft_config, network, log_store, state_machine)
            .await
            .map_err(|e| RaftGroupError::Stopped(e.to_string()))?;
        crate::metrics::spawn_exporter(raft.clone(), region.to_string());
        Ok(Self {
            raft,
            node_id,
            region: region.to_string(),
            write_timeout: Duration::from_millis(config.write_timeout_ms),
        })
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The gRPC service that receives this node's Raft RPCs.
    pub fn grpc_service(&self) -> RaftServiceServer<RaftGrpcService> {
        RaftServiceServer::new(RaftGrpcService::new(self.raft.clone(), self.region.clone()))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Initializes a new group with `members` as voters, unless this node already belongs to an
    /// initialized group (then it does nothing).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<bool, RaftGroupError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftGroupError::Stopped(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(e)) => Err(RaftGroupError::Membership(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(RaftGroupError::Stopped(e.to_string())),
        }
    }

    /// Waits until the group has a leader and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, RaftGroupError> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(RaftGroupError::Stopped("raft metrics closed".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RaftGroupError::Timeout(timeout, "a raft leader"))?
    }

    /// Proposes a command and waits until it is committed and applied on this node (the
    /// leader). Returns the state machine's response.
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, WriteError> {
        let proposal = self.raft.client_write(Command(command));
        match tokio::time::timeout(self.write_timeout, proposal).await {
            Err(_) => Err(WriteError::NoQuorum {
                timeout: self.write_timeout,
            }),
            Ok(Ok(response)) => Ok(response.data.0),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                let leader = match (forward.leader_id, forward.leader_node) {
                    (Some(id), Some(node)) => Some((id, node)),
                    _ => None,
                };
                Err(WriteError::NotLeader { leader })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(WriteError::Stopped {
                    message: format!("unexpected membership error for a normal write: {e}"),
                })
            }
            Ok(Err(RaftError::Fatal(e))) => Err(WriteError::Stopped {
                message: e.to_string(),
            }),
        }
    }

    /// Stops Raft on this node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown did not complete cleanly");
        }
    }
}
