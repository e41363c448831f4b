//! The gRPC cluster service: status, membership changes, write forwarding, read barriers, and
//! the operator's region RPCs (promotion, divergent writes, verify), which is why it sits above
//! both [`crate::region`] and [`crate::geo`].
//! Calls that need the leader are answered by it; other nodes forward membership changes and
//! refuse proposals with the leader's identity (the proposer forwards those itself).

use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::cluster_service_server::ClusterService;
use arca_proto::v1::{
    AckDivergentReply, AckDivergentRequest, AddNodeRequest, CheckChunksReply, CheckChunksRequest,
    ClusterStatusReply, ClusterStatusRequest, DivergentReply, DivergentRequest, MembershipReply,
    MirrorsReply, MirrorsRequest, NodeStatusReply, NodeStatusRequest, PromoteReply, PromoteRequest,
    ProposeReply, ProposeRequest, ReadIndexReply, ReadIndexRequest, RemoveNodeRequest,
    UnfenceReply, UnfenceRequest, VerifyReply, VerifyRequest,
};
use arca_raft::{MembershipView, NodeInfo};
use tonic::{Request, Response, Status};

use crate::auth::grpc::Caller;
use crate::auth::Auth;
use crate::geo::Geo;
use crate::metadata::model::{Command, Outcome, MAX_COMMAND_BYTES};
use crate::region::peers::FORWARD_DEADLINE;
use crate::region::{grpc_error, status, Region};

/// Answers an RPC that needs the leader from the leader when this node is not it: forwards
/// the request (with `deadline`) and returns its answer.
macro_rules! forward_to_leader {
    ($service:ident, $request:ident, $method:ident, $deadline:expr) => {
        if let Some(leader) = $service.leader_info() {
            let credential = $request.metadata().get("authorization").cloned();
            let forwarded = forwarded(credential.as_ref(), $request.into_inner(), $deadline);
            return $service
                .region
                .peers
                .cluster_client(&leader)
                .$method(forwarded)
                .await;
        }
    };
}

pub struct ClusterGrpcService {
    region: Arc<Region>,
    geo: Arc<Geo>,
    auth: Arc<Auth>,
}

impl ClusterGrpcService {
    pub fn new(region: Arc<Region>, geo: Arc<Geo>, auth: Arc<Auth>) -> Self {
        Self { region, geo, auth }
    }

    fn leader_info(&self) -> Option<NodeInfo> {
        let leader = self.region.raft.raft().metrics().borrow().current_leader?;
        if leader == self.region.node_id {
            return None;
        }
        self.region.raft.membership().nodes.get(&leader).cloned()
    }
}

/// A learner catches up before it becomes a voter: adding one may take minutes.
const ADD_NODE_DEADLINE: Duration = Duration::from_secs(600);

/// `message` for another node, with `deadline` and the caller's `credential` (its
/// `authorization`): the node that answers decides on the operator's credential, not on this
/// node's certificate.
fn forwarded<T>(
    credential: Option<&tonic::metadata::AsciiMetadataValue>,
    message: T,
    deadline: Duration,
) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    if let Some(credential) = credential {
        request
            .metadata_mut()
            .insert("authorization", credential.clone());
    }
    request
}

/// Counts and logs a proposal refused at the boundary.
fn refuse_proposal(reason: &'static str, status: Status) -> Status {
    metrics::counter!("arca_cluster_refused_proposals_total", "reason" => reason).increment(1);
    tracing::warn!(
        reason,
        message = status.message(),
        "refused a proposal at the boundary"
    );
    status
}

