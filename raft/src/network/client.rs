//! The sending side: one lazily connected gRPC channel per peer, shared by every client.
//!
//! openraft asks the factory for a new client for each voter on every read barrier (and on many
//! other occasions), so a client is cheap: it borrows the peer's cached channel, which keeps one
//! HTTP/2 connection open (with keepalive pings, so a dead peer is noticed while idle) and
//! reconnects by itself when it breaks.
//!
//! AppendEntries must fit its deadline: openraft gives each one the heartbeat interval and may
//! put up to `max_payload_entries` entries in it, and a command can be MBs. So a client sends
//! only the prefix of the entries that fits the peer's byte budget (at least one entry) and
//! reports `PartialSuccess` up to the last entry it sent; openraft then sends the rest at once.
//! The budget adapts to the link: it halves when a call does not complete (openraft drops the
//! call's future at its deadline) and doubles after calls that complete well within it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_proto::v1::raft_service_client::RaftServiceClient;
use arca_proto::v1::{RaftReply, RaftRequest};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftLogId, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::PeerTransport;

use crate::cluster_id::ClusterId;
use crate::network::MAX_MESSAGE_BYTES;
use crate::storage::{decode, encode};
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keepalive: a ping this often, also while no call is in flight, so that a connection
/// to a peer that vanished (no RST, e.g. a partition) is found dead and replaced before the next
/// RPC needs it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a keepalive ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds [`NetworkClient`]s for openraft. Clones share the per-peer channels.
#[derive(Clone)]
pub struct NetworkFactory {
    region: String,
    cluster_id: ClusterId,
    transport: PeerTransport,
    peers: Arc<parking_lot::Mutex<HashMap<NodeId, Peer>>>,
}

/// What the clients of one peer share.
struct Peer {
    /// The address the channel connects to; a membership change may move the node.
    grpc_addr: String,
    channel: Result<Channel, String>,
    budget: Arc<AppendBudget>,
}

/// Encoded bytes of entries a peer's AppendEntries starts with: about 8 ms on a 1 Gbit/s link,
/// well within a 150 ms deadline, and about 200 ms at 5 MB/s, which a slow link then halves.
pub(crate) const APPEND_BUDGET_INITIAL: usize = 1 << 20;
/// The budget never goes below this: on a link too slow for 64 KiB per heartbeat interval,
/// Raft cannot keep a leader anyway.
pub(crate) const APPEND_BUDGET_MIN: usize = 64 << 10;
/// Nor above this, so a fast link still interleaves heartbeats with bounded requests. With one
/// entry over the budget going alone, this bounds an AppendEntries to the larger of
/// `APPEND_BUDGET_MAX` and one entry (see [`MAX_MESSAGE_BYTES`]).
pub(crate) const APPEND_BUDGET_MAX: usize = 16 << 20;

/// The byte budget of one peer's AppendEntries, shared by its clients.
#[derive(Debug)]
pub(crate) struct AppendBudget {
    bytes: AtomicUsize,
}

impl AppendBudget {
    fn new() -> Self {
        Self {
            bytes: AtomicUsize::new(APPEND_BUDGET_INITIAL),
        }
    }

