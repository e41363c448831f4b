//! Geo-replication on a node: the region as a primary (serving its change log to mirrors over
//! QUIC) or as a read-only mirror (following its primary), promotion of a mirror, fencing of a
//! former primary that comes back, sync replication, read-through and verification.
//!
//! The QUIC protocol lives in `arca-replication`; this module implements its storage traits
//! ([`source::NodeSource`], [`sink::NodeSink`]) over the region's Raft group and chunk store.

pub mod fencing;
pub mod mirrors;
pub mod query;
pub mod reclaim;
pub mod sink;
pub mod source;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use arca_replication::{client, Head, MirrorLag, MirrorOptions, RegionInfo, Role};
use tokio::sync::{mpsc, watch};

use crate::config::ReplicationConfig;
use crate::digest::Blake3;
use crate::error::{Error, Result};
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::{decode, encode};
use crate::metadata::model::{ChangeLogHead, RegionRole};
use crate::names::{ArtifactPath, RepoName};
use crate::region::Region;
use crate::storage::chunk_store::ChunkStore;
use mirrors::MirrorRegistry;
use query::{FileAnswer, GeoQuery};

/// This node's view of replication between regions.
pub struct Geo {
    pub region: Arc<Region>,
    pub catalog: Catalog,
    /// The formats whose commands the change log carries.
    pub formats: crate::metadata::format::FormatSet,
    pub chunks: Arc<ChunkStore>,
    pub config: ReplicationConfig,
    /// The QUIC endpoint (serving and connecting), when replication is configured.
    pub endpoint: Option<quinn::Endpoint>,
    /// How far behind its primary this region is (meaningful on a mirror's leader).
    pub lag: Arc<MirrorLag>,
    /// Mirrors subscribed to this node (on a primary).
    pub mirrors: MirrorRegistry,
    /// Regions that introduced themselves, for the fencing task.
    pub(crate) peer_tx: mpsc::UnboundedSender<RegionInfo>,
    /// The change log's head seq, for feeds waiting on new entries.
    pub(crate) head_tx: watch::Sender<u64>,
    /// The id of the snapshot catch-up this node runs, if any (a staged one with another id
    /// belongs to a former leader and is dropped by the fencing task).
    pub(crate) catch_up_id: parking_lot::Mutex<Option<String>>,
    /// The staged snapshot the fencing task saw last (id, pairs).
    pub(crate) staging_seen: parking_lot::Mutex<Option<(Option<String>, u64)>>,
    /// Whether this node accepts writes as a primary: closed at start-up in a primary region
    /// with peer regions configured, until every peer answered and none is a newer primary.
    write_gate: std::sync::atomic::AtomicBool,
    /// A connection to a primary node for repairs, kept between them.
    primary_connection: parking_lot::Mutex<Option<(String, quinn::Connection)>>,
}

/// The primary region as a last-resort source of chunks for resync (see
/// [`crate::region::resync::RemoteChunks`]).
pub struct PrimaryChunks(pub std::sync::Weak<Geo>);

impl crate::region::resync::RemoteChunks for PrimaryChunks {
    fn fetch(
        &self,
        id: crate::digest::ChunkId,
    ) -> futures::future::BoxFuture<'_, Result<Option<bytes::Bytes>>> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(geo) => geo.fetch_from_primary(id).await,
                None => Ok(None),
            }
        })
    }
}

impl Geo {
    pub fn new(
        region: Arc<Region>,
        catalog: Catalog,
        formats: crate::metadata::format::FormatSet,
        chunks: Arc<ChunkStore>,
        config: ReplicationConfig,
        endpoint: Option<quinn::Endpoint>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<RegionInfo>) {
        let (peer_tx, peer_rx) = mpsc::unbounded_channel();
        let head = catalog.changelog_head().map(|h| h.last_seq).unwrap_or(0);
        let geo = Arc::new(Self {
            lag: Arc::new(MirrorLag::new(region.name.clone())),
            region,
            catalog,
            formats,
            chunks,
            config,
            endpoint,
            mirrors: MirrorRegistry::default(),
            peer_tx,
            head_tx: watch::channel(head).0,
            catch_up_id: parking_lot::Mutex::new(None),
            staging_seen: parking_lot::Mutex::new(None),
            write_gate: std::sync::atomic::AtomicBool::new(true),
            primary_connection: parking_lot::Mutex::new(None),
        });
        geo.region
            .resync
            .set_remote(Arc::new(PrimaryChunks(Arc::downgrade(&geo))));
        // A primary that knows of other regions must hear from them before it takes a write:
        // one of them may have been promoted while this region was away.
        let gated = geo.role() == RegionRole::Primary && !geo.config.peers.is_empty();
        geo.write_gate
            .store(!gated, std::sync::atomic::Ordering::SeqCst);
        (geo, peer_rx)
    }

    pub fn role(&self) -> RegionRole {
        self.catalog.role().unwrap_or_else(|e| {
            tracing::error!(error = %e, "read region role");
            RegionRole::Primary
        })
    }

    pub fn head(&self) -> ChangeLogHead {
        self.catalog.changelog_head().unwrap_or_default()
    }

