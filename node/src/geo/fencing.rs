//! The region leader's replication housekeeping: becoming a mirror when first started as one,
//! learning from other regions that a newer primary exists (a former primary demotes itself and
//! records its divergent writes; a mirror re-points), and trimming the change log.

use std::sync::Arc;
use std::time::Duration;

use arca_replication::{RegionInfo, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::geo::Geo;
use crate::model::{now_ms, Command, Outcome, RegionRole};

fn is_leader(geo: &Geo) -> bool {
    geo.region.raft.raft().metrics().borrow().current_leader == Some(geo.region.node_id)
}

/// Runs until `cancel`.
pub async fn run(
    geo: Arc<Geo>,
    mut peers: mpsc::UnboundedReceiver<RegionInfo>,
    cancel: CancellationToken,
) {
    let interval = Duration::from_millis(geo.config.probe_interval_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            seen = peers.recv() => match seen {
                Some(peer) => {
                    if is_leader(&geo) {
                        handle_peer(&geo, &peer).await;
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep(interval) => {
                if is_leader(&geo) {
                    tick(&geo).await;
                }
            }
        }
    }
}

async fn tick(geo: &Arc<Geo>) {
    adopt_configured_primary(geo).await;
    probe_peers(geo).await;
    trim(geo).await;
}

/// A new region started with `replication.primary` becomes a mirror of it. A region that
/// already holds data keeps the role its state records (a promoted mirror must not follow its
/// old primary again just because its configuration still names it).
pub async fn adopt_configured_primary(geo: &Arc<Geo>) {
    if geo.config.primary.is_empty() || geo.role() != RegionRole::Primary {
        return;
    }
    let head = geo.head();
    let empty = head.last_seq == 0 && geo.catalog.fork().ok().flatten().is_none();
    if !empty {
        return;
    }
    let role = RegionRole::Mirror {
        primary: String::new(),
        replication_addrs: geo.config.primary.clone(),
        http_addrs: Vec::new(),
    };
    match geo.region.propose_local(&Command::SetRole { role }).await {
        Ok(_) => {
            tracing::info!(primary = ?geo.config.primary, "this region is now a read-only mirror")
        }
        Err(e) => tracing::warn!(error = %e, "could not become a mirror"),
    }
}

pub async fn probe_peers(geo: &Arc<Geo>) {
    let Some(endpoint) = geo.endpoint.clone() else {
        return;
    };
    let mut addrs = geo.config.peers.clone();
    for addr in geo.primary_addrs() {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    let me = geo.region_info();
    for addr in addrs {
        let hello = tokio::time::timeout(
            Duration::from_secs(2),
            arca_replication::client::hello(&endpoint, &addr, me.clone()),
        )
        .await;
        if let Ok(Ok(peer)) = hello {
            handle_peer(geo, &peer).await;
        }
    }
}

/// Reacts to a region that is primary at a newer epoch than this one.
pub async fn handle_peer(geo: &Arc<Geo>, peer: &RegionInfo) {
    let me = geo.region_info();
    if peer.role != Role::Primary || peer.epoch <= me.epoch || peer.region == me.region {
        return;
    }
    let role = RegionRole::Mirror {
        primary: peer.region.clone(),
        replication_addrs: peer.replication_addrs.clone(),
        http_addrs: peer.http_addrs.clone(),
    };
    match geo.role() {
        RegionRole::Primary => {
            let fork_seq = match peer.fork {
                Some(fork) => fork.seq,
                None => {
                    tracing::error!(peer = %peer.region, "the new primary reports no fork point; every write of this epoch is recorded as divergent");
                    0
                }
            };
            tracing::warn!(
                new_primary = %peer.region,
                epoch = peer.epoch,
                my_epoch = me.epoch,
                fork_seq,
                "this region was replaced as primary: it stops accepting writes and becomes a mirror"
            );
            let command = Command::Demote {
                role,
                epoch: peer.epoch,
                fork_seq,
                at_ms: now_ms(),
            };
            match geo.region.propose_local(&command).await {
                Ok(Outcome::Demoted { divergent }) => tracing::warn!(
                    divergent,
                    "demoted to mirror; writes accepted after the fork point are listed by `arca cluster divergent`"
                ),
                Ok(other) => tracing::info!(?other, "demotion not applied"),
                Err(e) => tracing::error!(error = %e, "could not demote this region"),
            }
        }
        RegionRole::Mirror { primary, .. } if primary != peer.region => {
            tracing::warn!(new_primary = %peer.region, old_primary = %primary, epoch = peer.epoch, "following the new primary");
            if let Err(e) = geo.region.propose_local(&Command::SetRole { role }).await {
                tracing::warn!(error = %e, "could not re-point this mirror");
            }
        }
        RegionRole::Mirror { .. } => {}
    }
}

async fn trim(geo: &Arc<Geo>) {
    let head = geo.head();
    let retained = (head.last_seq + 1).saturating_sub(head.first_seq);
    if retained <= geo.config.retain_entries {
        return;
    }
    let before_seq = head.last_seq + 1 - geo.config.retain_entries;
    if let Err(e) = geo
        .region
        .propose_local(&Command::TrimChangeLog { before_seq })
        .await
    {
        tracing::warn!(error = %e, "could not trim the change log");
    }
}
