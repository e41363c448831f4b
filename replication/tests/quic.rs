//! The replication protocol over real QUIC with mutual TLS, against in-memory storage.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arca_replication::store::Pairs;
use arca_replication::{
    tls, ChangeSink, ChangeSource, Changes, ChunkId, Entry, Head, Mirror, MirrorLag, MirrorOptions,
    RegionInfo, Result, Role, SnapshotReader, TlsFiles,
};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Node certificates of a new CA, one per `(name, region)`.
fn certs(dir: &Path, ca: &str, nodes: &[(&str, &str)]) -> Vec<TlsFiles> {
    let ca_dir = dir.join(ca);
    tls::init_ca(&ca_dir, YEAR).expect("init CA");
    nodes
        .iter()
        .map(|(node, region)| {
            let (cert, key) = tls::issue(
                &ca_dir,
                node,
                tls::Role::Node { region },
                &["127.0.0.1".to_string(), "localhost".to_string()],
                &ca_dir.join(node),
                YEAR,
            )
            .expect("issue");
            TlsFiles {
                ca_cert: ca_dir.join("ca.pem"),
                cert,
                key,
            }
        })
        .collect()
}

fn info(region: &str, role: Role, head: Head) -> RegionInfo {
    RegionInfo {
        region: region.into(),
        role,
        epoch: 1,
        primary: None,
        http_addrs: vec![],
        replication_addrs: vec![],
        head,
        fork: None,
        forks: Vec::new(),
        cluster_id: None,
    }
}

/// A primary with entries and chunks in memory; entries up to `trimmed` are no longer retained.
struct MemSource {
    entries: Mutex<Vec<Entry>>,
    chunks: Mutex<HashMap<ChunkId, Bytes>>,
    state: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    trimmed: Mutex<u64>,
    head_tx: watch::Sender<u64>,
    acked: Mutex<u64>,
    /// The regions that said hello or subscribed.
    peers: Mutex<Vec<String>>,
}

impl MemSource {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Vec::new()),
            chunks: Mutex::new(HashMap::new()),
            state: Mutex::new(BTreeMap::new()),
            trimmed: Mutex::new(0),
            head_tx: watch::channel(0).0,
            acked: Mutex::new(0),
            peers: Mutex::new(Vec::new()),
        })
    }

    /// Appends an entry whose "command" sets `key` and references `blobs` chunk contents.
    fn push(&self, key: &str, blobs: &[Vec<u8>]) {
        self.push_at(1, key, blobs, 0);
    }

    /// Like `push`, at `epoch`, with `padding` more bytes of command (a command that carries a
    /// large chunk list).
    fn push_at(&self, epoch: u64, key: &str, blobs: &[Vec<u8>], padding: usize) {
        let mut entries = self.entries.lock();
        let seq = entries.len() as u64 + 1;
        let mut refs = Vec::new();
        for blob in blobs {
            let id = ChunkId::of(blob);
            self.chunks.lock().insert(id, Bytes::from(blob.clone()));
            refs.push((id, blob.len() as u32));
        }
        self.state
            .lock()
            .insert(key.as_bytes().to_vec(), seq.to_be_bytes().to_vec());
        let mut command = key.as_bytes().to_vec();
        command.resize(command.len() + padding, b' ');
        entries.push(Entry {
            epoch,
            seq,
            at_ms: 1_000 + seq as i64,
            command,
            chunks: refs,
        });
        drop(entries);
        self.head_tx.send_replace(seq);
    }

    /// Appends `count` entries at once: the feed sees none of them or all.
    fn push_many(&self, prefix: &str, count: u32) {
        let mut entries = self.entries.lock();
        for i in 0..count {
            let seq = entries.len() as u64 + 1;
            let key = format!("{prefix}{i}");
            self.state
                .lock()
                .insert(key.as_bytes().to_vec(), seq.to_be_bytes().to_vec());
            entries.push(Entry {
                epoch: 1,
                seq,
                at_ms: 1_000 + seq as i64,
                command: key.into_bytes(),
                chunks: Vec::new(),
            });
        }
        let head = entries.len() as u64;
        drop(entries);
        self.head_tx.send_replace(head);
    }

    fn head(&self) -> Head {
        let entries = self.entries.lock();
        entries
            .last()
            .map(|e| Head {
                epoch: e.epoch,
                seq: e.seq,
                at_ms: e.at_ms,
            })
            .unwrap_or_default()
    }
}

