//! Getting the chunks this node lacks: a persistent queue of referenced chunks missing here,
//! drained by a background worker that fetches them from peers, and on-demand fetches for reads.
//!
//! Chunks enter the queue when an applied command references a blob new to this node, when a
//! snapshot replaces the state, and at start-up (a full reconciliation of referenced against
//! present chunks covers anything a crash lost between apply and enqueue).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::GetChunkRequest;
use bytes::Bytes;
use futures::StreamExt;
use metrics::{counter, gauge};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, DB};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::digest::ChunkId;
use crate::error::{Error, Result};
use crate::metadata::catalog::Catalog;
use crate::region::peers::{Peers, CHUNK_READ_DEADLINE};
use crate::storage::chunk_store::ChunkStore;

/// Missing chunks queued at a time by a reconciliation.
const RECONCILE_BATCH: usize = 10_000;

/// Chunks fetched at once by the resync worker.
const RESYNC_PARALLEL: usize = 8;

/// Node-local queue of referenced chunks this node does not hold.
pub const CF_RESYNC: &str = "resync";

pub fn column_families() -> Vec<ColumnFamilyDescriptor> {
    vec![ColumnFamilyDescriptor::new(CF_RESYNC, Options::default())]
}

/// Why a chunk is fetched from a peer (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// The background queue.
    Resync,
    /// A read needed it now.
    Read,
    /// The local copy was corrupt.
    Repair,
}

impl FetchReason {
    fn label(self) -> &'static str {
        match self {
            FetchReason::Resync => "resync",
            FetchReason::Read => "read",
            FetchReason::Repair => "repair",
        }
    }
}

/// The resync queue and its worker.
pub struct Resync {
    db: Arc<DB>,
    store: Arc<ChunkStore>,
    catalog: Catalog,
    peers: Peers,
    /// Mirror of the persistent queue, for the backlog count and cheap membership tests.
    queued: Mutex<BTreeSet<ChunkId>>,
    wake: Notify,
    /// Announcements of referenced chunks not yet checked against the store (and start-up
    /// reconciliation until it is done): the queue is incomplete while this is above zero.
    unsettled: Arc<AtomicU64>,
    /// Where chunks no region peer holds come from, if anywhere (a mirror's primary).
    remote: std::sync::OnceLock<Arc<dyn RemoteChunks>>,
}

/// A source of chunks outside the region.
pub trait RemoteChunks: Send + Sync + 'static {
    /// The chunk's verified bytes, `None` if the source does not have it.
    fn fetch(&self, id: ChunkId) -> futures::future::BoxFuture<'_, Result<Option<Bytes>>>;
}

impl Resync {
    /// `unsettled` counts pending announcements (see [`crate::metadata::state_machine::referenced_channel`]).
    pub fn new(
        db: Arc<DB>,
        store: Arc<ChunkStore>,
        catalog: Catalog,
        peers: Peers,
        unsettled: Arc<AtomicU64>,
    ) -> Result<Arc<Self>> {
        let resync = Arc::new(Self {
            db,
            store,
            catalog,
            peers,
            queued: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            unsettled,
            remote: std::sync::OnceLock::new(),
        });
        let mut queued = BTreeSet::new();
        for item in resync
            .db
            .iterator_cf(resync.cf()?, rocksdb::IteratorMode::Start)
        {
            let (key, _) = item?;
            if let Some(id) = ChunkId::from_slice(&key) {
                queued.insert(id);
            }
        }
        *resync.queued.lock() = queued;
        resync.publish_backlog();
        Ok(resync)
    }

