//! The mirror side: subscribes to the primary from the last applied entry, fetches only the
//! chunks this region lacks (in parallel, verified), stores them, commits entries in order, and
//! acknowledges. Reconnects from the last applied entry after any failure, so a dropped link
//! resumes without a gap and a half-transferred blob resumes at chunk granularity.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::MirrorLag;
use crate::protocol::{
    must_read_frame, read_bytes, read_frame, write_frame, Ack, ChunkId, ChunkReply, Entry, Feed,
    RegionInfo, Reply, Request, SnapshotFrame, FEED_PROTOCOL,
};
use crate::store::ChangeSink;

/// How a mirror fetches from its primary.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Concurrent chunk-fetch streams.
    pub parallel_streams: usize,
    /// Largest chunk batch per fetch stream, in bytes.
    pub batch_bytes: u64,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        Self {
            parallel_streams: 8,
            batch_bytes: 8 << 20,
        }
    }
}

/// Resolves `host:port` and returns the address and the TLS server name.
async fn resolve(addr: &str) -> Result<(SocketAddr, String)> {
    let host = addr
        .rsplit_once(':')
        .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| Error::Connection(format!("{addr:?} is not host:port")))?
        .to_string();
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Error::Connection(format!("resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| Error::Connection(format!("{addr} resolves to nothing")))?;
    Ok((resolved, host))
}

/// Opens a QUIC connection to a peer region's node.
pub async fn connect(endpoint: &quinn::Endpoint, addr: &str) -> Result<quinn::Connection> {
    let (socket, server_name) = resolve(addr).await?;
    let connecting = endpoint
        .connect(socket, &server_name)
        .map_err(|e| Error::Connection(format!("connect to {addr}: {e}")))?;
    tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| Error::Connection(format!("connect to {addr}: timed out")))?
        .map_err(|e| Error::Connection(format!("connect to {addr}: {e}")))
}

/// Exchanges region identities with the node at `addr`.
pub async fn hello(endpoint: &quinn::Endpoint, addr: &str, me: RegionInfo) -> Result<RegionInfo> {
    let connection = connect(endpoint, addr).await?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| Error::Connection(format!("open stream: {e}")))?;
    write_frame(&mut send, &Request::Hello(me)).await?;
    let _ = send.finish();
    match must_read_frame::<Reply>(&mut recv).await? {
        Reply::Hello(info) => {
            speaks_for_own_region(&connection, &info)?;
            Ok(info)
        }
        Reply::Error(e) => Err(Error::Refused(e)),
        Reply::Query(_) => Err(Error::Protocol("unexpected reply to hello".into())),
    }
}

/// Refuses a peer that names a region its certificate is not for.
fn speaks_for_own_region(connection: &quinn::Connection, info: &RegionInfo) -> Result<()> {
    let certified = crate::tls::peer_region(connection);
    if certified.as_deref() == Some(info.region.as_str()) {
        return Ok(());
    }
    metrics::counter!("arca_replication_refused_peers_total", "reason" => "region_mismatch")
        .increment(1);
    Err(Error::Refused(format!(
        "the peer says it is region {:?}, but its certificate is for {}",
        info.region,
        certified.map_or("no region".to_string(), |r| format!("{r:?}"))
    )))
}

/// Sends an opaque query to the node at `addr`.
pub async fn query(endpoint: &quinn::Endpoint, addr: &str, request: Vec<u8>) -> Result<Vec<u8>> {
    let connection = connect(endpoint, addr).await?;
    query_on(&connection, request).await
}

/// Sends an opaque query on an open connection.
pub async fn query_on(connection: &quinn::Connection, request: Vec<u8>) -> Result<Vec<u8>> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| Error::Connection(format!("open stream: {e}")))?;
    write_frame(&mut send, &Request::Query(request)).await?;
    let _ = send.finish();
    match must_read_frame::<Reply>(&mut recv).await? {
        Reply::Query(answer) => Ok(answer),
        Reply::Error(e) => Err(Error::Refused(e)),
        Reply::Hello(_) => Err(Error::Protocol("unexpected reply to query".into())),
    }
}

