//! The sending side: one lazily connected gRPC channel per peer, shared by every client.
//!
//! openraft asks the factory for a new client for each voter on every read barrier (and on many
//! other occasions), so a client is cheap: it borrows the peer's cached channel, which keeps one
//! HTTP/2 connection open (with keepalive pings, so a dead peer is noticed while idle) and
//! reconnects by itself when it breaks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

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
    peers: Arc<parking_lot::Mutex<HashMap<NodeId, Peer>>>,
}

/// What the clients of one peer share.
struct Peer {
    /// The address the channel connects to; a membership change may move the node.
    grpc_addr: String,
    channel: Result<Channel, String>,
}

fn connect(grpc_addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{grpc_addr}"))
        .map(|endpoint| {
            endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .connect_lazy()
        })
        .map_err(|e| format!("invalid address {grpc_addr:?}: {e}"))
}

impl NetworkFactory {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
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
                Some(peer) if peer.grpc_addr == node.grpc_addr => peer.channel.clone(),
                _ => {
                    // New peer, or it moved: the old channel closes when its last client drops.
                    tracing::debug!(target, addr = %node.grpc_addr, "new raft channel");
                    let peer = Peer {
                        grpc_addr: node.grpc_addr.clone(),
                        channel: connect(&node.grpc_addr),
                    };
                    let channel = peer.channel.clone();
                    peers.insert(target, peer);
                    channel
                }
            }
        };
        NetworkClient {
            target,
            region: self.region.clone(),
            channel,
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct NetworkClient {
    target: NodeId,
    region: String,
    channel: Result<Channel, String>,
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
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = match &self.channel {
            Ok(channel) => channel.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    e.clone(),
                ))))
            }
        };
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut grpc_request = tonic::Request::new(RaftRequest {
            region: self.region.clone(),
            payload,
        });
        grpc_request.set_timeout(option.hard_ttl());
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let result = match rpc {
            Rpc::AppendEntries => client.append_entries(grpc_request).await,
            Rpc::Vote => client.vote(grpc_request).await,
            Rpc::InstallSnapshot => client.install_snapshot(grpc_request).await,
        };
        let reply: RaftReply = match result {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let e = TransportError(format!("{}: {}", status.code(), status.message()));
                return Err(match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        if !reply.error.is_empty() {
            let remote: RaftError<NodeId, E> =
                decode(&reply.error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            return Err(RPCError::RemoteError(RemoteError::new(self.target, remote)));
        }
        decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
