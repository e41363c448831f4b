//! The primary side: accepts mirrors' QUIC connections and serves their streams from a
//! [`ChangeSource`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::protocol::{
    must_read_frame, read_frame, write_frame, Ack, ChunkReply, Entry, Feed, RegionInfo, Reply,
    Request, Role, SnapshotFrame,
};
use crate::store::{ChangeSource, Changes};

/// Entries per feed frame.
const FEED_BATCH: usize = 256;
/// Bytes of entries per feed frame (well under [`crate::protocol::MAX_FRAME`]); an entry larger
/// than this goes alone.
const FEED_BATCH_BYTES: usize = 16 << 20;
/// How often an idle feed sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Bytes of key/value pairs per snapshot frame.
const SNAPSHOT_BATCH_BYTES: usize = 4 << 20;

/// Serves replication on `endpoint` until `cancel`.
pub async fn serve<S: ChangeSource>(
    endpoint: quinn::Endpoint,
    source: Arc<S>,
    cancel: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => return,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        let source = source.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_connection(connection, source, cancel).await,
                // A peer without a certificate from the cluster CA ends here.
                Err(e) => tracing::warn!(%remote, error = %e, "refused a replication connection"),
            }
        });
    }
}

async fn serve_connection<S: ChangeSource>(
    connection: quinn::Connection,
    source: Arc<S>,
    cancel: CancellationToken,
) {
    // The region the peer's certificate is for: the only region it may speak as.
    let peer_region: Arc<Option<String>> = Arc::new(crate::tls::peer_region(&connection));
    loop {
        let (send, recv) = tokio::select! {
            _ = cancel.cancelled() => return,
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(_) => return,
            },
        };
        let source = source.clone();
        let cancel = cancel.clone();
        let peer_region = peer_region.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(send, recv, source, &peer_region, cancel).await {
                tracing::debug!(error = %e, "replication stream ended with an error");
            }
        });
    }
}

async fn serve_stream<S: ChangeSource>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    source: Arc<S>,
    peer_region: &Option<String>,
    cancel: CancellationToken,
) -> Result<()> {
    let request: Request = must_read_frame(&mut recv).await?;
    match request {
        Request::Subscribe {
            mirror,
            from_seq,
            from_epoch,
            protocol,
        } => {
            if let Err(reason) = claims_own_region(peer_region, &mirror.region) {
                write_frame(&mut send, &Feed::Refused { reason }).await?;
                return finish(send);
            }
            source.peer_seen(&mirror);
            let position = Position {
                seq: from_seq,
                epoch: from_epoch,
                protocol,
            };
            let outcome = feed(&mut send, recv, &source, &mirror, position, cancel).await;
            source.mirror_disconnected(&mirror);
            outcome
        }
        Request::GetChunks { ids } => {
            for id in ids {
                match source.read_chunk(id).await? {
                    Some(data) => {
                        write_frame(
                            &mut send,
                            &ChunkReply {
                                id,
                                found: true,
                                len: data.len() as u32,
                            },
                        )
                        .await?;
                        send.write_all(&data)
                            .await
                            .map_err(|e| Error::Connection(format!("write chunk: {e}")))?;
                    }
                    None => {
                        write_frame(
                            &mut send,
                            &ChunkReply {
                                id,
                                found: false,
                                len: 0,
                            },
                        )
                        .await?
                    }
                }
            }
            finish(send)
        }
        Request::GetSnapshot => snapshot(&mut send, &source)
            .await
            .and_then(|()| finish(send)),
        Request::Hello(peer) => {
            if let Err(reason) = claims_own_region(peer_region, &peer.region) {
                write_frame(&mut send, &Reply::Error(reason)).await?;
                return finish(send);
            }
            source.peer_seen(&peer);
            write_frame(&mut send, &Reply::Hello(source.region_info())).await?;
            finish(send)
        }
        Request::Query(request) => {
            let reply = match source.query(request).await {
                Ok(answer) => Reply::Query(answer),
                Err(e) => Reply::Error(e.to_string()),
            };
            write_frame(&mut send, &reply).await?;
            finish(send)
        }
    }
}

