//! The mirror side of replication, over this node's region: chunks are stored here and pushed to
//! a majority of the region, entries are committed through the region's Raft group in order.

use std::sync::Arc;

use arca_replication::store::Pairs;
use arca_replication::{ChangeSink, ChunkId, Entry, Head, RegionInfo};
use bytes::Bytes;

use crate::digest::Blake3;
use crate::geo::Geo;
use crate::metadata::codec::decode;
use crate::metadata::keys::{self, ChunkRefCount};
use crate::metadata::model::{Command, Outcome, RegionRole, ReplicatedEntry, StreamHead};
use crate::storage::chunk_store::PinGuard;

/// [`ChangeSink`] over a node (active on its region's leader while the region is a mirror).
pub struct NodeSink {
    geo: Arc<Geo>,
    /// Pins the chunks of the batch in flight on this node, from the moment they are looked
    /// for until the next batch: the orphan sweep never takes a chunk fetched for entries not
    /// yet committed. (A snapshot's chunks are kept by its staged reference counts instead.)
    batch_pins: parking_lot::Mutex<Option<PinGuard>>,
    /// The catch-up this node is running: its id and the pairs proposed so far.
    catch_up: parking_lot::Mutex<Option<(String, u64)>>,
}

impl NodeSink {
    pub fn new(geo: Arc<Geo>) -> Self {
        Self {
            geo,
            batch_pins: parking_lot::Mutex::new(None),
            catch_up: parking_lot::Mutex::new(None),
        }
    }

    fn set_catch_up(&self, catch_up: Option<(String, u64)>) {
        *self.geo.catch_up_id.lock() = catch_up.as_ref().map(|(id, _)| id.clone());
        *self.catch_up.lock() = catch_up;
    }
}

/// Largest snapshot command proposed through Raft.
const SNAPSHOT_COMMAND_BYTES: usize = 1 << 20;

/// Keys one install step visits: each apply writes at most this many (a few MiB), however
/// large the state.
const INSTALL_STEP_KEYS: u32 = 4096;

fn storage(e: impl std::fmt::Display) -> arca_replication::Error {
    arca_replication::Error::storage(e)
}

fn stream_head(head: Head) -> StreamHead {
    StreamHead {
        epoch: head.epoch,
        seq: head.seq,
        at_ms: head.at_ms,
    }
}

impl NodeSink {
    async fn propose(&self, command: Command) -> arca_replication::Result<Outcome> {
        self.geo
            .region
            .propose_local(&command)
            .await
            .map_err(storage)
    }
}

impl NodeSink {
    /// Proposes install steps of the staged snapshot `id` until it is the region's state.
    async fn install_staged(&self, id: Option<String>) -> arca_replication::Result<()> {
        let started = std::time::Instant::now();
        loop {
            match self
                .propose(Command::SnapshotInstall {
                    id: id.clone(),
                    max_keys: INSTALL_STEP_KEYS,
                })
                .await?
            {
                Outcome::SnapshotInstalling { .. } => {
                    metrics::counter!("arca_replication_snapshot_install_steps_total").increment(1);
                }
                Outcome::SnapshotInstalled { seq } => {
                    tracing::info!(
                        seq,
                        seconds = started.elapsed().as_secs_f64(),
                        "installed the snapshot of the primary"
                    );
                    return Ok(());
                }
                other => {
                    return Err(arca_replication::Error::Refused(format!(
                        "installing the snapshot: {other:?}"
                    )))
                }
            }
        }
    }

    async fn propose_part(
        &self,
        id: &str,
        pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    ) -> arca_replication::Result<()> {
        let count = pairs.len() as u64;
        match self
            .propose(Command::SnapshotPart {
                id: Some(id.to_string()),
                pairs,
            })
            .await?
        {
            Outcome::SnapshotStaged => {
                if let Some((_, staged)) = self.catch_up.lock().as_mut() {
                    *staged += count;
                }
                Ok(())
            }
            other => Err(arca_replication::Error::Refused(format!(
                "staging the snapshot: {other:?}"
            ))),
        }
    }
}

