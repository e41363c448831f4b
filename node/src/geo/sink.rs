//! The mirror side of replication, over this node's region: chunks are stored here and pushed to
//! a majority of the region, entries are committed through the region's Raft group in order.

use std::sync::Arc;

use arca_replication::store::Pairs;
use arca_replication::{ChangeSink, ChunkId, Entry, Head, RegionInfo};
use bytes::Bytes;

use crate::codec::decode;
use crate::digest::Blake3;
use crate::geo::Geo;
use crate::keys::{self, ChunkRefCount};
use crate::model::{Command, Outcome, RegionRole, ReplicatedEntry, StreamHead};

/// [`ChangeSink`] over a node (active on its region's leader while the region is a mirror).
pub struct NodeSink(pub Arc<Geo>);

/// Largest snapshot command proposed through Raft.
const SNAPSHOT_COMMAND_BYTES: usize = 1 << 20;

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
        self.0.region.propose_local(&command).await.map_err(storage)
    }
}

impl ChangeSink for NodeSink {
    fn region_info(&self) -> RegionInfo {
        self.0.region_info()
    }

    fn is_active(&self) -> bool {
        let leader = self.0.region.raft.raft().metrics().borrow().current_leader;
        leader == Some(self.0.region.node_id) && matches!(self.0.role(), RegionRole::Mirror { .. })
    }

    fn applied(&self) -> Head {
        let head = self.0.head();
        Head {
            epoch: head.epoch,
            seq: head.last_seq,
            at_ms: head.last_at_ms,
        }
    }

    fn needs_snapshot(&self) -> bool {
        self.0.head().needs_snapshot
    }

    fn primary_addrs(&self) -> Vec<String> {
        self.0.primary_addrs()
    }

    fn missing(&self, ids: &[ChunkId]) -> arca_replication::Result<Vec<ChunkId>> {
        let mut missing = Vec::new();
        for id in ids {
            if !self.0.chunks.contains(&Blake3(id.0)).map_err(storage)? {
                missing.push(*id);
            }
        }
        Ok(missing)
    }

    async fn store_chunks(&self, chunks: Vec<(ChunkId, Bytes)>) -> arca_replication::Result<()> {
        let ids: Vec<Blake3> = chunks.iter().map(|(id, _)| Blake3(id.0)).collect();
        let store = self.0.chunks.clone();
        tokio::task::spawn_blocking(move || -> crate::error::Result<()> {
            for (id, data) in &chunks {
                store.put_verified(&Blake3(id.0), data)?;
            }
            store.sync()
        })
        .await
        .map_err(storage)?
        .map_err(storage)?;
        // An entry becomes visible in this region only once its chunks are on a majority here.
        self.0.region.replicate_chunks(&ids).await.map_err(storage)
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
        self.propose(Command::SnapshotBegin {
            head: stream_head(head),
        })
        .await?;
        Ok(())
    }

    async fn snapshot_batch(&self, pairs: Pairs) -> arca_replication::Result<Vec<(ChunkId, u32)>> {
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
                self.propose(Command::SnapshotPart {
                    pairs: std::mem::take(&mut command_pairs),
                })
                .await?;
                bytes = 0;
            }
        }
        if !command_pairs.is_empty() {
            self.propose(Command::SnapshotPart {
                pairs: command_pairs,
            })
            .await?;
        }
        Ok(referenced)
    }

    async fn finish_snapshot(&self, head: Head) -> arca_replication::Result<()> {
        match self
            .propose(Command::SnapshotFinish {
                head: stream_head(head),
            })
            .await?
        {
            Outcome::SnapshotInstalled { .. } => Ok(()),
            other => Err(arca_replication::Error::Refused(format!(
                "installing the snapshot: {other:?}"
            ))),
        }
    }

    fn primary_seen(&self, primary: &RegionInfo) {
        let RegionRole::Mirror {
            primary: known,
            replication_addrs,
            http_addrs,
        } = self.0.role()
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
                self.0.config.primary.clone()
            } else {
                replication_addrs
            },
            http_addrs: primary.http_addrs.clone(),
        };
        let geo = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = geo.region.propose_local(&Command::SetRole { role }).await {
                tracing::warn!(error = %e, "could not record the primary's identity");
            }
        });
    }
}
