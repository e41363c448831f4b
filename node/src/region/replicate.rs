//! The write path's durability step: before a command may reference new chunks, every chunk is
//! on a majority of the region's voters. Peers that already hold a chunk say so and skip it;
//! pushes to the remaining peers go on in the background after the quorum is reached.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::{Chunk, HasChunksRequest};
use metrics::counter;
use tokio::sync::mpsc;

use crate::digest::ChunkId;
use crate::error::{Error, Result};
use crate::region::peers::{push_deadline, Peer, Peers, HAS_CHUNKS_DEADLINE};
use crate::storage::chunk_store::ChunkStore;

/// Chunk pushes to peers in flight on this node at once.
const PUSHES_IN_FLIGHT: usize = 64;
static PUSHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PUSHES_IN_FLIGHT);

/// Ensures every chunk in `ids` is durable on a majority of voters (this node included when it
/// is a voter; it must hold them all already). Fails with `NO_QUORUM` after `timeout`.
pub async fn to_quorum(
    self_is_voter: bool,
    voters: usize,
    peers: &Peers,
    store: &Arc<ChunkStore>,
    ids: &[ChunkId],
    lease: Duration,
    timeout: Duration,
) -> Result<()> {
    let quorum = voters / 2 + 1;
    let needed = quorum.saturating_sub(usize::from(self_is_voter));
    let ids: Vec<ChunkId> = ids
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let targets = peers.others();
    if ids.is_empty() || targets.is_empty() {
        return if needed == 0 {
            Ok(())
        } else {
            Err(Error::NoQuorum {
                reason: format!("{needed} more voters must hold the chunks, and no peer is known"),
            })
        };
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Peer, Result<u64>)>();
    for peer in targets {
        let peers = peers.clone();
        let store = store.clone();
        let ids = ids.clone();
        let done_tx = done_tx.clone();
        // Detached: a push that outlives the quorum still completes, so the rest of the region
        // gets the chunks without waiting for resync.
        tokio::spawn(async move {
            // Bounded: at most PUSHES_IN_FLIGHT pushes run on this node at once, each with
            // deadlines, so a stuck peer cannot pile up detached work and its buffers.
            let result = match tokio::time::timeout(timeout, PUSHES.acquire()).await {
                Ok(Ok(_permit)) => push(&peers, &peer, &store, &ids, lease).await,
                _ => Err(Error::NoQuorum {
                    reason: "too many chunk pushes in flight on this node".into(),
                }),
            };
            let _ = done_tx.send((peer, result));
        });
    }
    drop(done_tx);
    if needed == 0 {
        return Ok(());
    }
    let mut acknowledged = 0;
    let mut failures = Vec::new();
    let wait = async {
        while let Some((peer, result)) = done_rx.recv().await {
            match result {
                Ok(_) if peer.voter => {
                    acknowledged += 1;
                    if acknowledged >= needed {
                        return true;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(peer = peer.id, error = %e, "could not replicate chunks to peer");
                    failures.push(format!("node {}: {e}", peer.id));
                }
            }
        }
        false
    };
    let outcome = tokio::time::timeout(timeout, wait).await;
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::NoQuorum {
            reason: format!(
                "chunks reached {acknowledged} of the {needed} more voters a majority needs ({})",
                failures.join("; ")
            ),
        }),
        Err(_) => Err(Error::NoQuorum {
            reason: format!("chunks did not reach a majority of the region within {timeout:?}"),
        }),
    }
}

/// Sends `peer` the chunks it lacks; returns the bytes sent.
async fn push(
    peers: &Peers,
    peer: &Peer,
    store: &Arc<ChunkStore>,
    ids: &[ChunkId],
    lease: Duration,
) -> Result<u64> {
    let mut client = peers.chunk_client(&peer.info);
    let mut request = tonic::Request::new(HasChunksRequest {
        ids: ids.iter().map(|id| id.as_bytes().to_vec()).collect(),
        lease_seconds: lease.as_secs().min(u64::from(u32::MAX)) as u32,
    });
    request.set_timeout(HAS_CHUNKS_DEADLINE);
    let reply = client
        .has_chunks(request)
        .await
        .map_err(|s| Error::NoQuorum {
            reason: format!("{}: {}", s.code(), s.message()),
        })?
        .into_inner();
    let missing: Vec<ChunkId> = reply
        .missing
        .iter()
        .filter_map(|raw| ChunkId::from_slice(raw))
        .collect();
    counter!("arca_region_chunks_skipped_total").increment((ids.len() - missing.len()) as u64);
    if missing.is_empty() {
        return Ok(0);
    }
    let expected = missing.len() as u64;
    // Chunks are at most 4 MiB with the default chunker; the deadline allows for that.
    let bytes = expected * (4 << 20);
    let store = store.clone();
    let outgoing = async_stream::stream! {
        for id in missing {
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || reader.read(&id)).await {
                Ok(Ok(data)) => yield Chunk { id: id.as_bytes().to_vec(), data: data.to_vec() },
                // Ending early makes the peer's count fall short, which fails this push.
                _ => break,
            }
        }
    };
    let mut request = tonic::Request::new(outgoing);
    request.set_timeout(push_deadline(bytes));
    let reply = client
        .put_chunks(request)
        .await
        .map_err(|s| Error::NoQuorum {
            reason: format!("{}: {}", s.code(), s.message()),
        })?
        .into_inner();
    if reply.stored != expected {
        return Err(Error::NoQuorum {
            reason: format!("peer stored {} of {expected} chunks", reply.stored),
        });
    }
    counter!("arca_region_chunk_replication_bytes_total", "direction" => "sent")
        .increment(reply.bytes);
    Ok(reply.bytes)
}
