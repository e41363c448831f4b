//! The node's place in its region: proposing through the Raft leader from any node, read
//! barriers for read-your-writes on every node, pushing new chunks to a quorum before a command
//! can reference them, and getting chunks this node lacks from its peers.

pub mod chunk_check;
pub mod chunk_service;
pub mod grpc_error;
pub mod peers;
pub mod read_index;
pub mod replicate;
pub mod resync;
pub mod status;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_proto::v1::{NodeStatusRequest, ProposeRequest, ReadIndexRequest};
use arca_raft::{Applied, ConsensusError, NodeId, NodeInfo, RaftGroup};
use bytes::Bytes;
use futures::future::BoxFuture;
use metrics::counter;

use crate::config::ClusterConfig;
use crate::digest::ChunkId;
use crate::error::{Error, Result};
use crate::metadata::codec::{decode, encode};
use crate::metadata::format::{advertises, FormatSet};
use crate::metadata::model::ChunkRef;
use crate::metadata::model::{
    Command, Outcome, BASE_COMMAND_VERSION, COMMAND_VERSION, MAX_COMMAND_BYTES,
};
use crate::storage::blob_stream::ChunkSource;
use crate::storage::chunk_store::ChunkStore;
use peers::Peers;
use resync::Resync;

/// How a read was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// After a read-index round with the leader: every write acknowledged before the read
    /// started is visible.
    Linearizable,
    /// From this node's applied state only, because the leader could not confirm in time and
    /// the client accepted a possibly stale answer.
    Local,
    /// Content named by its digest, or in an immutable repository: a local hit is proof, no
    /// barrier needed (a miss runs one).
    Immutable,
}

impl ReadConsistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReadConsistency::Linearizable => "linearizable",
            ReadConsistency::Local => "local",
            ReadConsistency::Immutable => "immutable",
        }
    }
}

/// This node's membership in its region.
pub struct Region {
    pub raft: RaftGroup,
    pub node_id: NodeId,
    pub name: String,
    pub self_info: NodeInfo,
    pub peers: Peers,
    pub chunks: Arc<ChunkStore>,
    pub resync: Arc<Resync>,
    pub config: ClusterConfig,
    /// Set once this node has been fully caught up since it started (see `status::readiness`).
    pub caught_up: AtomicBool,
    /// The command versions voters reported (see [`Region::require_version`]).
    voter_versions: parking_lot::Mutex<std::collections::HashMap<NodeId, u32>>,
    /// The formats each voter reported it applies (`name@version`), once asked.
    voter_formats: parking_lot::Mutex<std::collections::HashMap<NodeId, Vec<String>>>,
    /// The formats this node applies.
    pub formats: FormatSet,
    /// Read barriers in flight, coalesced.
    reads: read_index::Coalescer,
    write_timeout: Duration,
}

/// One leadership confirmation: on the leader, a quorum round; elsewhere, the leader's answer.
async fn confirm(
    raft: &RaftGroup,
    peers: &Peers,
    node_id: NodeId,
    timeout: Duration,
) -> std::result::Result<u64, String> {
    let leader = raft.raft().metrics().borrow().current_leader;
    match leader {
        Some(leader) if leader == node_id => {
            raft.read_index(timeout).await.map_err(|e| e.to_string())
        }
        Some(leader) => {
            let Some(info) = raft.membership().nodes.get(&leader).cloned() else {
                return Err(format!("leader {leader} is not in this node's membership"));
            };
            let mut request = tonic::Request::new(ReadIndexRequest {});
            request.set_timeout(timeout);
            match peers.cluster_client(&info).read_index(request).await {
                Ok(reply) => Ok(reply.into_inner().read_index),
                Err(status) => Err(format!(
                    "the leader at {} did not confirm: {}",
                    info.grpc_addr,
                    status.message()
                )),
            }
        }
        None => Err("no raft leader is known".into()),
    }
}

/// Encodes a command, refusing one larger than [`MAX_COMMAND_BYTES`].
fn encode_bounded(command: &Command) -> Result<Vec<u8>> {
    let bytes = encode(command)?;
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(Error::TooLarge {
            limit: MAX_COMMAND_BYTES as u64,
        });
    }
    Ok(bytes)
}

/// The first voter whose command version is below `required`; a voter whose version could
/// not be learned counts as the base version.
pub fn first_unsupported(
    required: u32,
    versions: &[(NodeId, Option<u32>)],
) -> Option<(NodeId, u32)> {
    versions.iter().find_map(|(id, version)| {
        let version = version.unwrap_or(BASE_COMMAND_VERSION);
        (version < required).then_some((*id, version))
    })
}

