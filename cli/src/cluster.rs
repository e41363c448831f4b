//! `arca cluster …`: the region's status and membership, over the admin gRPC service, as a
//! `cluster-admin` (the token `arca login` stored, `--token`, or an operator certificate).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_proto::v1::{
    AckDivergentRequest, AddNodeRequest, ClusterStatusRequest, DivergentRequest, MemberStatus,
    PromoteRequest, RegionStatus, RemoveNodeRequest, UnfenceRequest, VerifyRequest,
};
use clap::Subcommand;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

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
        /// The new node's replication (QUIC) address, if it has one.
        #[arg(long, default_value = "")]
        replication: String,
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
    /// Make a mirror region the primary (run against a node of that region). Reports the data
    /// at risk first; needs --force when that is not zero or the primary still answers.
    Promote {
        /// The region to promote (must be the region of the --admin node).
        region: String,
        #[arg(long)]
        force: bool,
    },
    /// List the writes this region accepted as a primary after the fork point of the region
    /// that replaced it (their content is kept until acknowledged).
    Divergent {
        #[command(subcommand)]
        action: Option<DivergentAction>,
    },
    /// Let a primary region take writes before it heard from every peer region. After a
    /// start, each node of a primary with peer regions refuses writes until every peer
    /// answered and none is a newer primary; use this when a peer region is gone for good.
    Unfence,
    /// Compare this region with the regions it replicates with: metadata digests at the same
    /// entry, and referenced chunks present on every node.
    Verify,
}

#[derive(Subcommand)]
pub enum DivergentAction {
    /// List them (the default).
    List,
    /// Forget divergent writes the operator has dealt with, releasing their content.
    Ack {
        /// The seqs to forget.
        seqs: Vec<u64>,
        /// Forget every one.
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
    },
}