    /// What this region says about itself to other regions.
    pub fn region_info(&self) -> RegionInfo {
        let head = self.head();
        let membership = self.region.raft.membership();
        let (role, primary) = match self.role() {
            RegionRole::Primary => (Role::Primary, None),
            RegionRole::Mirror { primary, .. } => {
                (Role::Mirror, (!primary.is_empty()).then_some(primary))
            }
        };
        let fork = self.catalog.fork().ok().flatten().map(|f| Head {
            epoch: f.epoch,
            seq: f.after_seq,
            at_ms: f.at_ms,
        });
        RegionInfo {
            region: self.region.name.clone(),
            role,
            epoch: head.epoch,
            primary,
            http_addrs: membership
                .nodes
                .values()
                .map(|n| n.http_addr.clone())
                .collect(),
            replication_addrs: membership
                .nodes
                .values()
                .filter(|n| !n.replication_addr.is_empty())
                .map(|n| n.replication_addr.clone())
                .collect(),
            head: Head {
                epoch: head.epoch,
                seq: head.last_seq,
                at_ms: head.last_at_ms,
            },
            fork,
            forks: self
                .catalog
                .forks()
                .unwrap_or_default()
                .into_iter()
                .map(|f| Head {
                    epoch: f.epoch,
                    seq: f.after_seq,
                    at_ms: f.at_ms,
                })
                .collect(),
            cluster_id: self.region.raft.cluster_id().get(),
        }
    }

    /// Fetches one chunk from the primary (a mirror's last resort when no node of its region
    /// holds it), over a connection kept for the next time.
    async fn fetch_from_primary(&self, id: crate::digest::ChunkId) -> Result<Option<bytes::Bytes>> {
        if !matches!(self.role(), RegionRole::Mirror { .. }) {
            return Ok(None);
        }
        let Some(endpoint) = self.endpoint.clone() else {
            return Ok(None);
        };
        let wanted = vec![(arca_replication::ChunkId(id.0), 0u32)];
        let options = MirrorOptions::default();
        let mut last_error = String::from("no primary address is known");
        for addr in self.primary_addrs() {
            let cached = self.primary_connection.lock().clone();
            let connection = match cached {
                Some((cached_addr, connection))
                    if cached_addr == addr && connection.close_reason().is_none() =>
                {
                    connection
                }
                _ => match client::connect(&endpoint, &addr).await {
                    Ok(connection) => {
                        *self.primary_connection.lock() = Some((addr.clone(), connection.clone()));
                        connection
                    }
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                },
            };
            let found = parking_lot::Mutex::new(None);
            let fetched = tokio::time::timeout(
                Duration::from_secs(30),
                client::fetch_chunks(&connection, wanted.clone(), &options, |chunks| {
                    if let Some((_, data)) = chunks.into_iter().next() {
                        *found.lock() = Some(data);
                    }
                    async { Ok(()) }
                }),
            )
            .await;
            match fetched {
                Ok(Ok(_)) => return Ok(found.into_inner()),
                Ok(Err(arca_replication::Error::ChunkUnavailable { .. })) => return Ok(None),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "timed out".into(),
            }
        }
        Err(Error::NotReady {
            reason: format!("the primary could not be asked for the chunk: {last_error}"),
        })
    }

