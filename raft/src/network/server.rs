//! The receiving side: checks that an RPC is for this region and cluster, and hands it, decoded,
//! to the local Raft. Messages over `MAX_MESSAGE_BYTES` are refused by tonic before they are
//! buffered (see [`crate::RaftGroup::grpc_service`]).

use arca_proto::v1::raft_service_server::RaftService;
use arca_proto::v1::{RaftReply, RaftRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::cluster_id::{ClusterId, RpcKind};
use crate::storage::{decode, encode};
use crate::Raft;

/// The tonic service for Raft RPCs addressed to this node.
pub struct RaftGrpcService {
    raft: Raft,
    region: String,
    cluster_id: ClusterId,
}

impl RaftGrpcService {
    pub fn new(raft: Raft, region: impl Into<String>, cluster_id: ClusterId) -> Self {
        Self {
            raft,
            region: region.into(),
            cluster_id,
        }
    }

    fn decode_request<T: DeserializeOwned>(
        &self,
        request: Request<RaftRequest>,
        kind: RpcKind,
    ) -> Result<T, Status> {
        let request = request.into_inner();
        if request.region != self.region {
            return Err(Status::failed_precondition(format!(
                "raft message for region {:?} sent to a node of region {:?}",
                request.region, self.region
            )));
        }
        self.cluster_id
            .check(&request.cluster_id, kind)
            .map_err(Status::failed_precondition)?;
        decode(&request.payload)
            .map_err(|e| Status::invalid_argument(format!("decode raft message: {e}")))
    }
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftReply>, Status> {
    let reply = match result {
        Ok(value) => RaftReply {
            payload: encode(&value)
                .map_err(|e| Status::internal(format!("encode raft reply: {e}")))?,
            error: Vec::new(),
        },
        Err(error) => RaftReply {
            payload: Vec::new(),
            error: encode(&error)
                .map_err(|e| Status::internal(format!("encode raft error: {e}")))?,
        },
    };
    Ok(Response::new(reply))
}

#[tonic::async_trait]
impl RaftService for RaftGrpcService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode_request(request, RpcKind::Replication)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode_request(request, RpcKind::Vote)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode_request(request, RpcKind::Replication)?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}
