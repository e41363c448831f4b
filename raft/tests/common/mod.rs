//! Helpers for tests that run real Raft groups over tonic on loopback: a tiny key-value
//! application, nodes with their gRPC servers, a server that counts the connections it
//! accepts, and a TCP proxy that slows a link down.

#![allow(dead_code)] // Each test file uses a different part.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::raft_service_server::RaftServiceServer;
use arca_raft::network::RaftGrpcService;
use arca_raft::storage::column_families;
use arca_raft::types::LogId;
use arca_raft::{ApplyBatch, ApplyHandler, ClusterId, NodeId, NodeInfo, RaftConfig, RaftGroup};
use rocksdb::{Options, DB};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A tiny key-value application: a command `key=value` sets a key and answers the old value.
pub struct KvApp;

impl ApplyHandler for KvApp {
    fn apply(
        &self,
        batch: &mut ApplyBatch<'_>,
        _log_id: &LogId,
        command: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let text = std::str::from_utf8(command)?;
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad command"))?;
        let key = format!("kv/{key}");
        let old = batch.get(key.as_bytes())?.unwrap_or_default();
        batch.put(key.into_bytes(), value.as_bytes().to_vec())?;
        Ok(old)
    }
}

pub fn open_db(path: &Path) -> Arc<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    Arc::new(DB::open_cf_descriptors(&options, path, column_families()).expect("open rocksdb"))
}

pub fn node_info(addr: SocketAddr) -> NodeInfo {
    NodeInfo {
        grpc_addr: addr.to_string(),
        http_addr: "127.0.0.1:1".into(),
        replication_addr: String::new(),
    }
}

/// A running tonic server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `service` on `listener`, counting accepted connections.
pub fn serve(service: RaftServiceServer<RaftGrpcService>, listener: TcpListener) -> Server {
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let incoming = futures::stream::unfold(listener, move |listener| {
        let counter = counter.clone();
        async move {
            let next = listener.accept().await.map(|(stream, _)| {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                stream
            });
            Some((next, listener))
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            eprintln!("test server on {addr} failed: {e}");
        }
    });
    Server {
        addr,
        accepted,
        stop: Some(stop),
    }
}

/// One node: its Raft group, its database directory and its gRPC server.
pub struct Node {
    pub id: NodeId,
    pub group: RaftGroup,
    pub server: Server,
    pub dir: TempDir,
}

impl Node {
    /// Starts node `id` serving on `listener` (bound beforehand, so that its address can be
    /// known, or proxied, before it starts).
    pub async fn start(id: NodeId, config: &RaftConfig, listener: TcpListener) -> Node {
        Self::start_in_cluster(id, config, listener, ClusterId::default()).await
    }

    /// Like [`Node::start`], with the cluster id the node checks and sends on Raft RPCs.
    pub async fn start_in_cluster(
        id: NodeId,
        config: &RaftConfig,
        listener: TcpListener,
        cluster_id: ClusterId,
    ) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir.path().join("db"));
        let group = RaftGroup::start(
            config,
            "test",
            id,
            db,
            Arc::new(KvApp),
            dir.path().join("snapshots"),
            arca_raft::Peering {
                cluster_id,
                transport: arca_raft::PeerTransport::plaintext(),
            },
        )
        .await
        .expect("start raft");
        let server = serve(group.grpc_service(), listener);
        Node {
            id,
            group,
            server,
            dir,
        }
    }

    pub fn info(&self) -> NodeInfo {
        node_info(self.server.addr)
    }

    /// Initializes a one-voter group of this node and waits until it leads.
    pub async fn initialize_alone(&self) {
        let mut members = BTreeMap::new();
        members.insert(self.id, self.info());
        self.group.initialize(members).await.expect("initialize");
        self.group
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
    }
}

pub async fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// A TCP proxy to `upstream` whose links deliver each read `delay` after it was made and at
/// most `bytes_per_sec`, in both directions: a slow WAN link. Stops when the test's runtime
/// does.
pub async fn slow_proxy(upstream: SocketAddr, delay: Duration, bytes_per_sec: u64) -> SocketAddr {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(slow_pipe(client_read, server_write, delay, bytes_per_sec));
                tokio::spawn(slow_pipe(server_read, client_write, delay, bytes_per_sec));
            });
        }
    });
    addr
}

async fn slow_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    bytes_per_sec: u64,
) {
    // A small queue: a full link pushes back on the sender, as a real one does.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(8);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let mut link_free_at = Instant::now();
    while let Some((due, data)) = rx.recv().await {
        tokio::time::sleep_until(due.max(link_free_at)).await;
        if to.write_all(&data).await.is_err() {
            return;
        }
        let transmit = Duration::from_secs_f64(data.len() as f64 / bytes_per_sec as f64);
        link_free_at = Instant::now().max(link_free_at) + transmit;
    }
    let _ = to.shutdown().await;
}