    pub(crate) fn get(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn update(&self, f: impl Fn(usize) -> usize) -> usize {
        let mut current = self.get();
        loop {
            let next = f(current);
            match self.bytes.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }

    fn shrink(&self) -> usize {
        self.update(|b| (b / 2).max(APPEND_BUDGET_MIN))
    }

    fn grow(&self) -> usize {
        self.update(|b| b.saturating_mul(2).min(APPEND_BUDGET_MAX))
    }
}

/// Shrinks the budget when dropped armed: the AppendEntries it guards did not complete (openraft
/// dropped it at its deadline, or the deadline ended it).
struct BudgetGuard {
    budget: Arc<AppendBudget>,
    target: NodeId,
    armed: bool,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        if self.armed {
            let budget = self.budget.shrink();
            tracing::debug!(
                target = self.target,
                budget,
                "AppendEntries did not complete in time; budget halved"
            );
        }
    }
}

/// A `Write` that only counts: the encoded size of an entry without encoding it into memory.
struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encoded_len<T: Serialize>(value: &T) -> Result<usize, rmp_serde::encode::Error> {
    let mut counter = CountingWriter(0);
    rmp_serde::encode::write_named(&mut counter, value)?;
    Ok(counter.0)
}

/// Keeps the longest prefix of `rpc`'s entries whose encoded size fits `budget`, and at least
/// one entry. Returns the bytes kept and whether entries were dropped.
fn fit_to_budget(
    rpc: &mut AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Result<(usize, bool), rmp_serde::encode::Error> {
    let mut total = 0usize;
    let mut keep = 0usize;
    for entry in &rpc.entries {
        let len = encoded_len(entry)?;
        if keep > 0 && total + len > budget {
            break;
        }
        total += len;
        keep += 1;
    }
    let truncated = keep < rpc.entries.len();
    rpc.entries.truncate(keep);
    Ok((total, truncated))
}

fn connect(transport: &PeerTransport, grpc_addr: &str) -> Result<Channel, String> {
    transport.endpoint(grpc_addr).map(|endpoint| {
        endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy()
    })
}

impl NetworkFactory {
    /// A factory for the nodes of `region`, reached over `transport`; its clients send
    /// `cluster_id` on every RPC.
    pub fn new(region: impl Into<String>, cluster_id: ClusterId, transport: PeerTransport) -> Self {
        Self {
            region: region.into(),
            cluster_id,
            transport,
            peers: Arc::new(parking_lot::Mutex::new(HashMap::new())),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> NetworkClient {
        let channel = {
            let mut peers = self.peers.lock();
            match peers.get(&target) {
                Some(peer) if peer.grpc_addr == node.grpc_addr => {
                    (peer.channel.clone(), peer.budget.clone())
                }
                _ => {
                    // New peer, or it moved: the old channel closes when its last client drops.
                    tracing::debug!(target, addr = %node.grpc_addr, "new raft channel");
                    let peer = Peer {
                        grpc_addr: node.grpc_addr.clone(),
                        channel: connect(&self.transport, &node.grpc_addr),
                        budget: Arc::new(AppendBudget::new()),
                    };
                    let shared = (peer.channel.clone(), peer.budget.clone());
                    peers.insert(target, peer);
                    shared
                }
            }
        };
        let (channel, budget) = channel;
        NetworkClient {
            target,
            region: self.region.clone(),
            cluster_id: self.cluster_id.clone(),
            channel,
            budget,
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct NetworkClient {
    target: NodeId,
    region: String,
    cluster_id: ClusterId,
    channel: Result<Channel, String>,
    budget: Arc<AppendBudget>,
}

/// A failed call, and whether it failed by running out of time.
struct Failure<E: std::error::Error> {
    error: RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>,
    deadline: bool,
}

impl<E: std::error::Error> From<RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>> for Failure<E> {
    fn from(error: RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>) -> Self {
        Self {
            error,
            deadline: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl NetworkClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Failure<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = match &self.channel {
            Ok(channel) => channel.clone(),
            Err(e) => {
                return Err(
                    RPCError::Unreachable(Unreachable::new(&TransportError(e.clone()))).into(),
                )
            }
        };
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut grpc_request = tonic::Request::new(RaftRequest {
            region: self.region.clone(),
            payload,
            // Read per call: a joining node learns its id after it started.
            cluster_id: self.cluster_id.get().unwrap_or_default(),
        });
        grpc_request.set_timeout(option.hard_ttl());
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let result = match rpc {
            Rpc::AppendEntries => client.append_entries(grpc_request).await,
            Rpc::Vote => client.vote(grpc_request).await,
            Rpc::InstallSnapshot => client.install_snapshot(grpc_request).await,
        };
        let reply: RaftReply = match result {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let e = TransportError(format!("{}: {}", status.code(), status.message()));
                let error = match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                };
                // The server ends a call at the deadline the request carries.
                let deadline = matches!(
                    status.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                );
                return Err(Failure { error, deadline });
            }
        };
        if !reply.error.is_empty() {
            let remote: RaftError<NodeId, E> =
                decode(&reply.error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            return Err(RPCError::RemoteError(RemoteError::new(self.target, remote)).into());
        }
        Ok(decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?)
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let mut rpc = rpc;
        if rpc.entries.is_empty() {
            // A heartbeat: nothing to fit, nothing to learn about the budget.
            return self
                .call(Rpc::AppendEntries, &rpc, &option)
                .await
                .map_err(|f| f.error);
        }
        let budget = self.budget.get();
        let (sent_bytes, truncated) = fit_to_budget(&mut rpc, budget)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let last_sent = rpc.entries.last().map(|entry| *entry.get_log_id());
        if sent_bytes >= MAX_MESSAGE_BYTES {
            // One entry alone over the transport's bound: it can never be sent, and openraft
            // will retry it forever. Say so loudly; the proposer should have refused it.
            tracing::error!(
                target = self.target,
                entry = ?last_sent,
                bytes = sent_bytes,
                limit = MAX_MESSAGE_BYTES,
                "raft log entry too large to replicate"
            );
        }
        let mut guard = BudgetGuard {
            budget: self.budget.clone(),
            target: self.target,
            armed: true,
        };
        let started = Instant::now();
        let result = self.call(Rpc::AppendEntries, &rpc, &option).await;
        match &result {
            Err(failure) if failure.deadline => {} // the guard shrinks the budget
            Err(_) => guard.armed = false,         // unreachable, refused: not a matter of size
            Ok(_) => {
                guard.armed = false;
                // Grow only on evidence: a call that carried most of the budget, fast.
                if started.elapsed() < option.hard_ttl() / 3 && sent_bytes * 2 >= budget {
                    let grown = self.budget.grow();
                    if grown != budget {
                        tracing::debug!(
                            target = self.target,
                            budget = grown,
                            "AppendEntries budget doubled"
                        );
                    }
                }
            }
        }
        drop(guard);
        match result {
            // The Caution of `PartialSuccess`: the matching log id is that of the last entry
            // sent, which is after `prev_log_id`, and only a reply from the peer proves it.
            Ok(AppendEntriesResponse::Success) if truncated => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            Ok(response) => Ok(response),
            Err(failure) => Err(failure.error),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option)
            .await
            .map_err(|f| f.error)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option)
            .await
            .map_err(|f| f.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Entry, LogId};
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    fn request(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        let entries = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                payload: EntryPayload::Normal(Command(vec![7; size])),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    #[test]
    fn entries_are_cut_to_the_budget_but_one_always_goes() {
        let mut rpc = request(&[100_000, 100_000, 100_000]);
        let (bytes, truncated) = fit_to_budget(&mut rpc, 250_000).expect("fit");
        assert_eq!(rpc.entries.len(), 2);
        assert!(truncated);
        assert!(bytes > 200_000 && bytes <= 250_000, "{bytes}");

        let mut rpc = request(&[1_000_000, 10]);
        let (bytes, truncated) = fit_to_budget(&mut rpc, 64 << 10).expect("fit");
        assert_eq!(
            rpc.entries.len(),
            1,
            "an entry over the budget still goes alone"
        );
        assert!(truncated);
        assert!(bytes > 1_000_000);

        let mut rpc = request(&[10, 10]);
        let (_, truncated) = fit_to_budget(&mut rpc, 64 << 10).expect("fit");
        assert_eq!(rpc.entries.len(), 2);
        assert!(!truncated);
    }

    #[test]
    fn the_counted_size_is_the_encoded_size() {
        let rpc = request(&[12_345]);
        let entry = &rpc.entries[0];
        assert_eq!(
            encoded_len(entry).expect("count"),
            encode(entry).expect("encode").len()
        );
    }

    #[test]
    fn the_budget_halves_on_a_dropped_call_and_stays_within_bounds() {
        let budget = Arc::new(AppendBudget::new());
        assert_eq!(budget.get(), APPEND_BUDGET_INITIAL);
        // A call dropped before completing, as openraft does at its deadline.
        drop(BudgetGuard {
            budget: budget.clone(),
            target: 2,
            armed: true,
        });
        assert_eq!(budget.get(), APPEND_BUDGET_INITIAL / 2);
        drop(BudgetGuard {
            budget: budget.clone(),
            target: 2,
            armed: false,
        });
        assert_eq!(budget.get(), APPEND_BUDGET_INITIAL / 2);
        for _ in 0..20 {
            budget.shrink();
        }
        assert_eq!(budget.get(), APPEND_BUDGET_MIN);
        for _ in 0..20 {
            budget.grow();
        }
        assert_eq!(budget.get(), APPEND_BUDGET_MAX);
    }
}
