//! The primary side of replication, over this node's state: change-log entries with the chunks
//! they need, chunk bytes (fetched from region peers when this node lacks them), snapshots.

use std::sync::Arc;

use arca_replication::store::Pairs;
use arca_replication::{ChangeSource, Changes, ChunkId, Entry, Head, RegionInfo, SnapshotReader};
use bytes::Bytes;
use tokio::sync::watch;

use crate::digest::Blake3;
use crate::error::Error;
use crate::geo::Geo;
use crate::metadata::codec::encode;

/// [`ChangeSource`] over a node.
pub struct NodeSource(pub Arc<Geo>);

fn storage(e: impl std::fmt::Display) -> arca_replication::Error {
    arca_replication::Error::storage(e)
}

/// A change record as it goes on the wire.
pub fn to_entry(
    record: crate::metadata::model::ChangeRecord,
    formats: &crate::metadata::format::FormatSet,
) -> arca_replication::Result<Entry> {
    let chunks = formats
        .chunks(&record.command)
        .map_err(storage)?
        .into_iter()
        .map(|c| (ChunkId(c.id.0), c.len))
        .collect();
    Ok(Entry {
        epoch: record.epoch,
        seq: record.seq,
        at_ms: record.at_ms,
        command: encode(&record.command).map_err(storage)?,
        chunks,
    })
}

struct PairsSnapshot {
    head: Head,
    reader: crate::metadata::catalog::StateReader,
}

impl SnapshotReader for PairsSnapshot {
    fn head(&self) -> Head {
        self.head
    }

    fn next_batch(&mut self, _max_bytes: usize) -> arca_replication::Result<Option<Pairs>> {
        self.reader.next_batch().map_err(storage)
    }
}

/// Bytes of pairs the state reader hands over at a time (the protocol's snapshot frames).
const SNAPSHOT_BATCH_BYTES: usize = 4 << 20;

impl ChangeSource for NodeSource {
    fn region_info(&self) -> RegionInfo {
        self.0.region_info()
    }

    fn changes_after(&self, after: u64, limit: usize) -> arca_replication::Result<Changes> {
        let head = self.0.catalog.changelog_head().map_err(storage)?;
        if after + 1 < head.first_seq {
            return Ok(Changes::Truncated {
                oldest_seq: head.first_seq,
            });
        }
        let records = self
            .0
            .catalog
            .changes_after(after, limit)
            .map_err(storage)?;
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            entries.push(to_entry(record, &self.0.formats)?);
        }
        Ok(Changes::Entries(entries))
    }

    fn entry_at_ms(&self, seq: u64) -> arca_replication::Result<Option<i64>> {
        Ok(self
            .0
            .catalog
            .change(seq)
            .map_err(storage)?
            .map(|r| r.at_ms))
    }

    fn epoch_at(&self, seq: u64) -> arca_replication::Result<Option<u64>> {
        self.0.catalog.epoch_at(seq).map_err(storage)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.0.head_tx.subscribe()
    }

    async fn read_chunk(&self, id: ChunkId) -> arca_replication::Result<Option<Bytes>> {
        match self.0.region.read_chunk(Blake3(id.0)).await {
            Ok(data) => Ok(Some(data)),
            Err(Error::MissingChunk { .. } | Error::CorruptChunk { .. }) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }

    fn snapshot(&self) -> arca_replication::Result<Box<dyn SnapshotReader>> {
        let reader = self
            .0
            .catalog
            .state_reader(SNAPSHOT_BATCH_BYTES)
            .map_err(storage)?;
        let head = &reader.head;
        Ok(Box::new(PairsSnapshot {
            head: Head {
                epoch: head.epoch,
                seq: head.last_seq,
                at_ms: head.last_at_ms,
            },
            reader,
        }))
    }

    fn mirror_acked(&self, mirror: &RegionInfo, seq: u64) {
        self.0.mirrors.acked(mirror, seq);
    }

    fn mirror_disconnected(&self, mirror: &RegionInfo) {
        self.0.mirrors.disconnected(mirror);
    }

    fn peer_seen(&self, peer: &RegionInfo) {
        let _ = self.0.peer_tx.send(peer.clone());
    }

    async fn query(&self, request: Vec<u8>) -> arca_replication::Result<Vec<u8>> {
        crate::geo::query::answer(&self.0, request).await
    }
}
