//! Starting a region's Raft group on a node and proposing commands to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::raft_service_server::RaftServiceServer;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, SnapshotPolicy};
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::cluster_id::ClusterId;
use crate::error::{ConsensusError, RaftGroupError};
use crate::log_store::LogStore;
use crate::network::{NetworkFactory, RaftGrpcService};
use crate::state_machine::{ApplyHandler, StateMachineStore};
use crate::types::{Command, NodeId, NodeInfo};
use crate::Raft;

/// Data bytes per InstallSnapshot chunk (openraft's `snapshot_max_chunk_size`).
pub(crate) const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

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
    /// Most log entries the leader reads for one AppendEntries to a follower. The transport
    /// then sends the prefix that fits the link's byte budget, so this mostly bounds the
    /// leader's memory: commands can be MBs (a large blob's chunk list), and openraft's
    /// default of 300 would read hundreds of MBs per lagging follower.
    pub max_payload_entries: u64,
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
            max_payload_entries: 64,
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
        if self.max_payload_entries == 0 {
            return Err(RaftGroupError::Config(
                "max_payload_entries must be > 0".into(),
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
            // Per chunk RPC; the last one also waits for the follower's install, which at a
            // million artifacts (2.2 GB) took 36 s on a test machine. A 200 ms timeout has been
            // seen retrying one chunk forever.
            install_snapshot_timeout: 120_000,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
            max_payload_entries: self.max_payload_entries,
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
    cluster_id: ClusterId,
    write_timeout: Duration,
    membership_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A committed command: the state machine's response and the log index that carried it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub response: Vec<u8>,
    pub log_index: u64,
}

/// Who belongs to the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Log index of the membership entry in effect.
    pub log_index: u64,
}

fn not_leader(forward: openraft::error::ForwardToLeader<NodeId, NodeInfo>) -> ConsensusError {
    let leader = match (forward.leader_id, forward.leader_node) {
        (Some(id), Some(node)) => Some((id, node)),
        _ => None,
    };
    ConsensusError::NotLeader { leader }
}

fn client_write_error(e: ClientWriteError<NodeId, NodeInfo>) -> ConsensusError {
    match e {
        ClientWriteError::ForwardToLeader(forward) => not_leader(forward),
        ClientWriteError::ChangeMembershipError(e) => ConsensusError::Stopped {
            message: format!("membership change refused: {e}"),
        },
    }
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> RaftGroupError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            RaftGroupError::Consensus(not_leader(forward))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            RaftGroupError::Membership(e.to_string())
        }
        RaftError::Fatal(e) => RaftGroupError::Stopped(e.to_string()),
    }
}

