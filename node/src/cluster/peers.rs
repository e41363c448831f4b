//! gRPC channels to the other nodes of the region, one per node, reused across calls.

use std::collections::HashMap;
use std::time::Duration;

use arca_proto::v1::chunk_service_client::ChunkServiceClient;
use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_raft::{NodeId, NodeInfo, RaftGroup};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message between nodes: a chunk is at most 16 MiB (FastCDC's upper bound).
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// The region's other nodes, as the Raft membership names them.
#[derive(Clone)]
pub struct Peers {
    self_id: NodeId,
    raft: RaftGroup,
    channels: std::sync::Arc<Mutex<HashMap<String, Channel>>>,
}

/// A member of the region other than this node.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: NodeId,
    pub info: NodeInfo,
    pub voter: bool,
}

impl Peers {
    pub fn new(self_id: NodeId, raft: RaftGroup) -> Self {
        Self {
            self_id,
            raft,
            channels: Default::default(),
        }
    }

    /// Every other member (voters and learners).
    pub fn others(&self) -> Vec<Peer> {
        let membership = self.raft.membership();
        membership
            .nodes
            .into_iter()
            .filter(|(id, _)| *id != self.self_id)
            .map(|(id, info)| Peer {
                id,
                voter: membership.voters.contains(&id),
                info,
            })
            .collect()
    }

    /// A lazily connected channel to `addr` (`host:port`), shared by every call to it.
    pub fn channel(&self, addr: &str) -> Channel {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return channel.clone();
        }
        let channel = match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(endpoint) => endpoint
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy(),
            // An address that is not a URI cannot come from a valid membership; a channel to
            // nowhere makes every call fail with a clear transport error.
            Err(_) => Endpoint::from_static("http://0.0.0.0:0").connect_lazy(),
        };
        channels.insert(addr.to_string(), channel.clone());
        channel
    }

    pub fn cluster_client(&self, node: &NodeInfo) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel(&node.grpc_addr))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn chunk_client(&self, node: &NodeInfo) -> ChunkServiceClient<Channel> {
        ChunkServiceClient::new(self.channel(&node.grpc_addr))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}