    /// Whether this node takes writes as a primary (see the fencing module).
    pub fn write_gate_open(&self) -> bool {
        self.write_gate.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets this node take writes: every peer answered, or an operator said so.
    pub fn open_write_gate(&self) {
        self.write_gate
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Replication addresses of the primary this region follows.
    pub fn primary_addrs(&self) -> Vec<String> {
        match self.role() {
            RegionRole::Mirror {
                replication_addrs, ..
            } if !replication_addrs.is_empty() => replication_addrs,
            RegionRole::Mirror { .. } => self.config.primary.clone(),
            RegionRole::Primary => Vec::new(),
        }
    }

    /// The error for a write sent to this region while it is a mirror, or while it has not
    /// yet confirmed it is still the primary.
    pub fn read_only_error(&self) -> Option<Error> {
        match self.role() {
            RegionRole::Primary if !self.write_gate_open() => Some(Error::NotReady {
                reason: "this region has not yet heard from every peer region that it is still the primary (one may have been promoted while it was away); writes wait for that, or for `arca cluster unfence`".into(),
            }),
            RegionRole::Primary => None,
            RegionRole::Mirror {
                primary,
                http_addrs,
                ..
            } => Some(Error::ReadOnlyMirror {
                region: self.region.name.clone(),
                primary: if primary.is_empty() {
                    "unknown".into()
                } else {
                    primary
                },
                primary_http: http_addrs.first().cloned(),
            }),
        }
    }

    /// On a mirror configured for read-through: a file this region has not received yet,
    /// fetched from the primary (its chunks are kept here; its metadata arrives with the change
    /// log). `None` when read-through is off or the primary does not have it either.
    pub async fn read_through(
        &self,
        repo: &RepoName,
        path: &ArtifactPath,
    ) -> Result<Option<FileAnswer>> {
        if !self.config.read_through || !matches!(self.role(), RegionRole::Mirror { .. }) {
            return Ok(None);
        }
        let Some(endpoint) = self.endpoint.clone() else {
            return Ok(None);
        };
        let request = encode(&GeoQuery::File {
            repo: repo.clone(),
            path: path.clone(),
        })?;
        let mut last_error = String::from("no primary address is known");
        for addr in self.primary_addrs() {
            let connection = match client::connect(&endpoint, &addr).await {
                Ok(connection) => connection,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let answer = client::query_on(&connection, request.clone())
                .await
                .map_err(|e| Error::NotReady {
                    reason: format!("read-through to the primary: {e}"),
                })?;
            let Some(answer): Option<FileAnswer> = decode(&answer)? else {
                return Ok(None);
            };
            let mut wanted = Vec::new();
            for chunk in &answer.blob.chunks {
                if !self.chunks.contains(&chunk.id)? {
                    wanted.push((arca_replication::ChunkId(chunk.id.0), chunk.len));
                }
            }
            let options = MirrorOptions {
                parallel_streams: self.config.parallel_streams,
                ..MirrorOptions::default()
            };
            let store = self.chunks.clone();
            client::fetch_chunks(&connection, wanted, &options, |chunks| {
                let store = store.clone();
                async move {
                    tokio::task::spawn_blocking(move || -> Result<()> {
                        for (id, data) in &chunks {
                            store.put_verified(&Blake3(id.0), data)?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(arca_replication::Error::storage)?
                    .map_err(arca_replication::Error::storage)
                }
            })
            .await
            .map_err(|e| Error::NotReady {
                reason: format!("read-through to the primary: {e}"),
            })?;
            metrics::counter!("arca_replication_read_through_total").increment(1);
            return Ok(Some(answer));
        }
        tracing::warn!(%repo, %path, error = %last_error, "read-through: the primary is unreachable");
        Ok(None)
    }

    /// Waits until the mirrors that must hold sync writes (`replication.sync_mirrors`, or any
    /// one mirror when that is empty) have applied `seq`; asks every node of this region, since
    /// a mirror may be subscribed to any of them.
    pub async fn wait_mirrored(&self, seq: u64) -> Result<()> {
        let timeout = Duration::from_millis(self.config.sync_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.mirrors.subscribe();
        loop {
            let local = self.local_mirror_acks();
            if self.sync_satisfied(&local, seq)
                || self.sync_satisfied(&self.mirror_acks().await, seq)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::SyncReplicationTimeout { seq, timeout });
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_millis(50))) => {}
            }
        }
    }

    /// How far each mirror subscribed to this node has applied.
    fn local_mirror_acks(&self) -> std::collections::BTreeMap<String, u64> {
        let mut acked = std::collections::BTreeMap::new();
        for mirror in self.mirrors.list() {
            let entry = acked.entry(mirror.info.region.clone()).or_insert(0u64);
            *entry = (*entry).max(mirror.acked_seq);
        }
        acked
    }

    /// How far each mirror this region knows of has applied, asked of every node of the
    /// region (a mirror may subscribe to any of them).
    pub async fn mirror_acks(&self) -> std::collections::BTreeMap<String, u64> {
        let mut acked = self.local_mirror_acks();
        for peer in self.region.peers.others() {
            let mut request = tonic::Request::new(arca_proto::v1::MirrorsRequest {});
            request.set_timeout(Duration::from_millis(500));
            if let Ok(reply) = self
                .region
                .peers
                .cluster_client(&peer.info)
                .mirrors(request)
                .await
            {
                for mirror in reply.into_inner().mirrors {
                    let entry = acked.entry(mirror.region).or_insert(0);
                    *entry = (*entry).max(mirror.acked_seq);
                }
            }
        }
        acked
    }

    /// Whether the mirrors' acknowledgements cover `seq` for sync replication.
    fn sync_satisfied(&self, acked: &std::collections::BTreeMap<String, u64>, seq: u64) -> bool {
        sync_satisfied(&self.config.sync_mirrors, acked, seq)
    }
}

/// Every named mirror (or, with none named, some mirror) acknowledged `seq`.
pub fn sync_satisfied(
    required: &[String],
    acked: &std::collections::BTreeMap<String, u64>,
    seq: u64,
) -> bool {
    if required.is_empty() {
        acked.values().any(|acked| *acked >= seq)
    } else {
        required
            .iter()
            .all(|mirror| acked.get(mirror).is_some_and(|acked| *acked >= seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_writes_wait_for_every_named_mirror() {
        let acked: std::collections::BTreeMap<String, u64> =
            [("eu".to_string(), 10), ("ap".to_string(), 4)].into();
        assert!(sync_satisfied(&[], &acked, 10), "any mirror");
        assert!(!sync_satisfied(&["eu".into(), "ap".into()], &acked, 10));
        assert!(sync_satisfied(&["eu".into()], &acked, 10));
        assert!(
            !sync_satisfied(&["sa".into()], &acked, 1),
            "a named mirror never heard from"
        );
    }
}
