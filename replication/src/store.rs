//! What replication needs from the node, as traits: the primary side reads its change log,
//! chunks and state; the mirror side stores chunks and commits entries into its own region.
//! The node implements both; tests implement them in memory.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::Result;
use crate::protocol::{ChunkId, Entry, Head, RegionInfo};

/// A batch read from the change log.
#[derive(Debug, Clone)]
pub enum Changes {
    /// Entries after the requested position, in order (empty when caught up).
    Entries(Vec<Entry>),
    /// The entry after the requested position is no longer retained.
    Truncated { oldest_seq: u64 },
}

/// Key/value pairs of a metadata snapshot.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A consistent view of the primary's metadata state, read in batches.
pub trait SnapshotReader: Send {
    /// The change-log position the state corresponds to.
    fn head(&self) -> Head;
    /// The next batch of key/value pairs; `None` at the end.
    fn next_batch(&mut self, max_bytes: usize) -> Result<Option<Pairs>>;
}

/// The primary side.
pub trait ChangeSource: Send + Sync + 'static {
    fn region_info(&self) -> RegionInfo;
    /// Entries with `seq > after`, at most `limit`. Called from a blocking context.
    fn changes_after(&self, after: u64, limit: usize) -> Result<Changes>;
    /// Commit time of the entry at `seq`, if retained. Called from a blocking context.
    fn entry_at_ms(&self, seq: u64) -> Result<Option<i64>>;
    /// The epoch of the entry at `seq` in this primary's history (from the fork history when
    /// the entry was trimmed); `None` when `seq` is past the head. Called from a blocking
    /// context.
    fn epoch_at(&self, seq: u64) -> Result<Option<u64>>;
    /// Changes whenever the change log's head moves (the value is the head's seq).
    fn watch_head(&self) -> watch::Receiver<u64>;
    /// A chunk's verified bytes, `None` if the region cannot produce it.
    fn read_chunk(&self, id: ChunkId) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// A snapshot of the metadata state. Called from a blocking context.
    fn snapshot(&self) -> Result<Box<dyn SnapshotReader>>;
    /// A mirror acknowledged having applied everything up to `seq`.
    fn mirror_acked(&self, mirror: &RegionInfo, seq: u64);
    /// A mirror's subscription ended.
    fn mirror_disconnected(&self, mirror: &RegionInfo);
    /// Another region introduced itself (a subscription or a hello); epochs are compared here.
    fn peer_seen(&self, peer: &RegionInfo);
    /// Answers an opaque query.
    fn query(&self, request: Vec<u8>) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

/// The mirror side.
pub trait ChangeSink: Send + Sync + 'static {
    fn region_info(&self) -> RegionInfo;
    /// Whether this node should be running the subscription (it leads its region, which is a
    /// mirror).
    fn is_active(&self) -> bool;
    /// The last primary entry applied here.
    fn applied(&self) -> Head;
    /// Whether this region's state must be replaced by a snapshot before it can follow the
    /// primary's log (a demoted former primary).
    fn needs_snapshot(&self) -> bool {
        false
    }
    /// Finishes local work a previous active node left half done (an install of a snapshot
    /// that needs nothing more from the primary); called before each subscription.
    fn resume(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// Replication addresses of the primary's nodes, tried in turn.
    fn primary_addrs(&self) -> Vec<String>;
    /// Which of `ids` this node lacks; the sink keeps every one of them (present or about to
    /// be fetched) from collection until the batch commits. Called from a blocking context.
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>>;
    /// Stores verified chunks durably on this node (see [`ChangeSink::secure`] for the
    /// region).
    fn store_chunks(
        &self,
        chunks: Vec<(ChunkId, Bytes)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Makes `chunks`, which this node holds (fetched or not), durable on a majority of this
    /// region. Called with every chunk a batch or snapshot part references before it commits.
    fn secure(&self, chunks: Vec<(ChunkId, u32)>) -> impl Future<Output = Result<()>> + Send;
    /// Commits entries, in order, into this region; returns the new applied position.
    /// Entries at or below the applied position are skipped, a gap is an error.
    fn apply(&self, entries: Vec<Entry>) -> impl Future<Output = Result<Head>> + Send;
    /// Starts replacing this region's state with a snapshot at `head`.
    fn begin_snapshot(&self, head: Head) -> impl Future<Output = Result<()>> + Send;
    /// Adds a batch of the snapshot; returns the chunks (and lengths) these pairs reference.
    fn snapshot_batch(
        &self,
        pairs: Pairs,
    ) -> impl Future<Output = Result<Vec<(ChunkId, u32)>>> + Send;
    /// Makes the snapshot the region's state (every referenced chunk is stored by now).
    fn finish_snapshot(&self, head: Head) -> impl Future<Output = Result<()>> + Send;
    /// The primary introduced itself.
    fn primary_seen(&self, primary: &RegionInfo);
}