struct MemSnapshot {
    head: Head,
    pairs: Option<Pairs>,
}

impl SnapshotReader for MemSnapshot {
    fn head(&self) -> Head {
        self.head
    }
    fn next_batch(&mut self, _max_bytes: usize) -> Result<Option<Pairs>> {
        Ok(self.pairs.take())
    }
}

impl ChangeSource for MemSource {
    fn region_info(&self) -> RegionInfo {
        info("us", Role::Primary, self.head())
    }
    fn changes_after(&self, after: u64, limit: usize) -> Result<Changes> {
        let trimmed = *self.trimmed.lock();
        if after < trimmed {
            return Ok(Changes::Truncated {
                oldest_seq: trimmed + 1,
            });
        }
        let entries = self.entries.lock();
        Ok(Changes::Entries(
            entries
                .iter()
                .filter(|e| e.seq > after)
                .take(limit)
                .cloned()
                .collect(),
        ))
    }
    fn entry_at_ms(&self, seq: u64) -> Result<Option<i64>> {
        Ok(self
            .entries
            .lock()
            .iter()
            .find(|e| e.seq == seq)
            .map(|e| e.at_ms))
    }
    fn epoch_at(&self, seq: u64) -> Result<Option<u64>> {
        Ok(self
            .entries
            .lock()
            .iter()
            .find(|e| e.seq == seq)
            .map(|e| e.epoch))
    }
    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }
    async fn read_chunk(&self, id: ChunkId) -> Result<Option<Bytes>> {
        Ok(self.chunks.lock().get(&id).cloned())
    }
    fn snapshot(&self) -> Result<Box<dyn SnapshotReader>> {
        let pairs = self
            .state
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Box::new(MemSnapshot {
            head: self.head(),
            pairs: Some(pairs),
        }))
    }
    fn mirror_acked(&self, _mirror: &RegionInfo, seq: u64) {
        *self.acked.lock() = seq;
    }
    fn mirror_disconnected(&self, _mirror: &RegionInfo) {}
    fn peer_seen(&self, peer: &RegionInfo) {
        self.peers.lock().push(peer.region.clone());
    }
    async fn query(&self, request: Vec<u8>) -> Result<Vec<u8>> {
        Ok(request.into_iter().rev().collect())
    }
}

#[derive(Default)]
struct MemSink {
    primary: Mutex<Vec<String>>,
    applied: Mutex<Vec<Entry>>,
    chunks: Mutex<HashMap<ChunkId, Bytes>>,
    state: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    staged: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    snapshot_head: Mutex<Option<Head>>,
    /// Chunks handed to the sink to be made durable in its region, fetched or not.
    secured: Mutex<std::collections::HashSet<ChunkId>>,
    snapshots_begun: Mutex<u64>,
    /// When set, each batch waits for a permit before it applies (a mirror that cannot keep
    /// up, held exactly where the test wants it).
    apply_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl ChangeSink for MemSink {
    fn region_info(&self) -> RegionInfo {
        info("eu", Role::Mirror, self.applied())
    }
    fn is_active(&self) -> bool {
        true
    }
    fn applied(&self) -> Head {
        let last = self.applied.lock().last().map(|e| Head {
            epoch: e.epoch,
            seq: e.seq,
            at_ms: e.at_ms,
        });
        last.or(*self.snapshot_head.lock()).unwrap_or_default()
    }
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let chunks = self.chunks.lock();
        Ok(ids
            .iter()
            .filter(|id| !chunks.contains_key(*id))
            .copied()
            .collect())
    }
    async fn store_chunks(&self, chunks: Vec<(ChunkId, Bytes)>) -> Result<()> {
        self.chunks.lock().extend(chunks);
        Ok(())
    }
    async fn secure(&self, chunks: Vec<(ChunkId, u32)>) -> Result<()> {
        let mut secured = self.secured.lock();
        for (id, _) in chunks {
            assert!(
                self.chunks.lock().contains_key(&id),
                "secured chunks are held"
            );
            secured.insert(id);
        }
        Ok(())
    }
    async fn apply(&self, entries: Vec<Entry>) -> Result<Head> {
        let gate = self.apply_gate.lock().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        for entry in entries {
            let expected = self.applied().seq + 1;
            if entry.seq < expected {
                continue;
            }
            assert_eq!(entry.seq, expected, "entries apply as a gapless prefix");
            for (id, _) in &entry.chunks {
                assert!(
                    self.chunks.lock().contains_key(id),
                    "chunks arrive before their entry"
                );
                assert!(
                    self.secured.lock().contains(id),
                    "every chunk an entry references is durable in the region before it applies"
                );
            }
            self.state
                .lock()
                .insert(entry.command.clone(), entry.seq.to_be_bytes().to_vec());
            self.applied.lock().push(entry);
        }
        Ok(self.applied())
    }
    async fn begin_snapshot(&self, _head: Head) -> Result<()> {
        *self.snapshots_begun.lock() += 1;
        self.staged.lock().clear();
        Ok(())
    }
    async fn snapshot_batch(&self, pairs: Pairs) -> Result<Vec<(ChunkId, u32)>> {
        self.staged.lock().extend(pairs);
        Ok(Vec::new())
    }
    async fn finish_snapshot(&self, head: Head) -> Result<()> {
        *self.state.lock() = std::mem::take(&mut *self.staged.lock());
        self.applied.lock().clear();
        *self.snapshot_head.lock() = Some(head);
        Ok(())
    }
    fn primary_seen(&self, _primary: &RegionInfo) {}
    fn primary_addrs(&self) -> Vec<String> {
        self.primary.lock().clone()
    }
}

