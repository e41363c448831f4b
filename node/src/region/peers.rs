//! gRPC channels to the other nodes of the region, one per node, reused across calls.

use std::collections::HashMap;
use std::time::Duration;

use arca_proto::v1::chunk_service_client::ChunkServiceClient;
use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_raft::{NodeId, NodeInfo, PeerTransport, RaftGroup};
use parking_lot::Mutex;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The metadata key that carries the sender's cluster id on cluster and chunk RPCs.
pub const CLUSTER_ID_HEADER: &str = "arca-cluster-id";

/// Adds this node's cluster id to every request to a peer.
#[derive(Clone)]
pub struct ClusterHeader(arca_raft::ClusterId);

impl tonic::service::Interceptor for ClusterHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = self.0.get() {
            if let Ok(value) = id.parse() {
                request.metadata_mut().insert(CLUSTER_ID_HEADER, value);
            }
        }
        Ok(request)
    }
}

/// A channel to a peer that says which cluster the caller belongs to.
pub type PeerChannel = InterceptedService<Channel, ClusterHeader>;

/// Refuses a cluster or chunk RPC from another cluster (a node that carries no id, an older
/// node or the CLI, is served; so is any caller while this node does not know its id).
pub fn check_cluster(
    cluster_id: &arca_raft::ClusterId,
    request: &tonic::Request<()>,
) -> Result<(), tonic::Status> {
    let theirs = request
        .metadata()
        .get(CLUSTER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match cluster_id.get() {
        Some(mine) if !theirs.is_empty() && mine != theirs => {
            metrics::counter!("arca_cluster_refused_rpcs_total", "reason" => "cluster_id")
                .increment(1);
            Err(tonic::Status::failed_precondition(format!(
                "request from cluster {theirs:?} sent to a node of cluster {mine:?}"
            )))
        }
        _ => Ok(()),
    }
}

/// Largest gRPC message between nodes: a chunk is at most 16 MiB (FastCDC's upper bound).
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Deadline of one chunk read from a peer.
pub const CHUNK_READ_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of a presence check (with leases) at a peer.
pub const HAS_CHUNKS_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of an admin call forwarded to the leader.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(30);

/// The deadline of a push of `bytes` of chunks: 10 s, and a second per 8 MiB (a peer slower
/// than that is not helping the quorum).
pub fn push_deadline(bytes: u64) -> Duration {
    Duration::from_secs(10 + bytes / (8 << 20))
}

/// The region's other nodes, as the Raft membership names them.
#[derive(Clone)]
pub struct Peers {
    self_id: NodeId,
    raft: RaftGroup,
    transport: PeerTransport,
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
    pub fn new(self_id: NodeId, raft: RaftGroup, transport: PeerTransport) -> Self {
        Self {
            self_id,
            raft,
            transport,
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
        let channel = match self.transport.endpoint(addr) {
            // Keepalive: a peer that stops answering (SIGSTOP, a black-holed host) is noticed
            // in seconds, and every call also carries its own deadline.
            Ok(endpoint) => endpoint
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .connect_lazy(),
            // An address that is not a URI cannot come from a valid membership; a channel to
            // nowhere makes every call fail with a clear transport error.
            Err(_) => Endpoint::from_static("http://0.0.0.0:0").connect_lazy(),
        };
        channels.insert(addr.to_string(), channel.clone());
        channel
    }

    fn intercepted(&self, addr: &str) -> PeerChannel {
        InterceptedService::new(
            self.channel(addr),
            ClusterHeader(self.raft.cluster_id().clone()),
        )
    }

    pub fn cluster_client(&self, node: &NodeInfo) -> ClusterServiceClient<PeerChannel> {
        ClusterServiceClient::new(self.intercepted(&node.grpc_addr))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn chunk_client(&self, node: &NodeInfo) -> ChunkServiceClient<PeerChannel> {
        ChunkServiceClient::new(self.intercepted(&node.grpc_addr))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}
