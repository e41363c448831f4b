//! Streaming a blob (or a byte range of it) back out of the chunk store, verified chunk by
//! verified chunk, so a download holds a few chunks in memory however large the blob is.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::metadata::model::ChunkRef;
use crate::metrics;
use crate::storage::chunk_store::ChunkStore;

/// Chunks a download reads ahead of the one being sent: at most this many chunks (4 MiB each
/// at most) are held per download beyond the one in the socket.
const READ_AHEAD: usize = 2;

/// The pieces of chunks that cover a byte range: (chunk, range within the chunk).
fn plan(chunks: &[ChunkRef], range: &Range<u64>) -> Vec<(ChunkRef, Range<usize>)> {
    let mut plan = Vec::new();
    let mut offset: u64 = 0;
    for chunk in chunks {
        let start = offset;
        let end = offset + u64::from(chunk.len);
        offset = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = range.start.saturating_sub(start) as usize;
        let to = (range.end.min(end) - start) as usize;
        plan.push((*chunk, from..to));
    }
    plan
}

/// Where a download gets verified chunk bytes from.
pub trait ChunkSource: Send + Sync + 'static {
    fn load(self: Arc<Self>, chunk: ChunkRef) -> BoxFuture<'static, Result<Bytes>>;
}

/// This node's store alone, with no peer to fall back on.
impl ChunkSource for ChunkStore {
    fn load(self: Arc<Self>, chunk: ChunkRef) -> BoxFuture<'static, Result<Bytes>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.read(&chunk.id))
                .await
                .map_err(|e| Error::internal("chunk reader panicked", e))?
        })
    }
}

async fn read_piece(
    source: Arc<dyn ChunkSource>,
    chunk: ChunkRef,
    within: Range<usize>,
) -> Result<Bytes> {
    let data = source.load(chunk).await?;
    if data.len() != chunk.len as usize {
        return Err(Error::CorruptChunk {
            chunk: chunk.id.to_hex(),
        });
    }
    Ok(data.slice(within))
}

/// Opens a stream of `range` of the blob. The first chunk is read and verified before this
/// returns, so a corrupt or missing first chunk is a clean error instead of a broken response;
/// a later bad chunk aborts the stream (the client sees a short body, never wrong bytes).
pub async fn open(
    source: Arc<dyn ChunkSource>,
    chunks: &[ChunkRef],
    range: Range<u64>,
) -> Result<impl Stream<Item = std::result::Result<Bytes, Error>> + Send + 'static> {
    let mut pieces = plan(chunks, &range).into_iter();
    let first = match pieces.next() {
        Some((chunk, within)) => Some(read_piece(source.clone(), chunk, within).await?),
        None => None,
    };
    // Later chunks are read (and verified) ahead of the socket, READ_AHEAD at a time, so the
    // disk read and the blake3 check of chunk N+1 overlap sending chunk N.
    let mut rest = futures::stream::iter(pieces)
        .map(move |(chunk, within)| read_piece(source.clone(), chunk, within))
        .buffered(READ_AHEAD);
    Ok(async_stream::try_stream! {
        if let Some(first) = first {
            metrics::bytes_sent(first.len());
            yield first;
        }
        while let Some(piece) = rest.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    tracing::error!(error = %e, "aborting download");
                    Err(e)?
                }
            };
            metrics::bytes_sent(piece.len());
            yield piece;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Blake3;

    fn chunks(lens: &[u32]) -> Vec<ChunkRef> {
        lens.iter()
            .enumerate()
            .map(|(i, len)| ChunkRef {
                id: Blake3::of(&[i as u8]),
                len: *len,
            })
            .collect()
    }

    #[test]
    fn plan_covers_exactly_the_range() {
        let c = chunks(&[10, 20, 30]);
        let whole: Vec<_> = plan(&c, &(0..60)).into_iter().map(|(_, r)| r).collect();
        assert_eq!(whole, vec![0..10, 0..20, 0..30]);
        let mid: Vec<_> = plan(&c, &(5..35)).into_iter().map(|(_, r)| r).collect();
        assert_eq!(mid, vec![5..10, 0..20, 0..5]);
        let inside: Vec<_> = plan(&c, &(12..13)).into_iter().map(|(_, r)| r).collect();
        assert_eq!(inside, vec![2..3]);
        assert!(plan(&c, &(60..60)).is_empty());
        let tail: Vec<_> = plan(&c, &(30..60)).into_iter().map(|(_, r)| r).collect();
        assert_eq!(tail, vec![0..30]);
    }
}
