//! Wiring a node together: storage, Raft, garbage collection, the gRPC and HTTP servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arca_raft::{NodeInfo, RaftGroup};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::catalog::Catalog;
use crate::chunk_store::ChunkStore;
use crate::config::NodeConfig;
use crate::gc::Collector;
use crate::oci::uploads::UploadStore;
use crate::oci::Registry;
use crate::service::ArtifactService;
use crate::state_machine::{AppliedPosition, MetadataStateMachine};

/// A node that is up: its bound addresses and the handles to stop it.
pub struct RunningNode {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub service: Arc<ArtifactService>,
    pub applied: watch::Receiver<AppliedPosition>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Stops serving, stops Raft and waits for every task, so the database is closed when this
    /// returns (once the caller drops its own handles).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.service.raft.shutdown().await;
    }

    /// Resolves when the node stops on its own (a server failed).
    pub async fn stopped(&self) {
        self.cancel.cancelled().await
    }
}

/// Starts a node: opens its data directory, starts Raft (initializing a new single-node group
/// on first start), binds the HTTP and gRPC listeners and serves until shut down.
pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    let db = crate::storage::open_db(&config.data_dir.join("db"))?;
    let catalog = Catalog::new(db.clone());
    let chunks = ChunkStore::new(db.clone())?;
    let collector = Collector::new(chunks.clone(), catalog.clone());

    let http_listener = TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("bind HTTP listener on {}", config.http_addr))?;
    let grpc_listener = TcpListener::bind(&config.grpc_addr)
        .await
        .with_context(|| format!("bind gRPC listener on {}", config.grpc_addr))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let self_info = NodeInfo {
        grpc_addr: grpc_addr.to_string(),
        http_addr: http_addr.to_string(),
    };

    let (freed_tx, freed_rx) = mpsc::unbounded_channel();
    let (applied_tx, applied_rx) = watch::channel(AppliedPosition::default());
    let handler = MetadataStateMachine::new(catalog.clone(), freed_tx, applied_tx);
    let raft = RaftGroup::start(
        &config.raft,
        &config.region,
        config.node_id,
        db.clone(),
        handler,
        config.data_dir.join("snapshots"),
    )
    .await
    .context("start raft")?;

    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();

    let grpc_service = raft.grpc_service();
    let grpc_cancel = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let served = tonic::transport::Server::builder()
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(incoming, grpc_cancel.clone().cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
            grpc_cancel.cancel();
        }
    }));

    let mut members = BTreeMap::new();
    members.insert(config.node_id, self_info.clone());
    if raft
        .initialize(members)
        .await
        .context("initialize raft group")?
    {
        tracing::info!(node_id = config.node_id, region = %config.region, "initialized a new single-node region");
    }
    let leader = raft
        .wait_for_leader(Duration::from_secs(30))
        .await
        .context("wait for a raft leader")?;
    tracing::info!(leader, "raft leader known");

    // Uploads killed before their command applied leave unreferenced chunks. With no other
    // voter, nobody else can be about to reference them: sweep them all now.
    let sole_voter = {
        let metrics = raft.raft().metrics().borrow().clone();
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        voters == vec![config.node_id]
    };
    let grace = Duration::from_secs(config.gc.orphan_grace_secs);
    let startup_grace = if sole_voter { Duration::ZERO } else { grace };
    let sweeper = collector.clone();
    let swept = tokio::task::spawn_blocking(move || sweeper.sweep(startup_grace)).await??;
    if swept > 0 {
        tracing::info!(swept, "removed orphaned chunks left by interrupted uploads");
    }
    tasks.push(tokio::spawn(collector.clone().run(
        freed_rx,
        Duration::from_secs(config.gc.sweep_interval_secs),
        grace,
        cancel.clone(),
    )));

    // Upload sessions whose acknowledged bytes survived are resumed; the rest are dropped.
    let uploads = UploadStore::open(
        config.data_dir.join("uploads"),
        Duration::from_secs(config.oci.upload_expiry_secs),
    )
    .context("open blob upload sessions")?;
    tasks.push(tokio::spawn(uploads.clone().run_expiry(
        Duration::from_secs(config.oci.upload_sweep_interval_secs),
        cancel.clone(),
    )));

    let config = Arc::new(config);
    let service = Arc::new(ArtifactService {
        catalog,
        chunks,
        collector,
        raft,
        config,
    });
    let state = AppState {
        service: service.clone(),
        registry: Arc::new(Registry::new(service.clone(), uploads)),
        metrics: crate::metrics::install(),
    };
    let app = api::router(state);
    let http_cancel = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(http_listener, app)
            .with_graceful_shutdown(http_cancel.clone().cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
            http_cancel.cancel();
        }
    }));

    Ok(RunningNode {
        http_addr,
        grpc_addr,
        service,
        applied: applied_rx,
        cancel,
        tasks,
    })
}