impl ChangeSink for NodeSink {
    fn region_info(&self) -> RegionInfo {
        self.geo.region_info()
    }

    fn is_active(&self) -> bool {
        let leader = self
            .geo
            .region
            .raft
            .raft()
            .metrics()
            .borrow()
            .current_leader;
        leader == Some(self.geo.region.node_id)
            && matches!(self.geo.role(), RegionRole::Mirror { .. })
    }

    fn applied(&self) -> Head {
        let head = self.geo.head();
        Head {
            epoch: head.epoch,
            seq: head.last_seq,
            at_ms: head.last_at_ms,
        }
    }

    fn needs_snapshot(&self) -> bool {
        self.geo.head().needs_snapshot
    }

    fn primary_addrs(&self) -> Vec<String> {
        self.geo.primary_addrs()
    }

    fn missing(&self, ids: &[ChunkId]) -> arca_replication::Result<Vec<ChunkId>> {
        // Pin before looking, as an upload does: a chunk found here must still be here when
        // the batch commits, and one fetched for it must not be swept as an orphan meanwhile.
        let mut pins = self.geo.chunks.pin_guard();
        let mut missing = Vec::new();
        for id in ids {
            pins.pin(Blake3(id.0));
            if !self.geo.chunks.contains(&Blake3(id.0)).map_err(storage)? {
                missing.push(*id);
            }
        }
        *self.batch_pins.lock() = Some(pins);
        Ok(missing)
    }

    async fn store_chunks(&self, chunks: Vec<(ChunkId, Bytes)>) -> arca_replication::Result<()> {
        let store = self.geo.chunks.clone();
        tokio::task::spawn_blocking(move || -> crate::error::Result<()> {
            for (id, data) in &chunks {
                store.put_verified(&Blake3(id.0), data)?;
            }
            store.sync()
        })
        .await
        .map_err(storage)?
        .map_err(storage)
    }

    async fn secure(&self, chunks: Vec<(ChunkId, u32)>) -> arca_replication::Result<()> {
        let ids: Vec<Blake3> = chunks.iter().map(|(id, _)| Blake3(id.0)).collect();
        // Durable here first (a read-through may have stored one without a sync), then on a
        // majority of the region; peers that hold a chunk say so and lease it.
        let store = self.geo.chunks.clone();
        let local = ids.clone();
        tokio::task::spawn_blocking(move || store.make_durable(&local))
            .await
            .map_err(storage)?
            .map_err(storage)?;
        self.geo
            .region
            .replicate_chunks(&ids)
            .await
            .map_err(storage)
    }

    async fn apply(&self, entries: Vec<Entry>) -> arca_replication::Result<Head> {
        let mut replicated = Vec::with_capacity(entries.len());
        for entry in entries {
            let command: Command = decode(&entry.command).map_err(storage)?;
            replicated.push(ReplicatedEntry {
                epoch: entry.epoch,
                seq: entry.seq,
                at_ms: entry.at_ms,
                command,
            });
        }
        match self
            .propose(Command::Replicated {
                entries: replicated,
            })
            .await?
        {
            Outcome::Replicated { .. } => Ok(self.applied()),
            Outcome::ReplicationDiverged {
                seq,
                epoch,
                applied_epoch,
            } => Err(arca_replication::Error::Diverged(format!(
                "entry {seq} of epoch {epoch} does not follow this region's history (epoch {applied_epoch})"
            ))),
            Outcome::ReplicationGap { expected, got } => {
                Err(arca_replication::Error::Protocol(format!(
                "replicated entry {got} does not follow the applied position (expected {expected})"
            )))
            }
            other => Err(arca_replication::Error::Refused(format!(
                "applying replicated entries: {other:?}"
            ))),
        }
    }

    async fn begin_snapshot(&self, head: Head) -> arca_replication::Result<()> {
        let term = self.geo.region.raft.raft().metrics().borrow().current_term;
        let id = format!("{}-{term}", uuid::Uuid::new_v4());
        self.propose(Command::SnapshotBegin {
            head: stream_head(head),
            id: Some(id.clone()),
        })
        .await?;
        self.set_catch_up(Some((id, 0)));
        Ok(())
    }