/// Whether a peer whose certificate is for `certified` may speak as region `claimed`: only as
/// its own (an operator's certificate, which names no region, speaks for none).
fn claims_own_region(certified: &Option<String>, claimed: &str) -> std::result::Result<(), String> {
    if certified.as_deref() == Some(claimed) {
        return Ok(());
    }
    metrics::counter!("arca_replication_refused_peers_total", "reason" => "region_mismatch")
        .increment(1);
    let reason = match certified {
        Some(region) => format!(
            "this peer's certificate is for region {region:?}; it cannot speak as {claimed:?}"
        ),
        None => format!("this peer's certificate is not a node certificate of region {claimed:?}"),
    };
    tracing::warn!(%reason, "refused a replication peer");
    Err(reason)
}

fn finish(mut send: quinn::SendStream) -> Result<()> {
    send.finish()
        .map_err(|e| Error::Connection(format!("finish stream: {e}")))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("storage task panicked: {e}")))?
}

/// Where a mirror subscribes from.
#[derive(Debug, Clone, Copy)]
struct Position {
    seq: u64,
    /// 0 from mirrors older than protocol 2 (not checked).
    epoch: u64,
    protocol: u32,
}

/// The size an entry adds to a feed frame, near enough (its command, 40 bytes a chunk
/// reference, the fixed fields).
fn entry_bytes(entry: &Entry) -> usize {
    entry.command.len() + entry.chunks.len() * 40 + 64
}

/// The longest prefix of `entries` within [`FEED_BATCH_BYTES`], at least one entry.
fn byte_bounded(mut entries: Vec<Entry>) -> Vec<Entry> {
    let mut bytes = 0;
    let mut keep = 0;
    for entry in &entries {
        bytes += entry_bytes(entry);
        if keep > 0 && bytes > FEED_BATCH_BYTES {
            break;
        }
        keep += 1;
    }
    entries.truncate(keep);
    entries
}

/// Whether the mirror's last entry is in this primary's history, like Raft's check of the
/// previous log term: `None` when it is, else why not.
fn diverged<S: ChangeSource>(source: &S, position: &Position) -> Result<Option<String>> {
    if position.seq == 0 || position.epoch == 0 {
        return Ok(None);
    }
    Ok(match source.epoch_at(position.seq)? {
        Some(epoch) if epoch == position.epoch => None,
        Some(epoch) => Some(format!(
            "the mirror's entry {} is from epoch {}, this primary's from epoch {epoch}",
            position.seq, position.epoch
        )),
        None => Some(format!(
            "the mirror applied entry {} (epoch {}), past this primary's head",
            position.seq, position.epoch
        )),
    })
}