/// Fetches chunks from an open connection, in parallel batches, verifying each against its
/// name and handing each verified batch to `store` as it completes. Returns the bytes fetched.
pub async fn fetch_chunks<F, Fut>(
    connection: &quinn::Connection,
    wanted: Vec<(ChunkId, u32)>,
    options: &MirrorOptions,
    store: F,
) -> Result<u64>
where
    F: Fn(Vec<(ChunkId, Bytes)>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut batches: Vec<Vec<ChunkId>> = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0u64;
    for (id, len) in wanted {
        if !current.is_empty()
            && (current_bytes + u64::from(len) > options.batch_bytes || current.len() >= 256)
        {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(id);
        current_bytes += u64::from(len);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    let fetched = stream::iter(batches)
        .map(|ids| fetch_batch(connection.clone(), ids))
        .buffer_unordered(options.parallel_streams.max(1))
        .and_then(|chunks| {
            let bytes: u64 = chunks.iter().map(|(_, data)| data.len() as u64).sum();
            let stored = store(chunks);
            async move { stored.await.map(|()| bytes) }
        })
        .try_fold(0u64, |total, bytes| async move { Ok(total + bytes) })
        .await?;
    Ok(fetched)
}

async fn fetch_batch(
    connection: quinn::Connection,
    ids: Vec<ChunkId>,
) -> Result<Vec<(ChunkId, Bytes)>> {
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| Error::Connection(format!("open chunk stream: {e}")))?;
    write_frame(&mut send, &Request::GetChunks { ids: ids.clone() }).await?;
    let _ = send.finish();
    let mut chunks = Vec::with_capacity(ids.len());
    for expected in ids {
        let reply: ChunkReply = must_read_frame(&mut recv).await?;
        if reply.id != expected {
            return Err(Error::Protocol(format!(
                "asked for chunk {expected}, got {}",
                reply.id
            )));
        }
        if !reply.found {
            return Err(Error::ChunkUnavailable {
                chunk: expected.to_string(),
            });
        }
        let data = read_bytes(&mut recv, reply.len as usize).await?;
        if ChunkId::of(&data) != expected {
            return Err(Error::CorruptChunk {
                chunk: expected.to_string(),
            });
        }
        chunks.push((expected, data));
    }
    Ok(chunks)
}

/// Follows a primary for as long as `cancel` allows.
pub struct Mirror<K: ChangeSink> {
    sink: Arc<K>,
    endpoint: quinn::Endpoint,
    options: MirrorOptions,
    lag: Arc<MirrorLag>,
}

impl<K: ChangeSink> Mirror<K> {
    pub fn new(
        sink: Arc<K>,
        endpoint: quinn::Endpoint,
        options: MirrorOptions,
        lag: Arc<MirrorLag>,
    ) -> Self {
        Self {
            sink,
            endpoint,
            options,
            lag,
        }
    }

    /// Runs the subscription loop: only while this node is active (its region's leader, its
    /// region a mirror), reconnecting with backoff.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut next_addr = 0usize;
        let publisher = {
            let lag = self.lag.clone();
            let cancel = cancel.clone();
            let sink = self.sink.clone();
            tokio::spawn(async move {
                // Only the node running the subscription publishes lag: a follower's figures
                // would be zeros under the same labels.
                while !cancel.is_cancelled() {
                    if sink.is_active() {
                        lag.activate();
                        lag.publish();
                    } else {
                        lag.deactivate();
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let addrs = self.sink.primary_addrs();
            if !self.sink.is_active() || addrs.is_empty() {
                self.lag.set_connected(false);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
            self.lag.activate();
            let addr = addrs[next_addr % addrs.len()].clone();
            let outcome = tokio::select! {
                _ = cancel.cancelled() => break,
                // Local work first: it must not wait for the primary to be reachable.
                outcome = async {
                    self.sink.resume().await?;
                    self.session(&addr).await
                } => outcome,
            };
            self.lag.set_connected(false);
            match outcome {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(primary = %addr, code = e.code(), error = %e, "replication session ended; reconnecting");
                    next_addr += 1;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        publisher.abort();
    }

    async fn session(&self, addr: &str) -> Result<()> {
        let connection = connect(&self.endpoint, addr).await?;
        if self.sink.needs_snapshot() {
            tracing::warn!(primary = %addr, "this region's state must be replaced: catching up from a snapshot");
            self.catch_up_from_snapshot(&connection).await?;
        }
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| Error::Connection(format!("open feed: {e}")))?;
        let applied = self.sink.applied();
        self.lag.set_applied(applied);
        write_frame(
            &mut send,
            &Request::Subscribe {
                mirror: self.sink.region_info(),
                from_seq: applied.seq,
                from_epoch: applied.epoch,
                protocol: FEED_PROTOCOL,
            },
        )
        .await?;
        loop {
            if !self.sink.is_active() {
                return Ok(());
            }
            let frame =
                tokio::time::timeout(Duration::from_secs(10), read_frame::<Feed>(&mut recv))
                    .await
                    .map_err(|_| Error::Connection("the primary went silent".into()))??;
            let Some(frame) = frame else {
                return Err(Error::Connection("the primary closed the feed".into()));
            };
            match frame {
                Feed::Welcome(primary) => {
                    speaks_for_own_region(&connection, &primary)?;
                    self.lag.set_primary(&primary.region);
                    self.lag.heard(primary.head, None);
                    self.sink.primary_seen(&primary);
                }
                Feed::Heartbeat {
                    head,
                    next_at_ms,
                    next_seq,
                } => self.lag.heard(head, next_seq.zip(next_at_ms)),
                Feed::Entries(entries) => {
                    if self
                        .on_entries(&connection, &mut send, entries, None)
                        .await?
                    {
                        return Ok(());
                    }
                }
                Feed::Batch { entries, head } => {
                    if self
                        .on_entries(&connection, &mut send, entries, Some(head))
                        .await?
                    {
                        return Ok(());
                    }
                }
                Feed::SnapshotRequired { oldest_seq, reason } => {
                    match reason {
                        Some(reason) => tracing::warn!(
                            %reason,
                            applied = applied.seq,
                            "this region's position is not in the primary's history; catching up from a snapshot"
                        ),
                        None => tracing::warn!(
                            oldest_seq,
                            applied = applied.seq,
                            "fell behind the primary's retained log; catching up from a snapshot"
                        ),
                    }
                    self.catch_up_from_snapshot(&connection).await?;
                    return Ok(());
                }
                Feed::Refused { reason } => return Err(Error::Refused(reason)),
            }
        }
    }

    /// Applies a batch of entries and acknowledges it. A batch naming a chunk the primary no
    /// longer has is abandoned for a snapshot; `Ok(true)` then says the session must start
    /// over from the new position.
    async fn on_entries(
        &self,
        connection: &quinn::Connection,
        send: &mut quinn::SendStream,
        entries: Vec<Entry>,
        primary_head: Option<crate::protocol::Head>,
    ) -> Result<bool> {
        if let Some(head) = primary_head {
            self.lag.heard(head, None);
        }
        let head = match self.apply(connection, entries).await {
            Ok(head) => head,
            Err(Error::ChunkUnavailable { chunk }) => {
                // The primary keeps freed chunks until every mirror it knows has passed the
                // entry that freed them; a mirror it did not know then can still meet one.
                tracing::warn!(
                    chunk,
                    applied = self.sink.applied().seq,
                    "an entry names a chunk the primary no longer holds; catching up from a snapshot"
                );
                self.catch_up_from_snapshot(connection).await?;
                return Ok(true);
            }
            Err(Error::Diverged(reason)) => {
                tracing::warn!(%reason, "catching up from a snapshot of the primary");
                self.catch_up_from_snapshot(connection).await?;
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        write_frame(send, &Ack::Applied { seq: head.seq }).await?;
        Ok(false)
    }

    async fn store_verified(&self, chunks: Vec<(ChunkId, Bytes)>) -> Result<()> {
        self.sink.store_chunks(chunks).await
    }

    /// Fetches the chunks `entries` need that this region lacks, then commits the entries.
    async fn apply(
        &self,
        connection: &quinn::Connection,
        entries: Vec<Entry>,
    ) -> Result<crate::protocol::Head> {
        let Some(first) = entries.first() else {
            return Ok(self.sink.applied());
        };
        if let Some(last) = entries.last() {
            self.lag.received(
                (first.seq, first.at_ms),
                crate::protocol::Head {
                    epoch: last.epoch,
                    seq: last.seq,
                    at_ms: last.at_ms,
                },
            );
        }
        let mut seen = BTreeSet::new();
        let mut referenced = Vec::new();
        for entry in &entries {
            for (id, len) in &entry.chunks {
                if seen.insert(*id) {
                    referenced.push((*id, *len));
                }
            }
        }
        let ids: Vec<ChunkId> = referenced.iter().map(|(id, _)| *id).collect();
        let sink = self.sink.clone();
        let missing: BTreeSet<ChunkId> = tokio::task::spawn_blocking(move || sink.missing(&ids))
            .await
            .map_err(|e| Error::Storage(format!("chunk check panicked: {e}")))??
            .into_iter()
            .collect();
        let wanted: Vec<(ChunkId, u32)> = referenced
            .iter()
            .filter(|(id, _)| missing.contains(id))
            .copied()
            .collect();
        self.lag.count_skipped((seen.len() - wanted.len()) as u64);
        let pending: u64 = wanted.iter().map(|(_, len)| u64::from(*len)).sum();
        self.lag.set_pending_bytes(pending);
        if !wanted.is_empty() {
            let lag = self.lag.clone();
            let remaining = parking_lot::Mutex::new(pending);
            fetch_chunks(connection, wanted, &self.options, |chunks| {
                let bytes: u64 = chunks.iter().map(|(_, d)| d.len() as u64).sum();
                lag.count_bytes(bytes);
                let left = {
                    let mut remaining = remaining.lock();
                    *remaining = remaining.saturating_sub(bytes);
                    *remaining
                };
                lag.set_pending_bytes(left);
                self.store_verified(chunks)
            })
            .await?;
        }
        self.lag.set_pending_bytes(0);
        // Every referenced chunk, fetched now or held already, on a majority of this region
        // before the entries can make it visible.
        if !referenced.is_empty() {
            self.sink.secure(referenced).await?;
        }
        let count = entries.len() as u64;
        let head = self.sink.apply(entries).await?;
        self.lag.count_applied(count);
        self.lag.set_applied(head);
        Ok(head)
    }

    async fn catch_up_from_snapshot(&self, connection: &quinn::Connection) -> Result<()> {
        self.lag.count_snapshot();
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| Error::Connection(format!("open snapshot stream: {e}")))?;
        write_frame(&mut send, &Request::GetSnapshot).await?;
        let _ = send.finish();
        let head = match must_read_frame::<SnapshotFrame>(&mut recv).await? {
            SnapshotFrame::Header { head } => head,
            other => return Err(Error::Protocol(format!("snapshot began with {other:?}"))),
        };
        self.sink.begin_snapshot(head).await?;
        loop {
            match must_read_frame::<SnapshotFrame>(&mut recv).await? {
                SnapshotFrame::Pairs(pairs) => {
                    if !self.sink.is_active() {
                        return Err(Error::Refused(
                            "this node stopped leading its region during the snapshot catch-up"
                                .into(),
                        ));
                    }
                    let pairs = pairs
                        .into_iter()
                        .map(|(k, v)| (k.into_vec(), v.into_vec()))
                        .collect();
                    let referenced = self.sink.snapshot_batch(pairs).await?;
                    let sink = self.sink.clone();
                    let ids: Vec<ChunkId> = referenced.iter().map(|(id, _)| *id).collect();
                    let missing: BTreeSet<ChunkId> =
                        tokio::task::spawn_blocking(move || sink.missing(&ids))
                            .await
                            .map_err(|e| Error::Storage(format!("chunk check panicked: {e}")))??
                            .into_iter()
                            .collect();
                    let wanted: Vec<(ChunkId, u32)> = referenced
                        .iter()
                        .filter(|(id, _)| missing.contains(id))
                        .copied()
                        .collect();
                    let lag = self.lag.clone();
                    fetch_chunks(connection, wanted, &self.options, |chunks| {
                        lag.count_bytes(chunks.iter().map(|(_, d)| d.len() as u64).sum());
                        self.store_verified(chunks)
                    })
                    .await?;
                    if !referenced.is_empty() {
                        self.sink.secure(referenced).await?;
                    }
                }
                SnapshotFrame::End => break,
                SnapshotFrame::Header { .. } => {
                    return Err(Error::Protocol("a second snapshot header".into()))
                }
            }
        }
        if !self.sink.is_active() {
            return Err(Error::Refused(
                "this node stopped leading its region during the snapshot catch-up".into(),
            ));
        }
        self.sink.finish_snapshot(head).await?;
        self.lag.set_applied(head);
        tracing::info!(
            seq = head.seq,
            epoch = head.epoch,
            "caught up from a snapshot of the primary"
        );
        Ok(())
    }
}
