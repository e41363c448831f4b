//! Losing the primary region: promotion of a mirror, the old primary coming back as a mirror,
//! and two failovers in a row.

use std::time::Duration;

use super::*;

/// Loses the current primary (killed, links cut) and force-promotes `mirror`; the lost
/// region's nodes stay down. Returns the lost region and its node ids.
pub(super) async fn lose_primary_and_promote(
    cluster: &mut Cluster,
    mirror: usize,
    record: &mut FaultRecord,
) -> anyhow::Result<(usize, Vec<u64>)> {
    let old = cluster.endpoints.primary();
    for region in &cluster.regions {
        for link in &region.links {
            link.cut();
        }
    }
    cluster.endpoints.set_down(old, true);
    let ids: Vec<u64> = cluster.regions[old].region.nodes.keys().copied().collect();
    for id in &ids {
        cluster.regions[old].region.must_kill(*id);
    }
    let admin = cluster
        .admin_addr(mirror)
        .ok_or_else(|| anyhow!("no live node in {}", region_name(mirror)))?;
    let name = region_name(mirror);
    cluster.endpoints.set_down(mirror, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut promoted = None;
    for _ in 0..60 {
        let (ok, reply) = cluster
            .cli_json(&["cluster", "promote", name, "--force"], &admin)
            .await?;
        if ok && reply["promoted"] == true {
            promoted = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let promoted = promoted.ok_or_else(|| anyhow!("{name} could not be promoted"))?;
    record.notes.push(format!("promoted {name}: {promoted}"));
    cluster.endpoints.set_primary(mirror);
    cluster.endpoints.set_down(mirror, false);
    for region in &cluster.regions {
        for link in &region.links {
            link.heal();
        }
    }
    Ok((old, ids))
}

/// Restarts a lost region's nodes knowing every other region (`--peer`); they must become
/// mirrors.
pub(super) async fn bring_back_as_mirror(
    cluster: &mut Cluster,
    lost: usize,
    ids: &[u64],
    record: &mut FaultRecord,
) -> anyhow::Result<()> {
    let mut peers = Vec::new();
    for (index, region) in cluster.regions.iter().enumerate() {
        if index != lost {
            peers.extend(region.region.replication_addrs());
        }
    }
    for id in ids {
        let node = cluster.regions[lost].region.node_mut(*id);
        for peer in &peers {
            if !node.options_mut().extra_args.contains(peer) {
                node.options_mut()
                    .extra_args
                    .extend(["--peer".to_string(), peer.clone()]);
            }
        }
        node.must_restart();
    }
    if !wait_region_ready(cluster, lost, Duration::from_secs(60)).await {
        anyhow::bail!("{} did not come back", region_name(lost));
    }
    let name = region_name(lost);
    for _ in 0..120 {
        if let Some(admin) = cluster.admin_addr(lost) {
            if let Ok((true, status)) = cluster.cli_json(&["cluster", "status"], &admin).await {
                let role = status["regions"].as_array().and_then(|rows| {
                    rows.iter()
                        .find(|r| r["name"] == name)
                        .map(|r| r["role"].clone())
                });
                if role == Some(serde_json::json!("mirror")) {
                    record.notes.push(format!("{name} rejoined as a mirror"));
                    cluster.endpoints.set_down(lost, false);
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("{name} did not become a mirror within 60 s")
}

pub(super) async fn double_failover(
    cluster: &mut Cluster,
    first: usize,
    second: usize,
    hold: Duration,
    record: &mut FaultRecord,
) -> anyhow::Result<()> {
    let (original, original_ids) = lose_primary_and_promote(cluster, first, record).await?;
    tokio::time::sleep(hold / 2).await;
    let (lost, lost_ids) = lose_primary_and_promote(cluster, second, record).await?;
    tokio::time::sleep(hold / 2).await;
    bring_back_as_mirror(cluster, lost, &lost_ids, record).await?;
    bring_back_as_mirror(cluster, original, &original_ids, record).await?;
    Ok(())
}

/// The primary region is lost: its nodes are killed and its links cut, a mirror is promoted
/// with `--force`, clients move to it; after `hold` the old primary comes back knowing the
/// other regions (`--peer`) and must demote itself.
pub(super) async fn primary_loss(
    cluster: &mut Cluster,
    mirror: usize,
    hold: Duration,
    record: &mut FaultRecord,
) -> anyhow::Result<()> {
    let (old, ids) = lose_primary_and_promote(cluster, mirror, record).await?;
    tokio::time::sleep(hold).await;
    bring_back_as_mirror(cluster, old, &ids, record).await
}