/// The first voter that does not report applying `format` at `version` (a voter that could not
/// be asked counts as not applying it).
pub fn first_lacking_format(
    format: &str,
    version: u32,
    voters: &[(NodeId, Option<Vec<String>>)],
) -> Option<NodeId> {
    voters.iter().find_map(|(id, formats)| {
        let applies = formats
            .as_deref()
            .is_some_and(|list| advertises(list, format, version));
        (!applies).then_some(*id)
    })
}

impl Region {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raft: RaftGroup,
        self_info: NodeInfo,
        peers: Peers,
        chunks: Arc<ChunkStore>,
        resync: Arc<Resync>,
        config: ClusterConfig,
        write_timeout: Duration,
        formats: FormatSet,
    ) -> Self {
        Self {
            node_id: raft.node_id(),
            name: raft.region().to_string(),
            raft,
            self_info,
            peers,
            chunks,
            resync,
            config,
            caught_up: AtomicBool::new(false),
            voter_versions: Default::default(),
            voter_formats: Default::default(),
            formats,
            reads: Default::default(),
            write_timeout,
        }
    }

    fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let id = self.raft.raft().metrics().borrow().current_leader?;
        let info = self.raft.membership().nodes.get(&id).cloned()?;
        Some((id, info))
    }

    /// Proposes a command from any node: locally on the leader, forwarded to it otherwise.
    /// Returns once the command is applied on *this* node, so a read here sees it.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Applied> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            match self.raft.write(command.clone()).await {
                Ok(applied) => return Ok(applied),
                Err(ConsensusError::NotLeader {
                    leader: Some((leader, info)),
                }) if leader != self.node_id => {
                    return self.forward(&info, command, deadline).await;
                }
                Err(ConsensusError::NotLeader { .. }) => {
                    // An election is under way: wait for a leader, within the write timeout.
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(Duration::from_millis(20).min(remaining)).await;
                    if remaining.is_zero() || self.raft.wait_for_leader(remaining).await.is_err() {
                        return Err(Error::NoQuorum {
                            reason: format!(
                                "no raft leader was elected within {:?}",
                                self.write_timeout
                            ),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn forward(
        &self,
        leader: &NodeInfo,
        command: Vec<u8>,
        deadline: Instant,
    ) -> Result<Applied> {
        counter!("arca_raft_forwarded_writes_total").increment(1);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut request = tonic::Request::new(ProposeRequest {
            region: self.name.clone(),
            command,
        });
        request.set_timeout(remaining);
        let reply = self
            .peers
            .cluster_client(leader)
            .propose(request)
            .await
            .map_err(|status| Error::NoQuorum {
                reason: format!(
                    "forwarding the write to the leader at {} failed ({}: {}); it may or may not have been applied",
                    leader.grpc_addr,
                    status.code(),
                    status.message()
                ),
            })?
            .into_inner();
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait_applied(reply.log_index, remaining.max(Duration::from_millis(100)))
            .await?;
        Ok(Applied {
            response: reply.response,
            log_index: reply.log_index,
        })
    }

    /// Proposes a client write (see [`Region::propose`]) and decodes what applying it did.
    pub async fn propose_command(&self, command: &Command) -> Result<Outcome> {
        if !command.is_client_write() {
            return Err(Error::Internal(format!(
                "{} is not a client write; it is proposed with propose_local",
                command.kind()
            )));
        }
        let command = self.fit_to_voters(command).await?;
        let bytes = encode_bounded(&command)?;
        let applied = self.propose(bytes).await?;
        decode(&applied.response)
    }

    /// The command in an encoding every voter of the region applies: itself, or, while some
    /// voter is older than the format envelope, the encoding of before it
    /// ([`Command::legacy_form`]); `MIXED_VERSIONS` when there is none.
    pub async fn fit_to_voters<'c>(
        &self,
        command: &'c Command,
    ) -> Result<std::borrow::Cow<'c, Command>> {
        let required = command.required_version();
        let checked = match self.require_version(required).await {
            Ok(()) => {
                let mut checked = Ok(());
                for (format, version) in command.formats_used() {
                    checked = self.require_format(&format, version).await;
                    if checked.is_err() {
                        break;
                    }
                }
                checked
            }
            Err(refused) => Err(refused),
        };
        match checked {
            Ok(()) => Ok(std::borrow::Cow::Borrowed(command)),
            // A voter that cannot be asked (it is down) may be older: the encoding of before
            // the envelope, which every voter applies, when the command has one.
            Err(refused @ (Error::MixedVersions { .. } | Error::FormatNotEverywhere { .. })) => {
                match command.legacy_form() {
                    Some(legacy) if legacy.required_version() < required => {
                        self.require_version(legacy.required_version()).await?;
                        Ok(std::borrow::Cow::Owned(legacy))
                    }
                    _ => Err(refused),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Proposes one of this node's own commands (role changes, promotion, replicated batches,
    /// snapshot staging, retention): only on the leader, never forwarded, so a node that lost
    /// leadership mid-way fails with `NO_QUORUM` instead of having a deposed leader's work
    /// applied through the new one.
    pub async fn propose_local(&self, command: &Command) -> Result<Outcome> {
        let command = self.fit_to_voters(command).await?;
        let bytes = encode_bounded(&command)?;
        if self.leader().map(|(id, _)| id) != Some(self.node_id) {
            return Err(Error::NoQuorum {
                reason: format!(
                    "this node no longer leads the region; {} is proposed by the leader",
                    command.kind()
                ),
            });
        }
        let applied = self.raft.write(bytes).await?;
        decode(&applied.response)
    }

    /// Refuses a command kind some voter of the region is too old to apply. Voters' versions
    /// are asked once and remembered (a node is upgraded, not downgraded, in place).
    pub async fn require_version(&self, required: u32) -> Result<()> {
        if required <= BASE_COMMAND_VERSION
            || self.resync.catalog().applied_versions(None)? >= required
        {
            return Ok(());
        }
        let membership = self.raft.membership();
        let mut versions = Vec::new();
        for voter in &membership.voters {
            if *voter == self.node_id {
                versions.push((*voter, Some(COMMAND_VERSION)));
                continue;
            }
            let known = self.voter_versions.lock().get(voter).copied();
            let version = match known {
                Some(version) if version >= required => Some(version),
                _ => match membership.nodes.get(voter) {
                    Some(info) => self.ask_version(*voter, info).await,
                    None => None,
                },
            };
            versions.push((*voter, version));
        }
        match first_unsupported(required, &versions) {
            None => Ok(()),
            Some((node, version)) => Err(Error::MixedVersions {
                node,
                version,
                required,
            }),
        }
    }

    /// Refuses a format command some voter does not apply (at `version`): a format added in
    /// a release waits until the whole region runs it. Voters' lists are asked once and
    /// remembered, and asked again while they lack the format.
    pub async fn require_format(&self, format: &str, version: u32) -> Result<()> {
        // Applied here already: every voter applies it (a voter that is down included).
        if self.resync.catalog().applied_versions(Some(format))? >= version {
            return Ok(());
        }
        let membership = self.raft.membership();
        let mut voters = Vec::new();
        for voter in &membership.voters {
            if *voter == self.node_id {
                voters.push((*voter, Some(self.formats.advertised())));
                continue;
            }
            let known = self.voter_formats.lock().get(voter).cloned();
            let formats = match known {
                Some(list) if advertises(&list, format, version) => Some(list),
                _ => match membership.nodes.get(voter) {
                    Some(info) => {
                        self.ask_version(*voter, info).await;
                        self.voter_formats.lock().get(voter).cloned()
                    }
                    None => None,
                },
            };
            voters.push((*voter, formats));
        }
        match first_lacking_format(format, version, &voters) {
            None => Ok(()),
            Some(node) => Err(Error::FormatNotEverywhere {
                node,
                format: format.to_string(),
                version,
            }),
        }
    }

    async fn ask_version(&self, id: NodeId, info: &NodeInfo) -> Option<u32> {
        let mut request = tonic::Request::new(NodeStatusRequest {});
        request.set_timeout(Duration::from_secs(1));
        let reply = self
            .peers
            .cluster_client(info)
            .node_status(request)
            .await
            .ok()?;
        let reply = reply.into_inner();
        let version = reply.command_version.max(BASE_COMMAND_VERSION);
        self.voter_versions.lock().insert(id, version);
        self.voter_formats.lock().insert(id, reply.formats);
        Some(version)
    }

    /// Makes `ids` durable on a majority of this region's voters (this node must hold them).
    pub async fn replicate_chunks(&self, ids: &[ChunkId]) -> Result<()> {
        let membership = self.raft.membership();
        replicate::to_quorum(
            membership.voters.contains(&self.node_id),
            membership.voters.len(),
            &self.peers,
            &self.chunks,
            ids,
            Duration::from_secs(self.config.chunk_lease_secs),
            self.write_timeout,
        )
        .await
    }

    /// A read index from a leadership confirmation that began after this call, shared with
    /// every read that arrived at the same time (see [`read_index`]).
    pub async fn read_index(&self) -> Result<u64> {
        let timeout = Duration::from_millis(self.config.read_barrier_timeout_ms);
        let raft = self.raft.clone();
        let peers = self.peers.clone();
        let node_id = self.node_id;
        let round = self.reads.round(move || {
            let raft = raft.clone();
            let peers = peers.clone();
            Box::pin(async move { confirm(&raft, &peers, node_id, timeout).await })
        });
        match tokio::time::timeout(timeout * 2, round).await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(reason)) => Err(Error::NotReady { reason }),
            Err(_) => Err(Error::NotReady {
                reason: format!("the leader did not confirm within {:?}", timeout * 2),
            }),
        }
    }

    /// Makes this node's state current before a read: a (coalesced) read-index round with the
    /// leader, then waiting to apply up to it. When that cannot complete within
    /// `read_barrier_timeout_ms` (no quorum, or this node too slow to apply), the read is
    /// refused with `NOT_READY`, unless the caller accepts possibly stale data
    /// (`allow_stale`): then it is served from this node's state and says so.
    pub async fn read_barrier(&self, allow_stale: bool) -> Result<ReadConsistency> {
        let timeout = Duration::from_millis(self.config.read_barrier_timeout_ms);
        let started = Instant::now();
        let failure = match self.read_index().await {
            Ok(index) => {
                let remaining = timeout
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(50));
                match self.raft.wait_applied(index, remaining).await {
                    Ok(()) => {
                        counter!("arca_region_read_barriers_total", "outcome" => "linearizable")
                            .increment(1);
                        return Ok(ReadConsistency::Linearizable);
                    }
                    Err(_) => format!(
                        "this node did not apply up to the leader's index {index} within {timeout:?}"
                    ),
                }
            }
            Err(e) => e.to_string(),
        };
        if allow_stale {
            counter!("arca_region_read_barriers_total", "outcome" => "local").increment(1);
            counter!("arca_region_local_reads_total").increment(1);
            return Ok(ReadConsistency::Local);
        }
        counter!("arca_region_read_barriers_total", "outcome" => "refused").increment(1);
        Err(Error::NotReady {
            reason: format!(
                "cannot confirm this node sees every acknowledged write ({failure}); retry, or \
                 accept a possibly stale read with the header {}: stale-ok",
                crate::http_common::READ_CONSISTENCY
            ),
        })
    }

    /// Reads a chunk: locally if this node holds a good copy, else from a peer (stored here on
    /// the way); a corrupt local copy is replaced by a peer's good one.
    pub async fn read_chunk(&self, id: ChunkId) -> Result<Bytes> {
        let store = self.chunks.clone();
        let local = tokio::task::spawn_blocking(move || ChunkStore::read(&store, &id))
            .await
            .map_err(|e| Error::internal("chunk reader panicked", e))?;
        let reason = match local {
            Ok(data) => return Ok(data),
            Err(Error::MissingChunk { .. }) => resync::FetchReason::Read,
            Err(Error::CorruptChunk { .. }) => resync::FetchReason::Repair,
            Err(other) => return Err(other),
        };
        match self.resync.fetch(id, reason).await {
            Ok(data) => Ok(data),
            Err(fetch_error) => {
                tracing::warn!(chunk = %id, error = %fetch_error, "no peer could supply the chunk");
                match reason {
                    resync::FetchReason::Repair => Err(Error::CorruptChunk { chunk: id.to_hex() }),
                    _ => Err(Error::MissingChunk { chunk: id.to_hex() }),
                }
            }
        }
    }
}

impl ChunkSource for Region {
    fn load(self: Arc<Self>, chunk: ChunkRef) -> BoxFuture<'static, Result<Bytes>> {
        Box::pin(async move { self.read_chunk(chunk.id).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_command_is_proposed_only_once_every_voter_applies_the_format() {
        let both = || Some(vec!["generic@1".to_string(), "oci@1".to_string()]);
        assert_eq!(
            first_lacking_format("oci", 1, &[(1, both()), (2, both())]),
            None
        );
        // A newer payload version than a voter applies.
        assert_eq!(
            first_lacking_format("oci", 2, &[(1, Some(vec!["oci@2".into()])), (2, both())]),
            Some(2)
        );
        // A format one voter does not know, and a voter that could not be asked.
        assert_eq!(
            first_lacking_format("npm", 1, &[(1, Some(vec!["npm@1".into()])), (3, both())]),
            Some(3)
        );
        assert_eq!(
            first_lacking_format("oci", 1, &[(1, both()), (4, None)]),
            Some(4)
        );
        // A name that merely ends like another is not that format.
        assert_eq!(
            first_lacking_format("ci", 1, &[(1, Some(vec!["oci@1".into()]))]),
            Some(1)
        );
    }

    #[test]
    fn a_kind_is_proposed_only_once_every_voter_knows_it() {
        assert_eq!(first_unsupported(1, &[(1, Some(2)), (2, None)]), None);
        assert_eq!(first_unsupported(2, &[(1, Some(2)), (2, Some(2))]), None);
        assert_eq!(
            first_unsupported(2, &[(1, Some(2)), (2, Some(1)), (3, Some(2))]),
            Some((2, 1))
        );
        // A voter that could not be asked is assumed to be as old as can be.
        assert_eq!(
            first_unsupported(2, &[(1, Some(2)), (3, None)]),
            Some((3, 1))
        );
    }
}