    async fn snapshot_batch(&self, pairs: Pairs) -> arca_replication::Result<Vec<(ChunkId, u32)>> {
        let id = self
            .catch_up
            .lock()
            .as_ref()
            .map(|(id, _)| id.clone())
            .ok_or_else(|| arca_replication::Error::Protocol("no catch-up begun".into()))?;
        let mut referenced = Vec::new();
        let mut command_pairs = Vec::new();
        let mut bytes = 0;
        for (key, value) in pairs {
            if let Some(raw) = key.strip_prefix(keys::CHUNK_REFS_PREFIX) {
                if let (Ok(id), Some(count)) =
                    (<[u8; 32]>::try_from(raw), ChunkRefCount::decode(&value))
                {
                    referenced.push((ChunkId(id), count.len));
                }
            }
            bytes += key.len() + value.len();
            command_pairs.push((
                serde_bytes::ByteBuf::from(key),
                serde_bytes::ByteBuf::from(value),
            ));
            if bytes >= SNAPSHOT_COMMAND_BYTES {
                self.propose_part(&id, std::mem::take(&mut command_pairs))
                    .await?;
                bytes = 0;
            }
        }
        if !command_pairs.is_empty() {
            self.propose_part(&id, command_pairs).await?;
        }
        Ok(referenced)
    }

    async fn finish_snapshot(&self, head: Head) -> arca_replication::Result<()> {
        let Some((id, pairs)) = self.catch_up.lock().clone() else {
            return Err(arca_replication::Error::Protocol(
                "no catch-up begun".into(),
            ));
        };
        self.set_catch_up(None);
        tracing::info!(
            id,
            pairs,
            seq = head.seq,
            "installing a snapshot of the primary"
        );
        // In bounded steps once every voter knows them; whole, as older nodes do, until then.
        let stepped = self
            .geo
            .region
            .require_version(
                Command::SnapshotInstall {
                    id: None,
                    max_keys: INSTALL_STEP_KEYS,
                }
                .required_version(),
            )
            .await
            .is_ok();
        match self
            .propose(Command::SnapshotFinish {
                head: stream_head(head),
                id: Some(id.clone()),
                pairs: Some(pairs),
                step_keys: stepped.then_some(INSTALL_STEP_KEYS),
            })
            .await?
        {
            Outcome::SnapshotInstalled { .. } => Ok(()),
            Outcome::SnapshotInstalling { .. } => self.install_staged(Some(id)).await,
            other => Err(arca_replication::Error::Refused(format!(
                "installing the snapshot: {other:?}"
            ))),
        }
    }

    async fn resume(&self) -> arca_replication::Result<()> {
        let staging = self.geo.catalog.staging().map_err(storage)?;
        match staging {
            Some(staging) if staging.install.is_some() => {
                tracing::warn!(
                    id = staging.id.as_deref().unwrap_or("-"),
                    "finishing the install of a snapshot another leader began"
                );
                self.install_staged(staging.id).await
            }
            _ => Ok(()),
        }
    }

    fn primary_seen(&self, primary: &RegionInfo) {
        let RegionRole::Mirror {
            primary: known,
            replication_addrs,
            http_addrs,
        } = self.geo.role()
        else {
            return;
        };
        if known == primary.region && http_addrs == primary.http_addrs {
            return;
        }
        // Remember the primary's name and HTTP addresses, for redirecting writes.
        let role = RegionRole::Mirror {
            primary: primary.region.clone(),
            replication_addrs: if replication_addrs.is_empty() {
                self.geo.config.primary.clone()
            } else {
                replication_addrs
            },
            http_addrs: primary.http_addrs.clone(),
        };
        let geo = self.geo.clone();
        tokio::spawn(async move {
            if let Err(e) = geo.region.propose_local(&Command::SetRole { role }).await {
                tracing::warn!(error = %e, "could not record the primary's identity");
            }
        });
    }
}