/// Where the admin service is and what the CLI proves to it.
pub struct AdminAccess {
    /// `host:port` or `http://…` (plaintext, loopback), or `https://…` (TLS; the cluster CA in
    /// `ARCA_CA_CERT`).
    pub address: String,
    /// A cluster-admin's access or session token (`arca login`, `--token`).
    pub token: Option<String>,
    /// An operator certificate and its key, presented over TLS.
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// The admin client: every call carries the token, if there is one.
type AdminClient = ClusterServiceClient<InterceptedService<Channel, WithToken>>;

#[derive(Clone)]
pub struct WithToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

async fn connect(access: &AdminAccess) -> anyhow::Result<AdminClient> {
    let url = if access.address.contains("://") {
        access.address.clone()
    } else {
        format!("http://{}", access.address)
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid --admin address {url:?}"))?
        .connect_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let ca = std::env::var_os("ARCA_CA_CERT").context(
            "an https:// admin address needs the cluster CA certificate in ARCA_CA_CERT",
        )?;
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("read {}", path.display()))
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(std::path::Path::new(&ca))?));
        if let Some((cert, key)) = &access.cert {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("TLS for the admin service")?;
    } else if access.cert.is_some() {
        anyhow::bail!("an operator certificate needs an https:// admin address");
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connect to the admin service at {url}"))?;
    let token = match &access.token {
        Some(token) => {
            let mut value = MetadataValue::try_from(format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    Ok(ClusterServiceClient::with_interceptor(
        channel,
        WithToken(token),
    ))
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn run(
    access: &AdminAccess,
    command: ClusterCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let mut client = connect(access).await?;
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
                    "regions": reply.regions.iter().map(region_json).collect::<Vec<_>>(),
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
                    if !reply.regions.is_empty() {
                        let rows = reply.regions.iter().map(region_row).collect();
                        println!(
                            "{}",
                            table(
                                &[
                                    "REGION",
                                    "ROLE",
                                    "EPOCH",
                                    "NODES",
                                    "SEQ",
                                    "LAG ENTRIES",
                                    "LAG SECONDS",
                                    "PENDING",
                                    "CONNECTED"
                                ],
                                rows
                            )
                        );
                    }
                    Ok(())
                }
            }
        }
        ClusterCommand::AddNode {
            id,
            grpc,
            http,
            replication,
            learner,
        } => {
            let reply = client
                .add_node(AddNodeRequest {
                    node_id: id,
                    grpc_addr: grpc,
                    http_addr: http,
                    replication_addr: replication,
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
        ClusterCommand::Promote { region, force } => {
            let reply = client
                .promote(PromoteRequest { region, force })
                .await
                .map_err(status_error)?
                .into_inner();
            let report = reply.report.clone().unwrap_or_default();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "promoted": reply.promoted,
                    "epoch": reply.epoch,
                    "message": reply.message,
                    "report": reply.report.as_ref().map(|r| json!({
                        "primary": r.primary,
                        "primary_seq": r.primary_seq,
                        "applied_seq": r.applied_seq,
                        "missing_entries": r.missing_entries,
                        "pending_bytes": r.pending_bytes,
                        "primary_reachable": r.primary_reachable,
                        "last_contact_seconds": (r.last_contact_seconds >= 0.0).then_some(r.last_contact_seconds),
                    })),
                }))?,
                OutputFormat::Table => {
                    if reply.report.is_some() {
                        println!(
                            "{}",
                            table(
                                &[
                                    "PRIMARY",
                                    "PRIMARY SEQ",
                                    "APPLIED SEQ",
                                    "MISSING ENTRIES",
                                    "PENDING",
                                    "PRIMARY REACHABLE",
                                    "LAST HEARD"
                                ],
                                vec![vec![
                                    report.primary.clone(),
                                    report.primary_seq.to_string(),
                                    report.applied_seq.to_string(),
                                    report.missing_entries.to_string(),
                                    crate::output::human_bytes(report.pending_bytes),
                                    if report.primary_reachable {
                                        "yes".into()
                                    } else {
                                        "no".into()
                                    },
                                    if report.last_contact_seconds >= 0.0 {
                                        format!("{:.1}s ago", report.last_contact_seconds)
                                    } else {
                                        "never".into()
                                    },
                                ]]
                            )
                        );
                    }
                    println!("{}", reply.message);
                }
            }
            if reply.promoted {
                Ok(())
            } else {
                anyhow::bail!("the region was not promoted")
            }
        }
        ClusterCommand::Divergent {
            action: Some(DivergentAction::Ack { seqs, all }),
        } => {
            if seqs.is_empty() && !all {
                anyhow::bail!("name the seqs to forget, or pass --all");
            }
            let reply = client
                .ack_divergent(AckDivergentRequest { seqs, all })
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({ "removed": reply.removed })),
                OutputFormat::Table => {
                    println!(
                        "forgot {} divergent writes and released their content",
                        reply.removed
                    );
                    Ok(())
                }
            }
        }
        ClusterCommand::Unfence => {
            let reply = client
                .unfence(UnfenceRequest { forwarded: false })
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({ "nodes": reply.nodes })),
                OutputFormat::Table => {
                    println!("nodes {:?} accept writes as the primary", reply.nodes);
                    Ok(())
                }
            }
        }
        ClusterCommand::Divergent { .. } => {
            let reply = client
                .divergent(DivergentRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "divergent": reply.writes.iter().map(|w| json!({
                        "epoch": w.epoch, "seq": w.seq, "at_ms": w.at_ms, "summary": w.summary,
                        "recorded_at_ms": w.recorded_at_ms, "content_bytes": w.content_bytes,
                    })).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => {
                    if reply.writes.is_empty() {
                        println!("no divergent writes");
                        return Ok(());
                    }
                    let rows = reply
                        .writes
                        .iter()
                        .map(|w| {
                            vec![
                                w.epoch.to_string(),
                                w.seq.to_string(),
                                format_ms(w.at_ms),
                                w.summary.clone(),
                            ]
                        })
                        .collect();
                    println!("{}", table(&["EPOCH", "SEQ", "ACCEPTED AT", "WRITE"], rows));
                    Ok(())
                }
            }
        }
        ClusterCommand::Verify => {
            let reply = client
                .verify(VerifyRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "consistent": reply.consistent,
                    "differences": reply.differences,
                    "regions": reply.regions.iter().map(|r| json!({
                        "region": r.region, "role": r.role, "epoch": r.epoch, "seq": r.seq, "digest": r.digest,
                        "referenced_chunks": r.referenced_chunks,
                        "nodes": r.nodes.iter().map(|n| json!({"node_id": n.node_id, "referenced": n.referenced, "missing": n.missing})).collect::<Vec<_>>(),
                        "error": (!r.error.is_empty()).then_some(&r.error),
                    })).collect::<Vec<_>>(),
                }))?,
                OutputFormat::Table => {
                    let rows = reply
                        .regions
                        .iter()
                        .map(|r| {
                            let missing: u64 = r.nodes.iter().map(|n| n.missing).sum();
                            vec![
                                r.region.clone(),
                                r.role.clone(),
                                r.epoch.to_string(),
                                r.seq.to_string(),
                                r.digest.chars().take(16).collect(),
                                r.referenced_chunks.to_string(),
                                missing.to_string(),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &["REGION", "ROLE", "EPOCH", "SEQ", "DIGEST", "CHUNKS", "MISSING"],
                            rows
                        )
                    );
                    if reply.consistent {
                        println!("regions agree");
                    } else {
                        for difference in &reply.differences {
                            println!("difference: {difference}");
                        }
                    }
                }
            }
            if reply.consistent {
                Ok(())
            } else {
                anyhow::bail!("the regions differ")
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

fn region_json(region: &RegionStatus) -> serde_json::Value {
    json!({
        "name": region.name,
        "role": region.role,
        "epoch": region.epoch,
        "nodes": region.nodes,
        "seq": region.seq,
        "lag_entries": region.lag_entries,
        "lag_seconds": region.lag_seconds,
        "pending_bytes": region.pending_bytes,
        "connected": region.connected,
        "local": region.local,
    })
}

fn region_row(region: &RegionStatus) -> Vec<String> {
    vec![
        if region.local {
            format!("{} (this)", region.name)
        } else {
            region.name.clone()
        },
        region.role.clone(),
        region.epoch.to_string(),
        region.nodes.to_string(),
        region.seq.to_string(),
        region.lag_entries.to_string(),
        format!("{:.1}", region.lag_seconds),
        crate::output::human_bytes(region.pending_bytes),
        if region.connected {
            "yes".into()
        } else {
            "no".into()
        },
    ]
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
