//! Faults the harness injects, and how each is applied to and healed on a running [`Cluster`].
//!
//! A fault is applied, held for its duration, then healed before the next one starts, so fault
//! windows never overlap and the report can shade each one. Targets named by role ("the
//! leader") are resolved when the fault starts; everything else comes from the seeded plan.

use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::Serialize;

use crate::cluster::{region_name, Cluster};
use crate::history::History;
use crate::proxy::{Direction, LinkShape};

mod disk;
mod failover;

pub use disk::{corrupt_chunks, restore_unsynced_state, save_unsynced_state, UnsyncedState};
use failover::{double_failover, primary_loss};

/// Bandwidth of a slowed gRPC link into a node.
const SLOW_GRPC_MBIT: u64 = 50;

/// A slowed gRPC link into a node: the scenario's latency, half of it again as jitter, and a
/// bandwidth cap. Derived from the latency alone, so a seed's schedule does not change.
fn slow_grpc_shape(latency_ms: u64) -> LinkShape {
    LinkShape {
        cut: false,
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(latency_ms / 2),
        loss_per_mille: 0,
        bandwidth: Some(SLOW_GRPC_MBIT * 1_000_000 / 8),
    }
}

/// Which way a region partition drops traffic.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Way {
    Both,
    /// The mirror's datagrams toward the primary are dropped (acks, subscriptions).
    MirrorToPrimary,
    /// The primary's datagrams toward the mirror are dropped (the change stream).
    PrimaryToMirror,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` the region's Raft leader, restart it after the hold.
    KillLeader { region: usize },
    /// `kill -9` a node, restart it after the hold.
    KillNode { region: usize, node: u64 },
    /// `SIGSTOP` the region's leader, `SIGCONT` after the hold.
    PauseLeader { region: usize },
    /// `SIGSTOP` a node, `SIGCONT` after the hold.
    PauseNode { region: usize, node: u64 },
    /// Cut a mirror region's QUIC links to the primary (one way or both).
    PartitionRegion { region: usize, way: Way },
    /// Cut every inbound gRPC connection to a node (Raft and chunk RPCs from its peers); its
    /// own requests to peers still flow, so this is a one-way partition of the node.
    IsolateNodeInbound { region: usize, node: u64 },
    /// Delay every gRPC read into a node.
    SlowNodeGrpc {
        region: usize,
        node: u64,
        latency_ms: u64,
    },
    /// Shape a mirror region's links like a bad WAN: delay, jitter, loss, bandwidth.
    FlakyWan {
        region: usize,
        latency_ms: u64,
        jitter_ms: u64,
        loss_per_mille: u16,
        mbit: u64,
    },
    /// Stop a node (SIGTERM), flip bytes in `count` stored chunks in its RocksDB, restart it.
    CorruptChunks {
        region: usize,
        node: u64,
        count: usize,
        pick: u64,
    },
    /// Restart every node of a region in turn (SIGTERM, start, wait ready).
    RollingRestart { region: usize },
    /// Kill every node of the primary region, force-promote `mirror`, and after the hold bring
    /// the old primary back (it must demote itself and list its divergent writes).
    PrimaryLossPromote { mirror: usize },
    /// Two failovers: lose the primary and force-promote `first`, then lose `first` and
    /// force-promote `second`; then both come back and must become mirrors of `second`, each
    /// listing its own divergent writes.
    DoubleFailover { first: usize, second: usize },
    /// A node's disk is replaced: `kill -9`, its data directory wiped, restarted with `--join`
    /// under its old id. It must stay out (no second region, no vote with a forgotten log);
    /// after `arca cluster remove-node` it joins again as a new member and catches up.
    WipeNode { region: usize, node: u64 },
    /// A large upload (past the logged first 8 MiB) is broken off half-way and retried in full
    /// through a node of the region; once acknowledged, every node of the region is killed with
    /// `kill -9` (a power cut) and restarted: the retried upload must read back whole.
    UploadRetryKill {
        region: usize,
        node: u64,
        round: u64,
    },
}

impl Fault {
    pub fn describe(&self) -> String {
        match self {
            Fault::KillLeader { region } => format!("kill -9 leader of {}", region_name(*region)),
            Fault::KillNode { region, node } => {
                format!("kill -9 {}-{node}", region_name(*region))
            }
            Fault::PauseLeader { region } => {
                format!("SIGSTOP leader of {}", region_name(*region))
            }
            Fault::PauseNode { region, node } => {
                format!("SIGSTOP {}-{node}", region_name(*region))
            }
            Fault::PartitionRegion { region, way } => {
                format!("partition {} from primary ({way:?})", region_name(*region))
            }
            Fault::IsolateNodeInbound { region, node } => {
                format!("cut gRPC into {}-{node}", region_name(*region))
            }
            Fault::SlowNodeGrpc {
                region,
                node,
                latency_ms,
                        } => format!(
                "slow gRPC into {}-{node}: {latency_ms} ms + up to {} ms jitter, {SLOW_GRPC_MBIT} Mbit/s",
                region_name(*region),
                latency_ms / 2
            ),
            Fault::FlakyWan {
                region,
                latency_ms,
                jitter_ms,
                loss_per_mille,
                mbit,
            } => format!(
                "WAN {}: {latency_ms}±{jitter_ms} ms, {}.{}% loss, {mbit} Mbit/s",
                region_name(*region),
                loss_per_mille / 10,
                loss_per_mille % 10
            ),
            Fault::CorruptChunks {
                region,
                node,
                count,
                ..
            } => format!("corrupt {count} chunks on {}-{node}", region_name(*region)),
            Fault::RollingRestart { region } => {
                format!("rolling restart of {}", region_name(*region))
            }
            Fault::PrimaryLossPromote { mirror } => format!(
                "lose primary region, force-promote {}",
                region_name(*mirror)
            ),
            Fault::DoubleFailover { first, second } => format!(
                "lose the primary, force-promote {}, lose it, force-promote {}",
                region_name(*first),
                region_name(*second)
            ),
            Fault::WipeNode { region, node } => {
                format!("replace the disk of {}-{node}", region_name(*region))
            }
            Fault::UploadRetryKill { region, node, .. } => format!(
                "large upload broken off and retried through {}-{node}, then a power cut of {}",
                region_name(*region),
                region_name(*region)
            ),
        }
    }
}

/// A fault in the plan: when it starts (from the run's start) and how long it is held.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub at_ms: u64,
    pub hold_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// What happened when a fault ran.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub description: String,
    #[serde(flatten)]
    pub fault: Fault,
    /// The node a role-named target resolved to, if any.
    pub resolved_node: Option<u64>,
    pub start_ms: u64,
    /// When the fault was healed and the affected nodes were ready again.
    pub end_ms: u64,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

/// The current leader of region `index` as its live nodes report it, waiting up to `timeout`.
pub async fn leader_of(cluster: &Cluster, index: usize, timeout: Duration) -> Option<u64> {
    let region = &cluster.regions[index].region;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let live = region.live();
        for id in &live {
            if let Some(ready) = region.readyz(*id).await {
                if ready["role"] == "leader" {
                    return Some(*id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until every node of region `index` answers `/readyz`, up to `timeout`.
async fn wait_region_ready(cluster: &Cluster, index: usize, timeout: Duration) -> bool {
    let region = &cluster.regions[index].region;
    let deadline = tokio::time::Instant::now() + timeout;
    let ids: Vec<u64> = region.nodes.keys().copied().collect();
    for id in ids {
        loop {
            if region.readyz(id).await.is_some() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    true
}

/// Applies `planned`, holds it, heals it; returns what happened.
pub async fn run(cluster: &mut Cluster, planned: &Planned, history: &History) -> FaultRecord {
    let mut record = FaultRecord {
        description: planned.fault.describe(),
        fault: planned.fault.clone(),
        resolved_node: None,
        start_ms: history.now_ms(),
        end_ms: 0,
        notes: Vec::new(),
        error: None,
    };
    let hold = Duration::from_millis(planned.hold_ms);
    if let Err(error) = apply(cluster, &planned.fault, hold, &mut record, history).await {
        record.error = Some(format!("{error:#}"));
        // Leave nothing broken behind a fault that failed half-way.
        cluster.heal_network();
        cluster.heal_processes().await;
    }
    record.end_ms = history.now_ms();
    record
}

async fn apply(
    cluster: &mut Cluster,
    fault: &Fault,
    hold: Duration,
    record: &mut FaultRecord,
    history: &History,
) -> anyhow::Result<()> {
    match fault.clone() {
        Fault::KillLeader { region } => {
            let leader = leader_of(cluster, region, Duration::from_secs(20))
                .await
                .ok_or_else(|| anyhow!("no leader in {}", region_name(region)))?;
            record.resolved_node = Some(leader);
            kill_and_restart(cluster, region, leader, hold).await
        }
        Fault::KillNode { region, node } => kill_and_restart(cluster, region, node, hold).await,
        Fault::PauseLeader { region } => {
            let leader = leader_of(cluster, region, Duration::from_secs(20))
                .await
                .ok_or_else(|| anyhow!("no leader in {}", region_name(region)))?;
            record.resolved_node = Some(leader);
            pause_and_resume(cluster, region, leader, hold).await
        }
        Fault::PauseNode { region, node } => pause_and_resume(cluster, region, node, hold).await,
        Fault::PartitionRegion { region, way } => {
            for link in &cluster.regions[region].links {
                match way {
                    Way::Both => link.cut(),
                    Way::MirrorToPrimary => link.cut_one_way(Direction::Upstream),
                    Way::PrimaryToMirror => link.cut_one_way(Direction::Downstream),
                }
            }
            tokio::time::sleep(hold).await;
            for link in &cluster.regions[region].links {
                link.heal();
            }
            Ok(())
        }
        Fault::IsolateNodeInbound { region, node } => {
            let proxy = cluster.regions[region]
                .region
                .grpc_proxies
                .get(&node)
                .ok_or_else(|| anyhow!("no gRPC proxy for node {node}"))?;
            proxy.cut();
            tokio::time::sleep(hold).await;
            proxy.heal();
            Ok(())
        }
        Fault::SlowNodeGrpc {
            region,
            node,
            latency_ms,
        } => {
            let proxy = cluster.regions[region]
                .region
                .grpc_proxies
                .get(&node)
                .ok_or_else(|| anyhow!("no gRPC proxy for node {node}"))?;
            proxy.shape(slow_grpc_shape(latency_ms));
            tokio::time::sleep(hold).await;
            proxy.shape(LinkShape::default());
            Ok(())
        }
        Fault::FlakyWan {
            region,
            latency_ms,
            jitter_ms,
            loss_per_mille,
            mbit,
        } => {
            let shape = LinkShape {
                cut: false,
                latency: Duration::from_millis(latency_ms),
                jitter: Duration::from_millis(jitter_ms),
                loss_per_mille,
                bandwidth: Some(mbit * 1_000_000 / 8),
            };
            for link in &cluster.regions[region].links {
                link.shape(shape);
            }
            tokio::time::sleep(hold).await;
            for link in &cluster.regions[region].links {
                link.shape(LinkShape::default());
            }
            Ok(())
        }
        Fault::CorruptChunks {
            region,
            node,
            count,
            pick,
        } => {
            let target = &mut cluster.regions[region].region;
            target.must_stop(node, Duration::from_secs(15));
            let db_path = target.data_dir(node).join("db");
            let corrupted =
                tokio::task::spawn_blocking(move || corrupt_chunks(&db_path, count, pick))
                    .await
                    .context("corrupting task")?;
            target.must_restart(node);
            let ready = wait_region_ready(cluster, region, Duration::from_secs(60)).await;
            let corrupted = corrupted?;
            record
                .notes
                .push(format!("corrupted chunks: {}", corrupted.join(", ")));
            if !ready {
                anyhow::bail!("node did not come back after corruption");
            }
            tokio::time::sleep(hold).await;
            Ok(())
        }
        Fault::RollingRestart { region } => {
            let ids: Vec<u64> = cluster.regions[region]
                .region
                .nodes
                .keys()
                .copied()
                .collect();
            for id in ids {
                let target = &mut cluster.regions[region].region;
                target.must_stop(id, Duration::from_secs(15));
                tokio::time::sleep(Duration::from_millis(500)).await;
                target.must_restart(id);
                if !wait_region_ready(cluster, region, Duration::from_secs(60)).await {
                    anyhow::bail!("node {id} did not come back");
                }
                leader_of(cluster, region, Duration::from_secs(20))
                    .await
                    .ok_or_else(|| anyhow!("no leader after restarting node {id}"))?;
                record.notes.push(format!("restarted node {id}"));
            }
            tokio::time::sleep(hold).await;
            Ok(())
        }
        Fault::PrimaryLossPromote { mirror } => primary_loss(cluster, mirror, hold, record).await,
        Fault::DoubleFailover { first, second } => {
            double_failover(cluster, first, second, hold, record).await
        }
        Fault::WipeNode { region, node } => wipe_node(cluster, region, node, hold, record).await,
        Fault::UploadRetryKill {
            region,
            node,
            round,
        } => upload_retry_kill(cluster, region, node, round, record, history).await,
    }
}

/// The gRPC address other nodes of `region` reach node `id` at (its proxy when it has one).
fn peer_grpc_addr(cluster: &Cluster, region: usize, id: u64) -> String {
    let region = &cluster.regions[region].region;
    match region.grpc_proxies.get(&id) {
        Some(proxy) => proxy.addr.to_string(),
        None => region.node(id).grpc_addr.to_string(),
    }
}

async fn wipe_node(
    cluster: &mut Cluster,
    region: usize,
    node: u64,
    hold: Duration,
    record: &mut FaultRecord,
) -> anyhow::Result<()> {
    let other = cluster.regions[region]
        .region
        .nodes
        .keys()
        .copied()
        .find(|id| *id != node)
        .ok_or_else(|| anyhow!("{} has no other node", region_name(region)))?;
    let seed = peer_grpc_addr(cluster, region, other);
    let target = &mut cluster.regions[region].region;
    target.must_kill(node);
    let data_dir = target.data_dir(node).to_path_buf();
    std::fs::remove_dir_all(&data_dir).with_context(|| format!("wipe {}", data_dir.display()))?;
    // The replaced disk comes back under its old command line, which joins the region.
    let args = &mut target.node_mut(node).options_mut().extra_args;
    if let Some(at) = args.iter().position(|a| a == "--join") {
        args.drain(at..(at + 2).min(args.len()));
    }
    args.extend(["--join".to_string(), seed]);
    target.must_restart(node);
    let until = tokio::time::Instant::now() + hold.max(Duration::from_secs(3));
    while tokio::time::Instant::now() < until {
        if cluster.regions[region].region.readyz(node).await.is_some() {
            anyhow::bail!(
                "{}-{node} rejoined with an empty disk under a member's id",
                region_name(region)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    record
        .notes
        .push("the wiped node stayed out under its old id".to_string());
    // Through a member: the wiped node itself is live but blank, and answers no admin call.
    let admin = cluster.regions[region]
        .region
        .node(other)
        .grpc_addr
        .to_string();
    let id = node.to_string();
    let mut removed = false;
    for _ in 0..40 {
        let (ok, _) = cluster
            .cli_json(&["cluster", "remove-node", "--id", &id], &admin)
            .await?;
        if ok {
            removed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !removed {
        anyhow::bail!("could not remove {}-{node}", region_name(region));
    }
    if !wait_region_ready(cluster, region, Duration::from_secs(90)).await {
        anyhow::bail!(
            "{}-{node} did not join again as a new member",
            region_name(region)
        );
    }
    record
        .notes
        .push("removed, then joined again as a new member".to_string());
    Ok(())
}

async fn upload_retry_kill(
    cluster: &mut Cluster,
    region: usize,
    node: u64,
    round: u64,
    record: &mut FaultRecord,
    history: &History,
) -> anyhow::Result<()> {
    use crate::history::{Op, OpKind, Outcome};
    const LEN: usize = 24 << 20;
    const BROKEN_AT: usize = 20 << 20;
    let key = format!("mut/retry-{round}");
    let mut content = vec![0u8; LEN];
    blake3::Hasher::new()
        .update(key.as_bytes())
        .update(&round.to_le_bytes())
        .finalize_xof()
        .fill(&mut content);
    let sha = crate::content::sha256_hex(&content);
    let url = cluster.regions[region]
        .region
        .url(node, &format!("/files/{key}"));
    let client = crate::workload::http_client();
    let name = region_name(region).to_string();
    let op = |outcome, status: Option<u16>, detail: String, start_ms, end_ms| Op {
        id: 0,
        client: 10_000,
        kind: OpKind::Put,
        key: key.clone(),
        version: Some(1),
        sha256: Some(sha.clone()),
        region: name.clone(),
        node,
        start_ms,
        end_ms,
        outcome,
        status,
        detail,
        blob_mismatch: None,
    };
    // 1. The first attempt breaks off after 20 MiB: its last chunks sit unflushed.
    let start = history.now_ms();
    let broken = content[..BROKEN_AT].to_vec();
    let body = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(broken)),
        Err(std::io::Error::other("the client gave up")),
    ]);
    let first = client
        .put(&url)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    history.push(op(
        Outcome::Failed,
        first.as_ref().ok().map(|r| r.status().as_u16()),
        "broken off by the client half-way".into(),
        start,
        history.now_ms(),
    ));
    // 2. The retry sends it all; it reuses the chunks the first attempt wrote.
    let start = history.now_ms();
    let retried = client.put(&url).body(content).send().await;
    let (outcome, status, detail) = match &retried {
        Ok(response) if response.status().is_success() => {
            (Outcome::Ok, Some(response.status().as_u16()), String::new())
        }
        Ok(response) if response.status().is_server_error() => (
            Outcome::Unknown,
            Some(response.status().as_u16()),
            "server error".into(),
        ),
        Ok(response) => (
            Outcome::Failed,
            Some(response.status().as_u16()),
            "refused".into(),
        ),
        Err(e) => (Outcome::Unknown, None, e.to_string()),
    };
    history.push(op(outcome, status, detail, start, history.now_ms()));
    record
        .notes
        .push(format!("retried upload of {key}: {outcome:?} {status:?}"));
    // 3. A power cut of the whole region, right after the acknowledgement.
    let ids: Vec<u64> = cluster.regions[region]
        .region
        .nodes
        .keys()
        .copied()
        .collect();
    for id in &ids {
        cluster.regions[region].region.must_kill(*id);
    }
    for id in &ids {
        cluster.regions[region].region.must_restart(*id);
    }
    if !wait_region_ready(cluster, region, Duration::from_secs(90)).await {
        anyhow::bail!(
            "{} did not come back after the power cut",
            region_name(region)
        );
    }
    Ok(())
}

async fn kill_and_restart(
    cluster: &mut Cluster,
    region: usize,
    node: u64,
    hold: Duration,
) -> anyhow::Result<()> {
    cluster.regions[region].region.must_kill(node);
    tokio::time::sleep(hold).await;
    cluster.regions[region].region.must_restart(node);
    if !wait_region_ready(cluster, region, Duration::from_secs(60)).await {
        anyhow::bail!("node {node} did not come back");
    }
    Ok(())
}

async fn pause_and_resume(
    cluster: &mut Cluster,
    region: usize,
    node: u64,
    hold: Duration,
) -> anyhow::Result<()> {
    cluster.regions[region].region.must_pause(node);
    tokio::time::sleep(hold).await;
    cluster.regions[region].region.must_resume(node);
    if !wait_region_ready(cluster, region, Duration::from_secs(60)).await {
        anyhow::bail!("node {node} did not answer after SIGCONT");
    }
    Ok(())
}
