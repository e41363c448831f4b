//! The region's replication housekeeping: becoming a mirror when first started as one,
//! learning from other regions that a newer primary exists (a former primary demotes itself and
//! records its divergent writes; a mirror re-points), trimming the change log, dropping a
//! snapshot a former leader left half-staged.
//!
//! Epochs order as `(counter, region that owns it)`: two regions promoted to the same counter
//! (two teams promoting two mirrors after losing the primary) still fence each other, the one
//! with the smaller name giving way. Every node of a primary region with peers configured keeps
//! refusing writes until it has heard from every peer region and none of them is a newer
//! primary (or an operator lifts that with `arca cluster unfence`).

use std::sync::Arc;
use std::time::Duration;

use arca_replication::{RegionInfo, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::geo::Geo;
use crate::metadata::model::{now_ms, Command, Outcome, RegionRole};

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
                Some(peer) => handle_peer(&geo, &peer).await,
                None => return,
            },
            _ = tokio::time::sleep(interval) => tick(&geo).await,
        }
    }
}

async fn tick(geo: &Arc<Geo>) {
    if is_leader(geo) {
        adopt_configured_primary(geo).await;
    }
    // Every node probes until it confirmed this region is still the primary; the leader
    // keeps probing to learn of newer primaries.
    if is_leader(geo) || !geo.write_gate_open() {
        probe_peers(geo).await;
    }
    if is_leader(geo) {
        trim(geo).await;
        drop_abandoned_staging(geo).await;
    }
}

/// A staged snapshot that is not this leader's catch-up and has not grown since the last look
/// was left by a former leader: drop it (its keys would otherwise stay in every Raft snapshot).
async fn drop_abandoned_staging(geo: &Arc<Geo>) {
    let staging = match geo.catalog.staging() {
        Ok(staging) => staging,
        Err(e) => {
            tracing::warn!(error = %e, "read the staged snapshot");
            return;
        }
    };
    let seen = staging
        .as_ref()
        .map(|staging| (staging.id.clone(), staging.pairs));
    let previous = std::mem::replace(&mut *geo.staging_seen.lock(), seen.clone());
    let Some(staging) = staging else {
        return;
    };
    if staging.install.is_some() {
        // Being installed: the leader's sink finishes it (`NodeSink::resume`), never drops it.
        return;
    }
    let mine = geo.catch_up_id.lock().clone();
    if staging.id == mine || previous != seen {
        return;
    }
    tracing::warn!(id = ?staging.id, pairs = staging.pairs, "dropping a snapshot a former leader left half-staged");
    if let Err(e) = geo
        .region
        .propose_local(&Command::SnapshotAbort { id: staging.id })
        .await
    {
        tracing::warn!(error = %e, "could not drop the abandoned staged snapshot");
    }
}

/// The region that owns the epoch a region reports: a primary owns its own, a mirror follows
/// its primary's.
fn epoch_owner(info: &RegionInfo) -> &str {
    match info.role {
        Role::Primary => &info.region,
        Role::Mirror => info.primary.as_deref().unwrap_or_default(),
    }
}

/// Whether `peer` is a primary whose epoch is newer than `me`'s, epochs ordered as
/// `(counter, owner)` so equal counters still have a winner.
pub fn is_newer_primary(peer: &RegionInfo, me: &RegionInfo) -> bool {
    if peer.role != Role::Primary || peer.region == me.region {
        return false;
    }
    let mine = epoch_owner(me);
    if mine.is_empty() {
        // A mirror that has not heard from its primary yet cannot break a tie.
        return peer.epoch > me.epoch;
    }
    (peer.epoch, epoch_owner(peer)) > (me.epoch, mine)
}