struct Setup {
    source: Arc<MemSource>,
    sink: Arc<MemSink>,
    primary_addr: SocketAddr,
    mirror_endpoint: quinn::Endpoint,
    /// A node of the cluster CA's third region, `ap`.
    other: TlsFiles,
    lag: Arc<MirrorLag>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = certs(
        dir.path(),
        "ca",
        &[("primary", "us"), ("mirror", "eu"), ("other", "ap")],
    );
    let source = MemSource::new();
    let primary = arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &files[0])
        .expect("primary endpoint");
    let primary_addr = primary.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    tokio::spawn(arca_replication::server::serve(
        primary,
        source.clone(),
        cancel.clone(),
    ));
    let mirror_endpoint =
        arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &files[1])
            .expect("mirror endpoint");
    Setup {
        source,
        sink: Arc::new(MemSink::default()),
        primary_addr,
        mirror_endpoint,
        other: files[2].clone(),
        lag: Arc::new(MirrorLag::new("eu")),
        cancel,
        _dir: dir,
    }
}

fn start_mirror(setup: &Setup) {
    *setup.sink.primary.lock() = vec![setup.primary_addr.to_string()];
    let options = MirrorOptions {
        parallel_streams: 4,
        batch_bytes: 64 * 1024,
    };
    let mirror = Mirror::new(
        setup.sink.clone(),
        setup.mirror_endpoint.clone(),
        options,
        setup.lag.clone(),
    );
    tokio::spawn(mirror.run(setup.cancel.clone()));
}