/// Streams entries to a mirror in order, with heartbeats when idle, until the mirror leaves.
async fn feed<S: ChangeSource>(
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    source: &Arc<S>,
    mirror: &RegionInfo,
    position: Position,
    cancel: CancellationToken,
) -> Result<()> {
    let from_seq = position.seq;
    let me = source.region_info();
    write_frame(send, &Feed::Welcome(me.clone())).await?;
    if me.role != Role::Primary {
        let reason = format!("region {} is a mirror, not a primary", me.region);
        write_frame(
            send,
            &Feed::Refused {
                reason: reason.clone(),
            },
        )
        .await?;
        return Err(Error::Refused(reason));
    }
    if mirror.epoch > me.epoch {
        let reason = format!(
            "region {} is at epoch {} but mirror {} is at epoch {}: this primary was replaced",
            me.region, me.epoch, mirror.region, mirror.epoch
        );
        write_frame(
            send,
            &Feed::Refused {
                reason: reason.clone(),
            },
        )
        .await?;
        return Err(Error::Refused(reason));
    }
    let check = {
        let source = source.clone();
        blocking(move || diverged(source.as_ref(), &position)).await?
    };
    if let Some(reason) = check {
        tracing::warn!(mirror = %mirror.region, %reason, "the mirror's position is not in this primary's history: it must resync from a snapshot");
        write_frame(
            send,
            &Feed::SnapshotRequired {
                oldest_seq: 0,
                reason: Some(reason),
            },
        )
        .await?;
        return Ok(());
    }
    tracing::info!(mirror = %mirror.region, from_seq, "mirror subscribed");

    // Acknowledgements come back on the same stream; track the highest.
    let acked = Arc::new(AtomicU64::new(from_seq));
    let ack_reader = {
        let acked = acked.clone();
        let source = source.clone();
        let mirror = mirror.clone();
        tokio::spawn(async move {
            while let Ok(Some(Ack::Applied { seq })) = read_frame::<Ack>(&mut recv).await {
                acked.fetch_max(seq, Ordering::SeqCst);
                source.mirror_acked(&mirror, seq);
            }
        })
    };
    let result = async {
        let mut head_rx = source.watch_head();
        let mut sent = from_seq;
        loop {
            if cancel.is_cancelled() || ack_reader.is_finished() {
                return Ok(());
            }
            let reader = source.clone();
            let after = sent;
            match blocking(move || reader.changes_after(after, FEED_BATCH)).await? {
                Changes::Truncated { oldest_seq } => {
                    write_frame(
                        send,
                        &Feed::SnapshotRequired {
                            oldest_seq,
                            reason: None,
                        },
                    )
                    .await?;
                    return Ok(());
                }
                Changes::Entries(entries) if !entries.is_empty() => {
                    let entries = byte_bounded(entries);
                    sent = entries.last().map(|e| e.seq).unwrap_or(sent);
                    // Flow control: this write waits while the mirror is not reading, so a
                    // slow mirror never makes the primary buffer its backlog.
                    let frame = if position.protocol >= 2 {
                        Feed::Batch {
                            entries,
                            head: source.region_info().head,
                        }
                    } else {
                        Feed::Entries(entries)
                    };
                    write_frame(send, &frame).await?;
                    continue;
                }
                Changes::Entries(_) => {}
            }
            let head = source.region_info().head;
            let first_unacked = acked.load(Ordering::SeqCst) + 1;
            let next_at_ms = if first_unacked <= head.seq {
                let reader = source.clone();
                blocking(move || reader.entry_at_ms(first_unacked)).await?
            } else {
                None
            };
            let next_seq = next_at_ms.map(|_| first_unacked);
            write_frame(
                send,
                &Feed::Heartbeat {
                    head,
                    next_at_ms,
                    next_seq,
                },
            )
            .await?;
            head_rx.borrow_and_update();
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = head_rx.changed() => {}
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
    }
    .await;
    ack_reader.abort();
    tracing::info!(mirror = %mirror.region, "mirror subscription ended");
    result
}

async fn snapshot<S: ChangeSource>(send: &mut quinn::SendStream, source: &Arc<S>) -> Result<()> {
    let reader = source.clone();
    let mut snapshot = blocking(move || reader.snapshot()).await?;
    write_frame(
        send,
        &SnapshotFrame::Header {
            head: snapshot.head(),
        },
    )
    .await?;
    loop {
        let (returned, batch) = tokio::task::spawn_blocking(move || {
            let batch = snapshot.next_batch(SNAPSHOT_BATCH_BYTES);
            (snapshot, batch)
        })
        .await
        .map_err(|e| Error::Storage(format!("snapshot reader panicked: {e}")))?;
        snapshot = returned;
        match batch? {
            Some(pairs) => {
                let pairs = pairs
                    .into_iter()
                    .map(|(k, v)| (serde_bytes::ByteBuf::from(k), serde_bytes::ByteBuf::from(v)))
                    .collect();
                write_frame(send, &SnapshotFrame::Pairs(pairs)).await?;
            }
            None => break,
        }
    }
    write_frame(send, &SnapshotFrame::End).await
}