    fn cf(&self) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(CF_RESYNC)
            .ok_or_else(|| Error::Internal("resync column family is missing".into()))
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether the queue reflects every chunk the applied state references (no announcement or
    /// reconciliation is still being processed).
    pub fn settled(&self) -> bool {
        self.unsettled.load(Ordering::SeqCst) == 0
    }

    /// Marks a reconciliation as under way until [`Resync::end_unsettled`].
    pub fn begin_unsettled(&self) {
        self.unsettled.fetch_add(1, Ordering::SeqCst);
    }

    pub fn end_unsettled(&self) {
        self.unsettled.fetch_sub(1, Ordering::SeqCst);
    }

    /// Referenced chunks this node still lacks.
    pub fn backlog(&self) -> u64 {
        self.queued.lock().len() as u64
    }

    fn publish_backlog(&self) {
        gauge!("arca_region_resync_backlog_chunks").set(self.backlog() as f64);
    }

    /// Queues those of `ids` this node does not hold.
    pub fn enqueue_missing(&self, ids: &[ChunkId]) -> Result<usize> {
        let mut batch = WriteBatch::default();
        let mut added = Vec::new();
        {
            let queued = self.queued.lock();
            for id in ids {
                if queued.contains(id) || self.store.contains(id)? {
                    continue;
                }
                batch.put_cf(self.cf()?, id.as_bytes(), []);
                added.push(*id);
            }
        }
        if added.is_empty() {
            return Ok(0);
        }
        self.db.write(batch)?;
        self.queued.lock().extend(added.iter().copied());
        self.publish_backlog();
        self.wake.notify_one();
        Ok(added.len())
    }

    /// Queues every referenced chunk this node lacks (start-up, after a snapshot install).
    pub fn reconcile(&self) -> Result<usize> {
        // Streamed: missing chunks are queued a batch at a time, never all held in memory.
        let mut missing = Vec::new();
        let mut total = 0;
        let mut added = 0;
        self.catalog.for_each_referenced_chunk(|id| {
            total += 1;
            if !self.store.contains(&id)? {
                missing.push(id);
                if missing.len() >= RECONCILE_BATCH {
                    added += self.enqueue_missing(&std::mem::take(&mut missing))?;
                }
            }
            Ok(())
        })?;
        added += self.enqueue_missing(&missing)?;
        if added > 0 {
            tracing::info!(
                referenced = total,
                missing = added,
                "queued missing chunks for resync"
            );
        }
        Ok(added)
    }

    fn dequeue(&self, id: &ChunkId) -> Result<()> {
        self.db.delete_cf(self.cf()?, id.as_bytes())?;
        self.queued.lock().remove(id);
        self.publish_backlog();
        Ok(())
    }

    /// Fetches a chunk from whichever peer has it, verifies it, stores it here durably.
    pub async fn fetch(&self, id: ChunkId, reason: FetchReason) -> Result<Bytes> {
        let data = self.fetch_unsynced(id, reason).await?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| Error::internal("chunk writer panicked", e))??;
        if self.queued.lock().contains(&id) {
            self.dequeue(&id)?;
        }
        Ok(data)
    }

