//! Streaming ingest: a request body becomes stored chunks and a [`BlobDescriptor`] in one pass.
//!
//! The async side reads the body; each batch of about 1 MiB goes to a short blocking task that
//! cuts chunks, hashes them (blake3 per chunk, blake3 and sha256 of the whole blob in the same
//! pass) and writes the chunks the node does not hold yet, while the next batch is read. Memory
//! stays at a few MiB per upload whatever the blob size, a fast client is slowed to the disk's
//! pace, and a slow one holds no thread: only a socket, until the idle timeout or the minimum
//! rate ends it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;

use crate::digest::{Blake3, ChunkId, Sha256};
use crate::error::{Error, Result};
use crate::metadata::model::{BlobDescriptor, ChunkRef};
use crate::metrics;
use crate::storage::chunk_store::{ChunkStore, Durability, PinGuard};
use crate::storage::chunker::{Chunker, ChunkerConfig};
use crate::storage::gc::Collector;

/// Body bytes handed to a blocking task at a time: the task hashes, cuts and stores them
/// while the next batch is read from the socket. No thread is held while a client is slow.
const BATCH_BYTES: usize = 1 << 20;

/// An upload writes its first new chunks through the WAL (one fsync makes a small upload
/// durable); past this many new bytes it writes unlogged and flushes once at the end, so the
/// bulk of a large upload reaches the disk once instead of twice.
const LOGGED_BYTES: u64 = 8 << 20;

/// How long an upload may take before its rate is checked against the minimum.
const RATE_GRACE: Duration = Duration::from_secs(30);

/// What an upload may cost.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest body, in bytes (`TOO_LARGE` past it).
    pub max_bytes: u64,
    /// Longest wait for the next piece of the body (`INCOMPLETE_BODY` past it).
    pub idle_timeout: Duration,
    /// Slowest average rate tolerated once an upload has run for 30 s, in bytes per second
    /// (0: any).
    pub min_bytes_per_sec: u64,
}

/// A blob whose chunks are durable on this node, not yet referenced by any command. Dropped,
/// it abandons the chunks its upload wrote (deleted unless something else uses them by then):
/// a write whose command applied says so with [`IngestedBlob::committed`], one whose outcome is
/// unknown with [`IngestedBlob::outcome_unknown`].
pub struct IngestedBlob {
    pub descriptor: BlobDescriptor,
    held: Uncommitted,
}

impl IngestedBlob {
    /// Chunks this upload wrote (the rest were already here).
    pub fn new_chunks(&self) -> usize {
        self.held.written.len()
    }

    /// The command referencing the blob applied: its chunks are referenced now.
    pub fn committed(self) {
        self.held.release();
    }

    /// The proposal failed in a way that may still commit it later: the chunks stay (the orphan
    /// sweep removes them after its grace period if it never does).
    pub fn outcome_unknown(self) {
        self.held.release();
    }
}

/// Chunks an upload wrote and pins it holds, until a command references them. Dropped (a
/// refused, failed or cancelled upload), it hands them to the collector.
struct Uncommitted {
    collector: Collector,
    written: Vec<ChunkId>,
    pins: Option<PinGuard>,
}

impl Uncommitted {
    fn pin(&mut self, id: ChunkId) {
        if let Some(pins) = self.pins.as_mut() {
            pins.pin(id);
        }
    }

    /// Keeps the chunks and drops the pins.
    fn release(mut self) {
        self.written.clear();
        self.pins.take();
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        if let Some(pins) = self.pins.take() {
            self.collector
                .abandon(std::mem::take(&mut self.written), pins);
        }
    }
}

