//! Streaming ingest: a request body becomes stored chunks and a [`BlobDescriptor`] in one pass.
//!
//! The async side only moves frames; a blocking worker cuts chunks, hashes them (blake3 per
//! chunk, blake3 and sha256 of the whole blob in the same pass) and writes the chunks the node
//! does not hold yet. A bounded channel between them keeps memory at a few MiB per upload
//! whatever the blob size, and slows a fast client down to the disk's pace.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;
use tokio::sync::mpsc;

use crate::chunk_store::{ChunkStore, Durability, PinGuard};
use crate::chunker::{Chunker, ChunkerConfig};
use crate::digest::{Blake3, ChunkId, Sha256};
use crate::error::{Error, Result};
use crate::metrics;
use crate::model::{BlobDescriptor, ChunkRef};

/// Frames in flight between the body reader and the worker.
const CHANNEL_FRAMES: usize = 32;

/// An upload writes its first new chunks through the WAL (one fsync makes a small upload
/// durable); past this many new bytes it writes unlogged and flushes once at the end, so the
/// bulk of a large upload reaches the disk once instead of twice.
const LOGGED_BYTES: u64 = 8 << 20;

/// A blob whose chunks are durable on this node, not yet referenced by any command.
pub struct IngestedBlob {
    pub descriptor: BlobDescriptor,
    /// Chunks this upload wrote (the rest were already here).
    pub written: Vec<ChunkId>,
    /// Keeps every chunk of the blob from being collected until the command is applied.
    pub pins: PinGuard,
}

enum Frame {
    Data(Bytes),
    End,
}

/// Reads `body` to the end and stores its chunks. Fails with `TOO_LARGE` past `limit` bytes and
/// `INCOMPLETE_BODY` if the body errors. On failure the chunks this upload wrote are released
/// to `on_abandon` for deletion.
pub async fn ingest<S, E>(
    store: Arc<ChunkStore>,
    chunking: ChunkerConfig,
    mut body: S,
    limit: u64,
    on_abandon: impl FnOnce(Vec<ChunkId>, PinGuard),
) -> Result<IngestedBlob>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, rx) = mpsc::channel::<Frame>(CHANNEL_FRAMES);
    let worker_store = store.clone();
    let worker = tokio::task::spawn_blocking(move || ingest_worker(rx, worker_store, chunking));
    let mut received: u64 = 0;
    let mut failure: Option<Error> = None;
    while let Some(frame) = body.next().await {
        match frame {
            Ok(data) => {
                received += data.len() as u64;
                metrics::bytes_received(data.len());
                if received > limit {
                    failure = Some(Error::TooLarge { limit });
                    break;
                }
                if tx.send(Frame::Data(data)).await.is_err() {
                    break; // the worker failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(Error::IncompleteBody {
                    reason: e.to_string(),
                });
                break;
            }
        }
    }
    if failure.is_none() {
        // The worker may already have stopped on a storage error; it reports that below.
        let _ = tx.send(Frame::End).await;
    }
    drop(tx);
    let outcome = worker
        .await
        .map_err(|e| Error::internal("ingest worker panicked", e))?;
    match (failure, outcome.result) {
        (None, Ok(descriptor)) => Ok(IngestedBlob {
            descriptor,
            written: outcome.written,
            pins: outcome.pins,
        }),
        (Some(error), _) | (None, Err(error)) => {
            on_abandon(outcome.written, outcome.pins);
            Err(error)
        }
    }
}

struct WorkerOutcome {
    result: Result<BlobDescriptor>,
    written: Vec<ChunkId>,
    pins: PinGuard,
}

fn ingest_worker(
    mut rx: mpsc::Receiver<Frame>,
    store: Arc<ChunkStore>,
    chunking: ChunkerConfig,
) -> WorkerOutcome {
    let mut state = WorkerState {
        store: store.clone(),
        chunks: Vec::new(),
        writes: Vec::new(),
        written_bytes: 0,
        pins: store.pin_guard(),
    };
    let result = state.run(&mut rx, chunking);
    WorkerOutcome {
        result,
        written: state.writes,
        pins: state.pins,
    }
}

struct WorkerState {
    store: Arc<ChunkStore>,
    chunks: Vec<ChunkRef>,
    /// Each chunk this upload wrote (the others were already stored).
    writes: Vec<ChunkId>,
    written_bytes: u64,
    pins: PinGuard,
}

impl WorkerState {
    fn run(
        &mut self,
        rx: &mut mpsc::Receiver<Frame>,
        chunking: ChunkerConfig,
    ) -> Result<BlobDescriptor> {
        let mut chunker = Chunker::new(chunking);
        let mut sha256 = sha2::Sha256::new();
        let mut blake3 = blake3::Hasher::new();
        let mut size: u64 = 0;
        loop {
            match rx.blocking_recv() {
                Some(Frame::Data(data)) => {
                    sha256.update(&data);
                    blake3.update(&data);
                    size += data.len() as u64;
                    for chunk in chunker.push(&data) {
                        self.store_chunk(&chunk)?;
                    }
                }
                Some(Frame::End) => break,
                // The request ended without End: the reader gave up; nothing more to do.
                None => {
                    return Err(Error::IncompleteBody {
                        reason: "upload abandoned".into(),
                    })
                }
            }
        }
        for chunk in chunker.finish() {
            self.store_chunk(&chunk)?;
        }
        // Every chunk, reused ones too: another upload may have written one a moment ago
        // without making it durable yet (and may have given up since).
        let ids: Vec<ChunkId> = self.chunks.iter().map(|c| c.id).collect();
        self.store.make_durable(&ids)?;
        Ok(BlobDescriptor {
            blake3: Blake3::from(blake3.finalize()),
            sha256: Sha256(sha256.finalize().into()),
            size,
            chunks: std::mem::take(&mut self.chunks),
        })
    }

    fn store_chunk(&mut self, data: &[u8]) -> Result<()> {
        let id = Blake3::of(data);
        // Pin before looking: a collector that runs between the look and the command's apply
        // then sees the pin and keeps the chunk.
        self.pins.pin(id);
        if self.store.contains(&id)? {
            metrics::chunk_deduplicated(data.len());
        } else {
            let durability = if self.written_bytes >= LOGGED_BYTES {
                Durability::Unlogged
            } else {
                Durability::Logged
            };
            self.store.write(&id, data, durability)?;
            self.writes.push(id);
            self.written_bytes += data.len() as u64;
        }
        self.chunks.push(ChunkRef {
            id,
            len: data.len() as u32,
        });
        Ok(())
    }
}