fn membership_reply(view: MembershipView, cluster_id: Option<String>) -> MembershipReply {
    MembershipReply {
        voters: view.voters.into_iter().collect(),
        learners: view.learners.into_iter().collect(),
        log_index: view.log_index,
        cluster_id: cluster_id.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterGrpcService {
    async fn node_status(
        &self,
        _: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusReply>, Status> {
        Ok(Response::new(status::node_status(&self.region).await))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        // Replication lag lives on the leader (it runs a mirror's subscription): ask it.
        if let Some(leader) = self.leader_info() {
            let forwarded = self
                .region
                .peers
                .cluster_client(&leader)
                .cluster_status(forwarded(
                    request.metadata().get("authorization"),
                    ClusterStatusRequest {},
                    FORWARD_DEADLINE,
                ))
                .await;
            if let Ok(reply) = forwarded {
                return Ok(reply);
            }
        }
        let mut reply = status::cluster_status(&self.region).await;
        reply.regions = crate::geo::status::regions(&self.geo).await;
        Ok(Response::new(reply))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        forward_to_leader!(self, request, add_node, ADD_NODE_DEADLINE);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        if request.node_id == 0 || request.grpc_addr.is_empty() || request.http_addr.is_empty() {
            return Err(Status::invalid_argument(
                "node_id, grpc_addr and http_addr are required",
            ));
        }
        let node = NodeInfo {
            grpc_addr: request.grpc_addr,
            http_addr: request.http_addr,
            replication_addr: request.replication_addr,
        };
        tracing::info!(node_id = request.node_id, %node, learner_only = request.learner_only, "adding node to the region");
        let added = self
            .region
            .raft
            .add_node(request.node_id, node.clone(), request.learner_only)
            .await;
        caller.audit(
            &self.auth,
            "cluster.add_node",
            format!(
                "node {} ({node}){}",
                request.node_id,
                if request.learner_only {
                    " as a learner"
                } else {
                    ""
                }
            ),
            &added,
        );
        let view = added.map_err(grpc_error::from_group)?;
        tracing::info!(node_id = request.node_id, voters = ?view.voters, learners = ?view.learners, "membership changed");
        Ok(Response::new(membership_reply(
            view,
            self.region.raft.cluster_id().get(),
        )))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        forward_to_leader!(self, request, remove_node, FORWARD_DEADLINE);
        let caller = Caller::of(&request);
        let node_id = request.into_inner().node_id;
        tracing::info!(node_id, principal = %caller.principal, "removing node from the region");
        let removed = self.region.raft.remove_node(node_id).await;
        caller.audit(
            &self.auth,
            "cluster.remove_node",
            format!("node {node_id}"),
            &removed,
        );
        let view = removed.map_err(grpc_error::from_group)?;
        Ok(Response::new(membership_reply(
            view,
            self.region.raft.cluster_id().get(),
        )))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let request = request.into_inner();
        if request.region != self.region.name {
            return Err(refuse_proposal(
                "wrong_region",
                Status::failed_precondition(format!(
                    "proposal for region {:?} sent to region {:?}",
                    request.region, self.region.name
                )),
            ));
        }
        // The proposal boundary: only a client write another node of this region forwards may
        // come in here. It is decoded and checked before it can reach the log, so no bytes a
        // peer sends can become an entry that every node would have to apply.
        if request.command.len() > MAX_COMMAND_BYTES {
            return Err(refuse_proposal(
                "too_large",
                Status::invalid_argument(format!(
                    "a command is at most {MAX_COMMAND_BYTES} bytes; this one has {}",
                    request.command.len()
                )),
            ));
        }
        let command: Command = crate::metadata::codec::decode(&request.command).map_err(|_| {
            refuse_proposal(
                "undecodable",
                Status::invalid_argument("the proposal is not a command this node knows"),
            )
        })?;
        if !command.is_client_write() {
            return Err(refuse_proposal(
                "internal_command",
                Status::permission_denied(format!(
                    "{} commands are proposed only by the leader itself, never through the \
                     cluster service",
                    command.kind()
                )),
            ));
        }
        self.region
            .require_version(command.required_version())
            .await
            .map_err(grpc_error::from_error)?;
        let applied = self
            .region
            .raft
            .write(request.command)
            .await
            .map_err(grpc_error::from_consensus)?;
        Ok(Response::new(ProposeReply {
            response: applied.response,
            log_index: applied.log_index,
        }))
    }

    async fn read_index(
        &self,
        _: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        if self.leader_info().is_some() {
            return Err(Status::failed_precondition(
                "not the leader; ask the leader for a read index",
            ));
        }
        // Coalesced with every other read this leader confirms.
        let read_index = self
            .region
            .read_index()
            .await
            .map_err(grpc_error::from_error)?;
        Ok(Response::new(ReadIndexReply { read_index }))
    }

    async fn mirrors(&self, _: Request<MirrorsRequest>) -> Result<Response<MirrorsReply>, Status> {
        Ok(Response::new(crate::geo::status::mirrors_reply(&self.geo)))
    }

    async fn promote(
        &self,
        request: Request<PromoteRequest>,
    ) -> Result<Response<PromoteReply>, Status> {
        forward_to_leader!(self, request, promote, FORWARD_DEADLINE);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let resource = format!(
            "region {}{}",
            request.region,
            if request.force { " (forced)" } else { "" }
        );
        if request.region != self.region.name {
            let refused = Status::failed_precondition(format!(
                "this node belongs to region {:?}, not {:?}",
                self.region.name, request.region
            ));
            caller.audit(
                &self.auth,
                "region.promote",
                resource,
                &Err::<(), _>(refused.message()),
            );
            return Err(refused);
        }
        let promoted = crate::geo::status::promote(&self.geo, request.force).await;
        // Recorded once this region is the primary (a mirror's audit events stay in its log).
        caller.audit(&self.auth, "region.promote", resource, &promoted);
        promoted.map(Response::new).map_err(grpc_error::from_error)
    }

    async fn divergent(
        &self,
        _: Request<DivergentRequest>,
    ) -> Result<Response<DivergentReply>, Status> {
        self.region
            .read_barrier(false)
            .await
            .map_err(grpc_error::from_error)?;
        crate::geo::status::divergent(&self.geo)
            .map(Response::new)
            .map_err(grpc_error::from_error)
    }

    async fn check_chunks(
        &self,
        _: Request<CheckChunksRequest>,
    ) -> Result<Response<CheckChunksReply>, Status> {
        crate::region::chunk_check::check_chunks(&self.region)
            .await
            .map(Response::new)
            .map_err(grpc_error::from_error)
    }

    async fn verify(&self, _: Request<VerifyRequest>) -> Result<Response<VerifyReply>, Status> {
        Ok(Response::new(crate::geo::status::verify(&self.geo).await))
    }

    async fn ack_divergent(
        &self,
        request: Request<AckDivergentRequest>,
    ) -> Result<Response<AckDivergentReply>, Status> {
        forward_to_leader!(self, request, ack_divergent, FORWARD_DEADLINE);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        if request.seqs.is_empty() && !request.all {
            return Err(Status::invalid_argument(
                "name the divergent writes to forget, or ask for all of them",
            ));
        }
        let seqs = if request.all {
            Vec::new()
        } else {
            request.seqs
        };
        let resource = if seqs.is_empty() {
            "every divergent write".to_string()
        } else {
            format!("divergent writes {seqs:?}")
        };
        let acknowledged = self
            .region
            .propose_local(&Command::AckDivergent { seqs })
            .await;
        caller.audit(&self.auth, "region.ack_divergent", resource, &acknowledged);
        match acknowledged {
            Ok(Outcome::DivergentAcknowledged { removed }) => {
                tracing::warn!(removed, "divergent writes acknowledged by an operator");
                Ok(Response::new(AckDivergentReply { removed }))
            }
            Ok(other) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(e) => Err(grpc_error::from_error(e)),
        }
    }

    async fn unfence(
        &self,
        request: Request<UnfenceRequest>,
    ) -> Result<Response<UnfenceReply>, Status> {
        let caller = Caller::of(&request);
        let was_forwarded = request.get_ref().forwarded;
        self.geo.open_write_gate();
        tracing::warn!(forwarded = was_forwarded, principal = %caller.principal, "an operator lifted the start-up write gate");
        caller.audit(
            &self.auth,
            "region.unfence",
            format!("node {}", self.region.node_id),
            &Ok::<(), String>(()),
        );
        let mut nodes = vec![self.region.node_id];
        if !was_forwarded {
            for peer in self.region.peers.others() {
                let to_peer = forwarded(
                    request.metadata().get("authorization"),
                    UnfenceRequest { forwarded: true },
                    Duration::from_secs(5),
                );
                match self
                    .region
                    .peers
                    .cluster_client(&peer.info)
                    .unfence(to_peer)
                    .await
                {
                    Ok(_) => nodes.push(peer.id),
                    Err(status) => {
                        tracing::warn!(node = peer.id, error = %status, "could not lift the write gate on a peer")
                    }
                }
            }
        }
        Ok(Response::new(UnfenceReply { nodes }))
    }
}