/// Where the epoch `my_epoch` ended in `peer`'s history: the fork of the first epoch after
/// it. A former primary's writes after that point are divergent, however many promotions
/// happened since (the latest fork alone would hide them after a second failover).
pub fn fork_seq_for(my_epoch: u64, peer: &RegionInfo) -> Option<u64> {
    let mut forks = peer.forks.clone();
    forks.sort_by_key(|f| f.epoch);
    forks
        .iter()
        .find(|fork| fork.epoch > my_epoch)
        .map(|fork| fork.seq)
        .or_else(|| peer.fork.map(|fork| fork.seq))
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

/// Asks every configured peer region (and the primary) who it is. Opens this node's write
/// gate once every one of them answered and none is a newer primary.
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
    let mut answered = 0;
    let mut newer = false;
    for addr in &addrs {
        let hello = tokio::time::timeout(
            Duration::from_secs(2),
            arca_replication::client::hello(&endpoint, addr, me.clone()),
        )
        .await;
        if let Ok(Ok(peer)) = hello {
            answered += 1;
            newer |= is_newer_primary(&peer, &me);
            handle_peer(geo, &peer).await;
        }
    }
    if answered == addrs.len() && !newer && !geo.write_gate_open() {
        tracing::info!(
            peers = addrs.len(),
            "every peer region answered and none is a newer primary: accepting writes"
        );
        geo.open_write_gate();
    }
}

/// Reacts to what another region says about itself: records a newer epoch, and if the peer is
/// a newer primary, demotes this region (a former primary) or re-points it (a mirror). Only
/// the leader proposes.
pub async fn handle_peer(geo: &Arc<Geo>, peer: &RegionInfo) {
    if !is_leader(geo) {
        return;
    }
    let me = geo.region_info();
    if peer.region == me.region {
        if peer.cluster_id.is_some() && me.cluster_id.is_some() && peer.cluster_id != me.cluster_id
        {
            tracing::error!(region = %peer.region, "another region calls itself {}: it was created anew under this name (a different cluster id); ignoring it", peer.region);
        }
        return;
    }
    let max_seen = geo.catalog.max_epoch().unwrap_or(0);
    if peer.epoch > max_seen.max(me.epoch) {
        if let Err(e) = geo
            .region
            .propose_local(&Command::ObserveEpoch { epoch: peer.epoch })
            .await
        {
            tracing::debug!(error = %e, "could not record a newer epoch");
        }
    }
    if !is_newer_primary(peer, &me) {
        return;
    }
    let role = RegionRole::Mirror {
        primary: peer.region.clone(),
        replication_addrs: peer.replication_addrs.clone(),
        http_addrs: peer.http_addrs.clone(),
    };
    match geo.role() {
        RegionRole::Primary => {
            let fork_seq = match fork_seq_for(me.epoch, peer) {
                Some(seq) => seq,
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

#[cfg(test)]
mod tests {
    use super::*;
    use arca_replication::Head;

    fn region(name: &str, role: Role, epoch: u64, primary: Option<&str>) -> RegionInfo {
        RegionInfo {
            region: name.into(),
            role,
            epoch,
            primary: primary.map(str::to_string),
            http_addrs: Vec::new(),
            replication_addrs: Vec::new(),
            head: Head::default(),
            fork: None,
            forks: Vec::new(),
            cluster_id: None,
        }
    }

    #[test]
    fn two_primaries_at_one_epoch_counter_still_fence_each_other() {
        let ap = region("ap", Role::Primary, 2, None);
        let eu = region("eu", Role::Primary, 2, None);
        assert!(is_newer_primary(&eu, &ap), "ap gives way to eu");
        assert!(!is_newer_primary(&ap, &eu), "eu keeps the epoch");
        // A mirror of eu at epoch 2 is not fenced by its own primary.
        let mirror = region("us", Role::Mirror, 2, Some("eu"));
        assert!(!is_newer_primary(&eu, &mirror));
        assert!(is_newer_primary(
            &region("sa", Role::Primary, 3, None),
            &mirror
        ));
        // A new mirror that has not heard from its primary is not re-pointed by it.
        let new_mirror = region("ap", Role::Mirror, 1, None);
        assert!(!is_newer_primary(
            &region("us", Role::Primary, 1, None),
            &new_mirror
        ));
    }

    #[test]
    fn a_former_primary_finds_where_its_own_epoch_ended_after_two_failovers() {
        // A (epoch 1) was replaced by B at 1000 (epoch 2); C replaced B at 1500 (epoch 3).
        let mut c = region("c", Role::Primary, 3, None);
        c.forks = vec![
            Head {
                epoch: 3,
                seq: 1500,
                at_ms: 2,
            },
            Head {
                epoch: 2,
                seq: 1000,
                at_ms: 1,
            },
        ];
        c.fork = c.forks.first().copied();
        assert_eq!(fork_seq_for(1, &c), Some(1000));
        assert_eq!(fork_seq_for(2, &c), Some(1500));
    }
}
