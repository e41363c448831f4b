//! What a node reports about itself and about its region (`arca cluster status`, `/readyz`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use arca_proto::v1::{ClusterStatusReply, MemberStatus, NodeStatusReply, NodeStatusRequest};
use openraft::ServerState;

use crate::region::Region;

/// This node's own view of the region.
pub async fn node_status(region: &Region) -> NodeStatusReply {
    let metrics = region.raft.raft().metrics().borrow().clone();
    let membership = region.raft.membership();
    let role = match metrics.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
        ServerState::Follower if membership.voters.contains(&region.node_id) => "follower",
        ServerState::Follower | ServerState::Learner => "learner",
    };
    let (ready, _) = readiness(region).await;
    NodeStatusReply {
        node_id: region.node_id,
        region: region.name.clone(),
        grpc_addr: region.self_info.grpc_addr.clone(),
        http_addr: region.self_info.http_addr.clone(),
        role: role.to_string(),
        term: metrics.current_term,
        leader_id: metrics.current_leader.unwrap_or(0),
        last_log_index: metrics.last_log_index.unwrap_or(0),
        applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        resync_backlog: region.resync.backlog(),
        ready,
        command_version: crate::metadata::model::COMMAND_VERSION,
        cluster_id: region.raft.cluster_id().get().unwrap_or_default(),
        formats: region.formats.advertised(),
    }
}

/// Whether this node should receive traffic, and if not, why: it must know a leader, belong
/// to the region, have applied (nearly) everything the leader holds, and hold every chunk its
/// metadata references (up to `ready_max_resync_backlog`).
pub async fn readiness(region: &Region) -> (bool, String) {
    let metrics = region.raft.raft().metrics().borrow().clone();
    if metrics.state == ServerState::Shutdown {
        return (false, "raft is not running on this node".into());
    }
    if let Err(fatal) = &metrics.running_state {
        return (false, format!("raft stopped on this node: {fatal}"));
    }
    match region.raft.cluster_id().standing() {
        arca_raft::Standing::Blank => {
            return (
                false,
                "this node holds no region data: start it with --init-region to create a new region, or with --join to be added to one".into(),
            )
        }
        arca_raft::Standing::Joining => {
            return (false, "this node is joining the region".into())
        }
        arca_raft::Standing::Member => {}
    }
    let Some(leader) = metrics.current_leader else {
        return (false, "no raft leader is known".into());
    };
    let membership = region.raft.membership();
    if !membership.nodes.contains_key(&region.node_id) {
        return (false, "this node is not a member of the region yet".into());
    }
    let applied = metrics.last_applied.map(|l| l.index).unwrap_or(0);
    let leader_last_index = if leader == region.node_id {
        metrics.last_log_index.unwrap_or(0)
    } else {
        let Some(info) = membership.nodes.get(&leader) else {
            return (
                false,
                format!("leader {leader} is not in the membership this node knows"),
            );
        };
        let mut request = tonic::Request::new(NodeStatusRequest {});
        request.set_timeout(Duration::from_secs(1));
        match region.peers.cluster_client(info).node_status(request).await {
            Ok(reply) => reply.into_inner().last_log_index,
            Err(status) => {
                return (
                    false,
                    format!("cannot reach the leader: {}", status.message()),
                )
            }
        }
    };
    let lag = leader_last_index.saturating_sub(applied);
    // A node that has not yet caught up since it started must catch up fully once before it
    // takes traffic; after that, a small lag under load is tolerated.
    let allowed = if region.caught_up.load(Ordering::SeqCst) {
        region.config.ready_max_apply_lag
    } else {
        0
    };
    if lag > allowed {
        return (false, format!("{lag} log entries behind the leader"));
    }
    if !region.resync.settled() {
        return (
            false,
            "still checking which referenced chunks are missing here".into(),
        );
    }
    let backlog = region.resync.backlog();
    if backlog > region.config.ready_max_resync_backlog {
        return (
            false,
            format!("{backlog} referenced chunks are still missing here"),
        );
    }
    region.caught_up.store(true, Ordering::SeqCst);
    (true, "ready".into())
}

/// Every member's status, asked of each member directly.
pub async fn cluster_status(region: &Region) -> ClusterStatusReply {
    let membership = region.raft.membership();
    let local = node_status(region).await;
    let mut probes = Vec::new();
    for (id, info) in &membership.nodes {
        let id = *id;
        let info = info.clone();
        let local = local.clone();
        let peers = region.peers.clone();
        let is_self = id == region.node_id;
        probes.push(async move {
            if is_self {
                return (id, info, Ok(local));
            }
            let mut request = tonic::Request::new(NodeStatusRequest {});
            request.set_timeout(Duration::from_secs(1));
            let reply = peers.cluster_client(&info).node_status(request).await;
            (
                id,
                info,
                reply
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{}: {}", s.code(), s.message())),
            )
        });
    }
    let results = futures::future::join_all(probes).await;
    let leader_last_index = results
        .iter()
        .find_map(|(id, _, status)| match status {
            Ok(status) if *id == local.leader_id => Some(status.last_log_index),
            _ => None,
        })
        .unwrap_or(local.last_log_index);
    let members = results
        .into_iter()
        .map(|(id, info, status)| {
            let membership_kind = if membership.voters.contains(&id) {
                "voter"
            } else {
                "learner"
            };
            match status {
                Ok(status) => MemberStatus {
                    node_id: id,
                    grpc_addr: info.grpc_addr,
                    http_addr: info.http_addr,
                    membership: membership_kind.into(),
                    reachable: true,
                    lag_entries: leader_last_index.saturating_sub(status.applied_index),
                    status: Some(status),
                    error: String::new(),
                },
                Err(error) => MemberStatus {
                    node_id: id,
                    grpc_addr: info.grpc_addr,
                    http_addr: info.http_addr,
                    membership: membership_kind.into(),
                    reachable: false,
                    lag_entries: 0,
                    status: None,
                    error,
                },
            }
        })
        .collect();
    ClusterStatusReply {
        region: region.name.clone(),
        leader_id: local.leader_id,
        term: local.term,
        members,
        regions: Vec::new(),
    }
}