    /// [`Resync::fetch`] without the WAL sync and the dequeue: the caller syncs once for a
    /// batch, then dequeues.
    async fn fetch_unsynced(&self, id: ChunkId, reason: FetchReason) -> Result<Bytes> {
        let mut peers = self.peers.others();
        peers.shuffle(&mut rand::rng());
        let mut last_error = String::from("no peer is known");
        for peer in peers {
            let mut request = tonic::Request::new(GetChunkRequest {
                id: id.as_bytes().to_vec(),
            });
            request.set_timeout(CHUNK_READ_DEADLINE);
            let reply = tokio::time::timeout(
                CHUNK_READ_DEADLINE + Duration::from_secs(1),
                self.peers.chunk_client(&peer.info).get_chunk(request),
            )
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
            let chunk = match reply {
                Ok(chunk) => chunk.into_inner(),
                Err(status) => {
                    last_error =
                        format!("node {}: {}: {}", peer.id, status.code(), status.message());
                    continue;
                }
            };
            let data = Bytes::from(chunk.data);
            let store = self.store.clone();
            let to_store = data.clone();
            let stored = tokio::task::spawn_blocking(move || store.put_verified(&id, &to_store))
                .await
                .map_err(|e| Error::internal("chunk writer panicked", e))?;
            if let Err(e) = stored {
                last_error = format!("node {}: {e}", peer.id);
                continue;
            }
            counter!("arca_region_chunks_fetched_total", "reason" => reason.label()).increment(1);
            counter!("arca_region_chunk_replication_bytes_total", "direction" => "received")
                .increment(data.len() as u64);
            if reason == FetchReason::Repair {
                tracing::warn!(chunk = %id, peer = peer.id, "repaired a corrupt chunk from a peer");
            }
            return Ok(data);
        }
        // No node of this region has it: a mirror asks its primary.
        let remote = self.remote.get().cloned();
        if let Some(remote) = remote {
            match remote.fetch(id).await {
                Ok(Some(data)) => {
                    let store = self.store.clone();
                    let to_store = data.clone();
                    tokio::task::spawn_blocking(move || store.put_verified(&id, &to_store))
                        .await
                        .map_err(|e| Error::internal("chunk writer panicked", e))??;
                    counter!("arca_region_chunks_fetched_total", "reason" => "primary")
                        .increment(1);
                    tracing::warn!(chunk = %id, ?reason, "no node of this region had the chunk: fetched it from the primary region");
                    return Ok(data);
                }
                Ok(None) => last_error = format!("{last_error}; the primary does not have it"),
                Err(e) => last_error = format!("{last_error}; the primary: {e}"),
            }
        }
        Err(Error::MissingChunk {
            chunk: format!("{id} ({last_error})"),
        })
    }

    /// Lets this node fetch chunks no region peer has from elsewhere (a mirror's primary).
    pub fn set_remote(&self, remote: Arc<dyn RemoteChunks>) {
        let _ = self.remote.set(remote);
    }

    /// Drains the queue until `cancel`: fetches each chunk that is still referenced and still
    /// missing; retries what failed after a pause.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut retry_after = Duration::from_millis(500);
        loop {
            let batch: Vec<ChunkId> = self.queued.lock().iter().take(256).copied().collect();
            let mut failed = 0;
            let mut needed = Vec::new();
            for id in &batch {
                if cancel.is_cancelled() {
                    return;
                }
                let still_needed = match (self.store.contains(id), self.catalog.chunk_refs(id)) {
                    (Ok(present), Ok(refs)) => !present && refs > 0,
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "resync check failed");
                        failed += 1;
                        continue;
                    }
                };
                if !still_needed {
                    if let Err(e) = self.dequeue(id) {
                        tracing::warn!(error = %e, "resync dequeue failed");
                    }
                    continue;
                }
                needed.push(*id);
            }
            // Fetched in parallel, made durable with one WAL sync for the batch.
            let this = &self;
            let results: Vec<(ChunkId, Result<Bytes>)> = futures::stream::iter(needed)
                .map(|id| async move { (id, this.fetch_unsynced(id, FetchReason::Resync).await) })
                .buffer_unordered(RESYNC_PARALLEL)
                .collect()
                .await;
            let mut fetched = Vec::new();
            for (id, result) in results {
                match result {
                    Ok(_) => fetched.push(id),
                    Err(e) => {
                        tracing::debug!(chunk = %id, error = %e, "resync fetch failed; will retry");
                        failed += 1;
                    }
                }
            }
            if !fetched.is_empty() {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.sync()).await {
                    Ok(Ok(())) => {
                        for id in &fetched {
                            if let Err(e) = self.dequeue(id) {
                                tracing::warn!(error = %e, "resync dequeue failed");
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "resync sync failed; will retry"),
                    Err(e) => tracing::warn!(error = %e, "resync sync panicked"),
                }
            }
            if !batch.is_empty() && failed < batch.len() {
                retry_after = Duration::from_millis(500);
                continue;
            }
            let pause = if batch.is_empty() {
                Duration::from_secs(30)
            } else {
                retry_after
            };
            retry_after = (retry_after * 2).min(Duration::from_secs(10));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