/// How a node reaches and recognizes the other members of its group.
#[derive(Debug, Clone, Default)]
pub struct Peering {
    /// Sent on every Raft RPC and checked on every one received; it may be unknown at start and
    /// set later (a joining node).
    pub cluster_id: ClusterId,
    /// Plaintext or mutual TLS.
    pub transport: crate::PeerTransport,
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
        peering: Peering,
    ) -> Result<Self, RaftGroupError> {
        let Peering {
            cluster_id,
            transport,
        } = peering;
        config.validate()?;
        let openraft_config = Arc::new(config.to_openraft(region)?);
        let log_store =
            LogStore::new(db.clone()).map_err(|e| RaftGroupError::Storage(e.to_string()))?;
        let state_machine = StateMachineStore::new(db, handler, snapshot_dir)
            .map_err(|e| RaftGroupError::Storage(e.to_string()))?;
        let network = NetworkFactory::new(region, cluster_id.clone(), transport);
        let raft = Raft::new(node_id, openraft_config, network, log_store, state_machine)
            .await
            .map_err(|e| RaftGroupError::Stopped(e.to_string()))?;
        crate::metrics::spawn_exporter(raft.clone(), region.to_string());
        Ok(Self {
            raft,
            node_id,
            region: region.to_string(),
            cluster_id,
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            membership_lock: Arc::new(tokio::sync::Mutex::new(())),
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

    /// The cluster id this node sends and checks (shared with the caller's handle).
    pub fn cluster_id(&self) -> &ClusterId {
        &self.cluster_id
    }

    /// The gRPC service that receives this node's Raft RPCs. Messages over
    /// [`MAX_MESSAGE_BYTES`](crate::network::MAX_MESSAGE_BYTES) are refused with `OUT_OF_RANGE`
    /// before they are buffered.
    pub fn grpc_service(&self) -> RaftServiceServer<RaftGrpcService> {
        RaftServiceServer::new(RaftGrpcService::new(
            self.raft.clone(),
            self.region.clone(),
            self.cluster_id.clone(),
        ))
        .max_decoding_message_size(crate::network::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::network::MAX_MESSAGE_BYTES)
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
    /// leader). Returns the state machine's response and the entry's log index.
    pub async fn write(&self, command: Vec<u8>) -> Result<Applied, ConsensusError> {
        let proposal = self.raft.client_write(Command(command));
        match tokio::time::timeout(self.write_timeout, proposal).await {
            Err(_) => Err(ConsensusError::NoQuorum {
                timeout: self.write_timeout,
            }),
            Ok(Ok(response)) => Ok(Applied {
                response: response.data.0,
                log_index: response.log_id.index,
            }),
            Ok(Err(RaftError::APIError(e))) => Err(client_write_error(e)),
            Ok(Err(RaftError::Fatal(e))) => Err(ConsensusError::Stopped {
                message: e.to_string(),
            }),
        }
    }

    /// On the leader: confirms with a quorum that it still leads and returns the log index a
    /// linearizable read must see applied before it reads.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, ConsensusError> {
        match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
            Err(_) => Err(ConsensusError::NoQuorum { timeout }),
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(not_leader(forward))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ConsensusError::NoQuorum { timeout })
            }
            Ok(Err(RaftError::Fatal(e))) => Err(ConsensusError::Stopped {
                message: e.to_string(),
            }),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ConsensusError> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                let applied = metrics
                    .borrow_and_update()
                    .last_applied
                    .map(|l| l.index)
                    .unwrap_or(0);
                if applied >= index {
                    return Ok(());
                }
                if metrics.changed().await.is_err() {
                    return Err(ConsensusError::Stopped {
                        message: "raft metrics closed".into(),
                    });
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConsensusError::NoQuorum { timeout })?
    }

    /// The current membership as this node knows it.
    pub fn membership(&self) -> MembershipView {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let nodes = membership
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        MembershipView {
            voters,
            learners,
            nodes,
            log_index: metrics
                .membership_config
                .log_id()
                .map(|l| l.index)
                .unwrap_or(0),
        }
    }

    /// Adds a node (leader only): as a learner that first catches up with the log, then,
    /// unless `learner_only`, promoted to voter. One membership change at a time.
    pub async fn add_node(
        &self,
        id: NodeId,
        node: NodeInfo,
        learner_only: bool,
    ) -> Result<MembershipView, RaftGroupError> {
        let _serial = self.membership_lock.lock().await;
        let current = self.membership();
        // A voter's id is never reused: a node that asks to join under a voter's id has lost
        // that voter's log and vote (its disk was replaced), and letting it vote again could
        // elect a leader that lacks committed entries. Remove the old voter first.
        if current.voters.contains(&id) {
            return Err(RaftGroupError::Membership(format!(
                "node {id} is already a voter of the region; a node that lost its data must \
                 rejoin under a fresh id, or after `arca cluster remove-node --id {id}`"
            )));
        }
        if current.learners.contains(&id) && current.nodes.get(&id) != Some(&node) {
            return Err(RaftGroupError::Membership(format!(
                "node {id} is already a learner with different addresses ({:?})",
                current.nodes.get(&id)
            )));
        }
        if learner_only && current.learners.contains(&id) {
            return Ok(current);
        }
        if !current.learners.contains(&id) {
            self.raft
                .add_learner(id, node, true)
                .await
                .map_err(membership_error)?;
        }
        if !learner_only {
            let mut add = BTreeSet::new();
            add.insert(id);
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(add), false)
                .await
                .map_err(membership_error)?;
        }
        Ok(self.membership())
    }

    /// Removes a node from the voters and learners (leader only).
    pub async fn remove_node(&self, id: NodeId) -> Result<MembershipView, RaftGroupError> {
        let _serial = self.membership_lock.lock().await;
        let current = self.membership();
        let mut ids = BTreeSet::new();
        ids.insert(id);
        if current.voters.contains(&id) {
            if current.voters.len() == 1 {
                return Err(RaftGroupError::Membership(
                    "cannot remove the last voter".into(),
                ));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(ids), false)
                .await
                .map_err(membership_error)?;
        } else if current.learners.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(ids), false)
                .await
                .map_err(membership_error)?;
        } else {
            return Err(RaftGroupError::Membership(format!(
                "node {id} is not a member"
            )));
        }
        Ok(self.membership())
    }

    /// Stops Raft on this node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown did not complete cleanly");
        }
    }
}
