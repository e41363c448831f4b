//! Joining a region (`--join`) and settling the region's cluster id.

use std::path::Path;
use std::time::Duration;

use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_proto::v1::{AddNodeRequest, ClusterStatusRequest, NodeStatusRequest};
use tokio_util::sync::CancellationToken;

use super::identity::adopt_cluster_id;
use crate::region::Region;

/// Asks the region reachable at `join` to add this node, until it is a member: first learns
/// the region's cluster id (so that the region's Raft messages are accepted and no other
/// cluster's are), then asks for this node to be added under its id, which must not be a
/// voter's. The node votes only once added.
pub(super) async fn join_region(region: &Region, join: &str, data_dir: &Path) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if region.raft.membership().nodes.contains_key(&region.node_id)
            && region.raft.cluster_id().standing() == arca_raft::Standing::Member
        {
            return;
        }
        let channel = region.peers.channel(join);
        let mut client = ClusterServiceClient::new(channel);
        if region.raft.cluster_id().standing() == arca_raft::Standing::Blank {
            // This node's log is empty. If the region already counts it as a member, it lost
            // that member's data: its empty log would contradict what the leader knows it
            // holds (openraft stops the leader on such a reversion), and its vote would count
            // with a forgotten log. It stays out until the old member is removed.
            let status = match client.cluster_status(ClusterStatusRequest {}).await {
                Ok(reply) => reply.into_inner(),
                Err(status) => {
                    tracing::warn!(join, code = ?status.code(), message = status.message(), "cannot reach the region to join; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if status.members.iter().any(|m| m.node_id == region.node_id) {
                tracing::error!(
                    node_id = region.node_id,
                    "the region already has a member with this node's id, and this node holds no data: it will not join under that id; remove the old member (arca cluster remove-node --id {}) or start this node with a fresh --node-id",
                    region.node_id
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            match client.node_status(NodeStatusRequest {}).await {
                Ok(reply) => {
                    let id = reply.into_inner().cluster_id;
                    if !id.is_empty() {
                        region.raft.cluster_id().set(id);
                    }
                }
                Err(status) => {
                    tracing::warn!(join, code = ?status.code(), message = status.message(), "cannot reach the region to join; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            region
                .raft
                .cluster_id()
                .set_standing(arca_raft::Standing::Joining);
        }
        let request = AddNodeRequest {
            node_id: region.node_id,
            grpc_addr: region.self_info.grpc_addr.clone(),
            http_addr: region.self_info.http_addr.clone(),
            replication_addr: region.self_info.replication_addr.clone(),
            learner_only: false,
        };
        match client.add_node(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if !reply.cluster_id.is_empty() {
                    if let Err(e) =
                        adopt_cluster_id(data_dir, region.raft.cluster_id(), &reply.cluster_id)
                    {
                        tracing::error!(error = %e, "could not record the region's cluster id");
                    }
                }
                region
                    .raft
                    .cluster_id()
                    .set_standing(arca_raft::Standing::Member);
                tracing::info!(voters = ?reply.voters, learners = ?reply.learners, "joined the region");
                return;
            }
            Err(status) => {
                tracing::warn!(join, code = ?status.code(), message = status.message(), "join attempt failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Makes sure the region records a cluster id (one written by a node older than cluster ids
/// has none: its leader records this node's, or a new one), and that this node knows it.
pub(super) async fn settle_cluster_id(
    region: &Region,
    data_dir: &Path,
    cancel: &CancellationToken,
) {
    let catalog = region.resync.catalog().clone();
    loop {
        match catalog.cluster_id() {
            Ok(Some(id)) => {
                if let Err(e) = adopt_cluster_id(data_dir, region.raft.cluster_id(), &id) {
                    tracing::error!(error = %e, "the region's cluster id does not match this node's");
                }
                return;
            }
            Ok(None) => {
                let leads =
                    region.raft.raft().metrics().borrow().current_leader == Some(region.node_id);
                if leads {
                    let id = region
                        .raft
                        .cluster_id()
                        .get()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                    if let Err(e) = region
                        .propose_local(&crate::metadata::model::Command::SetClusterId { id })
                        .await
                    {
                        tracing::debug!(error = %e, "could not record the cluster id yet");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "read the cluster id"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
