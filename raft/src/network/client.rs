//! The sending side: one lazily connected gRPC channel per peer.

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

/// Builds [`NetworkClient`]s for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    region: String,
    connect_timeout: Duration,
}

impl NetworkFactory {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> NetworkClient {
        let channel = Endpoint::from_shared(format!("http://{}", node.grpc_addr))
            .map(|endpoint| {
                endpoint
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .map_err(|e| e.to_string());
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