async fn wait_applied(sink: &MemSink, seq: u64) {
    wait_for(|| sink.applied().seq >= seq).await;
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn blob(seed: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_stream_in_order_and_only_missing_chunks_cross() {
    let setup = setup().await;
    let shared = blob(1, 100_000);
    // The mirror already holds one chunk: it must not be transferred.
    setup
        .sink
        .chunks
        .lock()
        .insert(ChunkId::of(&shared), Bytes::from(shared.clone()));
    setup.source.push("a", &[shared.clone(), blob(2, 50_000)]);
    start_mirror(&setup);
    wait_applied(&setup.sink, 1).await;
    for i in 0..50u8 {
        setup
            .source
            .push(&format!("k{i}"), &[blob(10 + i, 10_000 + i as usize * 100)]);
    }
    wait_applied(&setup.sink, 51).await;
    let applied: Vec<u64> = setup.sink.applied.lock().iter().map(|e| e.seq).collect();
    assert_eq!(applied, (1..=51).collect::<Vec<_>>());
    let report = setup.lag.report();
    assert_eq!(report.lag_entries, 0);
    assert!(report.connected);
    wait_for(|| *setup.source.acked.lock() == 51).await;
    // Every chunk the entries reference is now at the mirror, verified.
    for entry in setup.source.entries.lock().iter() {
        for (id, _) in &entry.chunks {
            assert!(setup.sink.chunks.lock().contains_key(id));
        }
    }
    setup.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_behind_the_retained_log_catches_up_from_a_snapshot() {
    let setup = setup().await;
    for i in 0..20u8 {
        setup.source.push(&format!("k{i}"), &[blob(i, 1000)]);
    }
    *setup.source.trimmed.lock() = 10;
    start_mirror(&setup);
    wait_applied(&setup.sink, 20).await;
    assert_eq!(setup.sink.state.lock().len(), 20);
    setup.source.push("after", &[blob(99, 1000)]);
    wait_applied(&setup.sink, 21).await;
    setup.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_from_the_cluster_ca_is_refused() {
    let setup = setup().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rogue = certs(dir.path(), "rogue-ca", &[("rogue", "eu")]);
    let endpoint = arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &rogue[0])
        .expect("rogue endpoint");
    let refused = arca_replication::client::hello(
        &endpoint,
        &setup.primary_addr.to_string(),
        info("x", Role::Mirror, Head::default()),
    )
    .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA must fail the handshake"
    );
    // A properly issued peer gets through.
    let answer = arca_replication::client::query(
        &setup.mirror_endpoint,
        &setup.primary_addr.to_string(),
        vec![1, 2, 3],
    )
    .await
    .expect("query");
    assert_eq!(answer, vec![3, 2, 1]);
    setup.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_issued_for_one_region_cannot_claim_to_be_another() {
    let setup = setup().await;
    let primary = setup.primary_addr.to_string();
    let ap = arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &setup.other)
        .expect("endpoint");
    // A node of `ap` naming itself `eu`, the mirror the primary feeds.
    let refused =
        arca_replication::client::hello(&ap, &primary, info("eu", Role::Mirror, Head::default()))
            .await;
    assert!(
        matches!(&refused, Err(arca_replication::Error::Refused(reason)) if reason.contains("\"ap\"")),
        "{refused:?}"
    );
    let subscribed = subscribe_as(&ap, &primary, "eu").await;
    assert!(
        subscribed.contains("cannot speak as \"eu\""),
        "a subscription in another region's name is refused: {subscribed}"
    );
    assert!(setup.source.peers.lock().is_empty(), "no peer was recorded");
    // Under its own name it is heard.
    let hello =
        arca_replication::client::hello(&ap, &primary, info("ap", Role::Mirror, Head::default()))
            .await
            .expect("hello as itself");
    assert_eq!(hello.region, "us");

    // The other way round: a primary whose certificate is for `ap` but which says it is `us`
    // is refused by the mirror.
    let impostor = arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &setup.other)
        .expect("impostor endpoint");
    let impostor_addr = impostor.local_addr().expect("addr").to_string();
    tokio::spawn(arca_replication::server::serve(
        impostor,
        MemSource::new(),
        setup.cancel.clone(),
    ));
    let refused = arca_replication::client::hello(
        &setup.mirror_endpoint,
        &impostor_addr,
        info("eu", Role::Mirror, Head::default()),
    )
    .await;
    assert!(
        matches!(&refused, Err(arca_replication::Error::Refused(reason)) if reason.contains("says it is region \"us\"")),
        "{refused:?}"
    );
    setup.cancel.cancel();
}

/// Opens a subscription as `region` and returns the first refusal, or what came instead.
async fn subscribe_as(endpoint: &quinn::Endpoint, addr: &str, region: &str) -> String {
    use arca_replication::protocol::{read_frame, write_frame, Feed, Request};
    let connection = arca_replication::client::connect(endpoint, addr)
        .await
        .expect("connect");
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    write_frame(
        &mut send,
        &Request::Subscribe {
            mirror: info(region, Role::Mirror, Head::default()),
            from_seq: 0,
            from_epoch: 0,
            protocol: arca_replication::protocol::FEED_PROTOCOL,
        },
    )
    .await
    .expect("subscribe");
    match tokio::time::timeout(Duration::from_secs(10), read_frame::<Feed>(&mut recv)).await {
        Ok(Ok(Some(Feed::Refused { reason }))) => reason,
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_a_mirror_already_holds_are_made_durable_in_its_region_too() {
    // Audit D3: only the chunks the mirror's leader fetched were pushed to a majority of its
    // region; a chunk the leader already held (an earlier failed push, a read-through) was
    // committed while the leader alone had it.
    let setup = setup().await;
    let held = blob(1, 100_000);
    setup
        .sink
        .chunks
        .lock()
        .insert(ChunkId::of(&held), Bytes::from(held.clone()));
    setup.source.push("a", &[held.clone(), blob(2, 50_000)]);
    start_mirror(&setup);
    wait_applied(&setup.sink, 1).await;
    assert!(setup.sink.secured.lock().contains(&ChunkId::of(&held)));
    setup.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_batch_of_large_entries_stays_under_the_frame_limit() {
    // Audit A1: a feed frame carried up to 256 entries whatever their size; past the 64 MiB
    // frame limit the write failed, the mirror reconnected from the same position, and the same
    // batch failed again for ever.
    let setup = setup().await;
    for i in 0..300u32 {
        setup.source.push_at(
            1,
            &format!("big{i}"),
            &[blob((i % 200) as u8, 100)],
            300_000,
        );
    }
    start_mirror(&setup);
    wait_applied(&setup.sink, 300).await;
    setup.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_whose_last_entry_is_not_in_the_primary_history_resyncs_from_a_snapshot() {
    // Audit D5: a mirror that re-points to a new primary keeps its position; the primary
    // checked nothing, so the mirror kept the old primary's divergent entries and skipped the
    // new primary's entries at the same sequence numbers.
    let setup = setup().await;
    // The mirror applied entries 1-3 of epoch 1 from a former primary...
    for seq in 1..=3u64 {
        setup.sink.applied.lock().push(Entry {
            epoch: 1,
            seq,
            at_ms: seq as i64,
            command: format!("old{seq}").into_bytes(),
            chunks: Vec::new(),
        });
    }
    // ...while this primary's history forked after entry 1: its 2-4 are epoch 2.
    setup.source.push_at(1, "old1", &[], 0);
    for seq in 2..=4u64 {
        setup.source.push_at(2, &format!("new{seq}"), &[], 0);
    }
    start_mirror(&setup);
    wait_for(|| *setup.sink.snapshots_begun.lock() > 0).await;
    wait_applied(&setup.sink, 4).await;
    let state = setup.sink.state.lock();
    assert!(
        state.contains_key(b"new3".as_slice()),
        "the primary's entry 3 is there"
    );
    assert!(
        !state.contains_key(b"old3".as_slice()),
        "the divergent entry 3 is gone"
    );
    drop(state);
    setup.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_under_a_backlog_counts_what_the_primary_holds_not_what_arrived() {
    // Audit P9: the feed sent the primary's head only in heartbeats, which it sends when the
    // mirror has caught up; under a backlog the mirror's idea of the head was the last entry
    // it had received, so `lag_entries` showed about one batch while it was thousands behind.
    let setup = setup().await;
    for i in 0..10u32 {
        setup.source.push_at(1, &format!("k{i}"), &[], 0);
    }
    start_mirror(&setup);
    wait_applied(&setup.sink, 10).await;
    // The primary takes 3000 writes while the mirror applies two batches (256 entries each)
    // and then cannot apply the next.
    let gate = Arc::new(tokio::sync::Semaphore::new(2));
    *setup.sink.apply_gate.lock() = Some(gate.clone());
    setup.source.push_many("burst", 3000);
    wait_applied(&setup.sink, 10 + 2 * 256).await;
    // Held there, with a third batch received: the lag counts the primary's 3010 entries, not
    // the 778 that have arrived (which would show about one batch).
    wait_for(|| setup.lag.report().lag_entries + setup.sink.applied().seq >= 3000).await;
    assert_eq!(setup.sink.applied().seq, 10 + 2 * 256);
    gate.add_permits(1 << 20);
    wait_applied(&setup.sink, 3010).await;
    wait_for(|| setup.lag.report().lag_entries == 0).await;
    setup.cancel.cancel();
}