/// Reads `body` to the end and stores its chunks. Fails with `TOO_LARGE` past the limit and
/// `INCOMPLETE_BODY` if the body errors, stalls or crawls. On failure, or if this future is
/// dropped mid-way, the chunks this upload wrote go to `collector` for deletion.
pub async fn ingest<S, E>(
    store: Arc<ChunkStore>,
    chunking: ChunkerConfig,
    mut body: S,
    limits: IngestLimits,
    collector: Collector,
) -> Result<IngestedBlob>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let mut idle = Some(WorkerState::new(store, chunking, collector));
    let mut working: Option<tokio::task::JoinHandle<WorkerState>> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut received: u64 = 0;
    let mut failure: Option<Error> = None;
    loop {
        let frame = match tokio::time::timeout(limits.idle_timeout, body.next()).await {
            Ok(frame) => frame,
            Err(_) => {
                failure = Some(Error::IncompleteBody {
                    reason: format!("no data arrived for {:?}", limits.idle_timeout),
                });
                break;
            }
        };
        match frame {
            None => break,
            Some(Ok(data)) => {
                received += data.len() as u64;
                metrics::bytes_received(data.len());
                if received > limits.max_bytes {
                    failure = Some(Error::TooLarge {
                        limit: limits.max_bytes,
                    });
                    break;
                }
                let elapsed = started.elapsed();
                if limits.min_bytes_per_sec > 0
                    && elapsed > RATE_GRACE
                    && received < limits.min_bytes_per_sec * elapsed.as_secs()
                {
                    failure = Some(Error::IncompleteBody {
                        reason: format!(
                            "the upload is slower than the minimum of {} bytes per second",
                            limits.min_bytes_per_sec
                        ),
                    });
                    break;
                }
                batch_bytes += data.len();
                batch.push(data);
                if batch_bytes >= BATCH_BYTES {
                    let state = match working.take() {
                        Some(task) => task
                            .await
                            .map_err(|e| Error::internal("ingest worker panicked", e))?,
                        None => idle.take().ok_or_else(|| {
                            Error::Internal("ingest lost its worker state".into())
                        })?,
                    };
                    if state.error.is_some() {
                        idle = Some(state);
                        break;
                    }
                    let frames = std::mem::take(&mut batch);
                    batch_bytes = 0;
                    working = Some(tokio::task::spawn_blocking(move || {
                        let mut state = state;
                        state.process(frames);
                        state
                    }));
                }
            }
            Some(Err(e)) => {
                failure = Some(Error::IncompleteBody {
                    reason: e.to_string(),
                });
                break;
            }
        }
    }
    let state = match working.take() {
        Some(task) => task
            .await
            .map_err(|e| Error::internal("ingest worker panicked", e))?,
        None => idle
            .take()
            .ok_or_else(|| Error::Internal("ingest lost its worker state".into()))?,
    };
    let finish = failure.is_none();
    let (result, state) = tokio::task::spawn_blocking(move || {
        let mut state = state;
        if !finish {
            return (None, state);
        }
        state.process(batch);
        let result = state.finish();
        (Some(result), state)
    })
    .await
    .map_err(|e| Error::internal("ingest worker panicked", e))?;
    match (failure, result) {
        (None, Some(Ok(descriptor))) => Ok(IngestedBlob {
            descriptor,
            held: state.held,
        }),
        // Dropping the state abandons what the upload wrote.
        (Some(error), _) | (None, Some(Err(error))) => Err(error),
        (None, None) => Err(Error::Internal("ingest finished without a result".into())),
    }
}

/// The chunking and hashing state of one upload, moved into a blocking task for each batch.
struct WorkerState {
    store: Arc<ChunkStore>,
    chunking: ChunkerConfig,
    chunker: Chunker,
    sha256: sha2::Sha256,
    blake3: blake3::Hasher,
    size: u64,
    chunks: Vec<ChunkRef>,
    /// Each chunk this upload wrote (the others were already stored), and the pins of all.
    held: Uncommitted,
    written_bytes: u64,
    /// The first storage failure; later batches are skipped.
    error: Option<Error>,
}

