//! `arca cluster …`: the region's status and membership, over the admin gRPC service.

use anyhow::Context;
use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_proto::v1::{AddNodeRequest, ClusterStatusRequest, MemberStatus, RemoveNodeRequest};
use clap::Subcommand;
use serde_json::json;
use tonic::transport::Channel;

use crate::output::{print_json, table, OutputFormat};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show every node of the region: role, term, leader, applied index, lag, resync backlog.
    Status,
    /// Add a node: it joins as a learner, catches up, and is promoted to voter.
    AddNode {
        /// The new node's id (unique in the region).
        #[arg(long)]
        id: u64,
        /// The new node's gRPC address (host:port).
        #[arg(long)]
        grpc: String,
        /// The new node's HTTP address (host:port).
        #[arg(long)]
        http: String,
        /// Keep it a learner (a non-voting replica).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node from the region.
    RemoveNode {
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
}

async fn connect(admin: &str) -> anyhow::Result<ClusterServiceClient<Channel>> {
    let url = if admin.contains("://") {
        admin.to_string()
    } else {
        format!("http://{admin}")
    };
    ClusterServiceClient::connect(url.clone())
        .await
        .with_context(|| format!("connect to the admin service at {url}"))
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn run(admin: &str, command: ClusterCommand, output: OutputFormat) -> anyhow::Result<()> {
    let mut client = connect(admin).await?;
    match command {
        ClusterCommand::Status => {
            let reply = client
                .cluster_status(ClusterStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "region": reply.region,
                    "leader_id": reply.leader_id,
                    "term": reply.term,
                    "nodes": reply.members.iter().map(member_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => {
                    println!(
                        "region {}  term {}  leader {}",
                        reply.region,
                        reply.term,
                        if reply.leader_id == 0 {
                            "none".to_string()
                        } else {
                            reply.leader_id.to_string()
                        }
                    );
                    let rows = reply.members.iter().map(member_row).collect();
                    println!(
                        "{}",
                        table(
                            &[
                                "NODE",
                                "ROLE",
                                "GRPC",
                                "HTTP",
                                "TERM",
                                "LEADER",
                                "APPLIED",
                                "BEHIND",
                                "RESYNC",
                                "REACHABLE",
                                "READY"
                            ],
                            rows
                        )
                    );
                    Ok(())
                }
            }
        }
        ClusterCommand::AddNode {
            id,
            grpc,
            http,
            learner,
        } => {
            let reply = client
                .add_node(AddNodeRequest {
                    node_id: id,
                    grpc_addr: grpc,
                    http_addr: http,
                    learner_only: learner,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => {
                    print_json(&json!({"voters": reply.voters, "learners": reply.learners}))
                }
                OutputFormat::Table => {
                    println!(
                        "added node {id}; voters {:?}, learners {:?}",
                        reply.voters, reply.learners
                    );
                    Ok(())
                }
            }
        }
        ClusterCommand::RemoveNode { id } => {
            let reply = client
                .remove_node(RemoveNodeRequest { node_id: id })
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => {
                    print_json(&json!({"voters": reply.voters, "learners": reply.learners}))
                }
                OutputFormat::Table => {
                    println!(
                        "removed node {id}; voters {:?}, learners {:?}",
                        reply.voters, reply.learners
                    );
                    Ok(())
                }
            }
        }
    }
}

fn member_json(member: &MemberStatus) -> serde_json::Value {
    let status = member.status.clone().unwrap_or_default();
    json!({
        "node_id": member.node_id,
        "grpc_addr": member.grpc_addr,
        "http_addr": member.http_addr,
        "membership": member.membership,
        "reachable": member.reachable,
        "error": (!member.error.is_empty()).then_some(&member.error),
        "role": member.reachable.then_some(status.role),
        "term": member.reachable.then_some(status.term),
        "leader_id": member.reachable.then_some(status.leader_id),
        "last_log_index": member.reachable.then_some(status.last_log_index),
        "applied_index": member.reachable.then_some(status.applied_index),
        "lag_entries": member.reachable.then_some(member.lag_entries),
        "resync_backlog": member.reachable.then_some(status.resync_backlog),
        "ready": member.reachable.then_some(status.ready),
    })
}

fn member_row(member: &MemberStatus) -> Vec<String> {
    let unknown = || "-".to_string();
    match (&member.status, member.reachable) {
        (Some(status), true) => vec![
            member.node_id.to_string(),
            status.role.clone(),
            member.grpc_addr.clone(),
            member.http_addr.clone(),
            status.term.to_string(),
            status.leader_id.to_string(),
            status.applied_index.to_string(),
            member.lag_entries.to_string(),
            status.resync_backlog.to_string(),
            "yes".into(),
            if status.ready {
                "yes".into()
            } else {
                "no".into()
            },
        ],
        _ => vec![
            member.node_id.to_string(),
            member.membership.clone(),
            member.grpc_addr.clone(),
            member.http_addr.clone(),
            unknown(),
            unknown(),
            unknown(),
            unknown(),
            unknown(),
            "no".into(),
            unknown(),
        ],
    }
}