impl WorkerState {
    fn new(store: Arc<ChunkStore>, chunking: ChunkerConfig, collector: Collector) -> Self {
        Self {
            held: Uncommitted {
                collector,
                written: Vec::new(),
                pins: Some(store.pin_guard()),
            },
            store,
            chunking,
            chunker: Chunker::new(chunking),
            sha256: sha2::Sha256::new(),
            blake3: blake3::Hasher::new(),
            size: 0,
            chunks: Vec::new(),
            written_bytes: 0,
            error: None,
        }
    }

    fn process(&mut self, frames: Vec<Bytes>) {
        for data in frames {
            if self.error.is_some() {
                return;
            }
            self.sha256.update(&data);
            self.blake3.update(&data);
            self.size += data.len() as u64;
            for chunk in self.chunker.push(&data) {
                if let Err(e) = self.store_chunk(&chunk) {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    fn finish(&mut self) -> Result<BlobDescriptor> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let chunker = std::mem::replace(&mut self.chunker, Chunker::new(self.chunking));
        for chunk in chunker.finish() {
            self.store_chunk(&chunk)?;
        }
        // Every chunk, reused ones too: another upload may have written one a moment ago
        // without making it durable yet (and may have given up since).
        let ids: Vec<ChunkId> = self.chunks.iter().map(|c| c.id).collect();
        self.store.make_durable(&ids)?;
        let sha256 = std::mem::replace(&mut self.sha256, sha2::Sha256::new());
        Ok(BlobDescriptor {
            blake3: Blake3::from(self.blake3.finalize()),
            sha256: Sha256(sha256.finalize().into()),
            size: self.size,
            chunks: std::mem::take(&mut self.chunks),
        })
    }

    fn store_chunk(&mut self, data: &[u8]) -> Result<()> {
        let id = Blake3::of(data);
        // Pin before looking: a collector that runs between the look and the command's apply
        // then sees the pin and keeps the chunk.
        self.held.pin(id);
        if self.store.contains(&id)? {
            metrics::chunk_deduplicated(data.len());
        } else {
            let durability = if self.written_bytes >= LOGGED_BYTES {
                Durability::Unlogged
            } else {
                Durability::Logged
            };
            self.store.write(&id, data, durability)?;
            self.held.written.push(id);
            self.written_bytes += data.len() as u64;
        }
        self.chunks.push(ChunkRef {
            id,
            len: data.len() as u32,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> IngestLimits {
        IngestLimits {
            max_bytes: 1 << 30,
            idle_timeout: Duration::from_secs(60),
            min_bytes_per_sec: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_cancelled_mid_way_leaves_no_chunks_and_no_pins() {
        // Before `IngestedBlob` and the worker state abandoned on drop, an upload whose future
        // was dropped (its connection went away mid-request) left its chunks for the orphan
        // sweep, an hour later by default.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::open_db(dir.path()).expect("open");
        let store = ChunkStore::new(db.clone()).expect("store");
        let collector = Collector::new(store.clone(), crate::metadata::catalog::Catalog::new(db));
        let chunking = ChunkerConfig {
            min_size: 16 << 10,
            avg_size: 32 << 10,
            max_size: 64 << 10,
        };
        // Three batches of data, then a body that never ends.
        let data: Vec<Bytes> = (0..3u8)
            .map(|i| {
                let mut block = vec![0u8; BATCH_BYTES];
                blake3::Hasher::new()
                    .update(&[i])
                    .finalize_xof()
                    .fill(&mut block);
                Bytes::from(block)
            })
            .collect();
        let body = futures::stream::iter(data.into_iter().map(Ok::<_, std::io::Error>))
            .chain(futures::stream::pending());
        let task = tokio::spawn(ingest(
            store.clone(),
            chunking,
            Box::pin(body),
            limits(),
            collector,
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.entries().expect("entries").len() < 40 {
            assert!(Instant::now() < deadline, "the upload stored nothing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let _ = task.await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !store.entries().expect("entries").is_empty() || !store.pinned() == 0 {
            assert!(
                Instant::now() < deadline,
                "{} chunks and {} pins left behind",
                store.entries().expect("entries").len(),
                store.pinned()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
