//! Wiring a node together: storage, Raft, the region services, garbage collection, resync, and
//! the gRPC and HTTP servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arca_proto::v1::chunk_service_server::ChunkServiceServer;
use arca_proto::v1::cluster_service_server::ClusterServiceServer;
use arca_raft::{NodeInfo, RaftGroup};
use arca_replication::{Mirror, MirrorOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod http;
mod identity;
mod join;
mod node_tls;

use identity::{adopt_cluster_id, check_identity};
use join::{join_region, settle_cluster_id};
use node_tls::node_tls;

use crate::admin::ClusterGrpcService;
use crate::api::{self, AppState};
use crate::config::NodeConfig;
use crate::geo::sink::NodeSink;
use crate::geo::source::NodeSource;
use crate::geo::Geo;
use crate::metadata::catalog::Catalog;
use crate::metadata::state_machine::{
    referenced_channel, AppliedPosition, MetadataStateMachine, ReferencedChunks, ReferencedReceiver,
};
use crate::region::chunk_service::ChunkGrpcService;
use crate::region::peers::{Peers, MAX_MESSAGE_BYTES};
use crate::region::resync::Resync;
use crate::region::Region;
use crate::service::ArtifactService;
use crate::storage::chunk_store::ChunkStore;
use crate::storage::gc::Collector;

/// A node that is up: its bound addresses and the handles to stop it.
pub struct RunningNode {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The replication (QUIC) endpoint's address, when replication is configured.
    pub replication_addr: Option<SocketAddr>,
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
        self.service.region.raft.shutdown().await;
    }

    /// Resolves when the node stops on its own (a server failed).
    pub async fn stopped(&self) {
        self.cancel.cancelled().await
    }
}

/// Starts a node: opens its data directory, starts Raft (initializing a new single-node region
/// on first start unless told to join one), binds the HTTP and gRPC listeners and serves until
/// shut down.
pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    let identity = check_identity(&config.data_dir, config.node_id, &config.region)?;
    let cluster_id = arca_raft::ClusterId::default();
    if let Some(id) = &identity.cluster_id {
        cluster_id.set(id.clone());
    }
    let node_tls = node_tls(&config)?;
    let db = crate::db::open_db(&config.data_dir.join("db"))?;
    let catalog = Catalog::new(db.clone());
    let formats = crate::formats::set();
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
    let endpoint = match (
        config.replication.tls_files()?,
        &config.replication.listen_addr,
    ) {
        (Some(files), Some(listen)) => {
            let addr = tokio::net::lookup_host(listen)
                .await
                .with_context(|| format!("resolve replication.listen_addr {listen}"))?
                .next()
                .with_context(|| format!("replication.listen_addr {listen} resolves to nothing"))?;
            Some(
                arca_replication::endpoint(addr, &files)
                    .context("open the replication endpoint")?,
            )
        }
        _ => None,
    };
    let replication_socket = match &endpoint {
        Some(endpoint) => Some(endpoint.local_addr()?),
        None => None,
    };
    let replication_addr = match (&config.replication.advertise_addr, &endpoint) {
        (Some(advertised), _) => advertised.clone(),
        (None, Some(endpoint)) => endpoint.local_addr()?.to_string(),
        (None, None) => String::new(),
    };
    let self_info = NodeInfo {
        replication_addr: replication_addr.clone(),
        grpc_addr: config
            .advertise_grpc_addr
            .clone()
            .unwrap_or_else(|| grpc_addr.to_string()),
        http_addr: config
            .advertise_http_addr
            .clone()
            .unwrap_or_else(|| http_addr.to_string()),
    };

    let (freed_tx, freed_rx) = mpsc::unbounded_channel();
    let (referenced_tx, referenced_rx, unsettled) = referenced_channel();
    let (applied_tx, applied_rx) = watch::channel(AppliedPosition::default());
    let handler = MetadataStateMachine::new(
        catalog.clone(),
        formats.clone(),
        freed_tx,
        referenced_tx,
        applied_tx,
    );
    let raft = RaftGroup::start(
        &config.raft,
        &config.region,
        config.node_id,
        db.clone(),
        handler,
        config.data_dir.join("snapshots"),
        arca_raft::Peering {
            cluster_id: cluster_id.clone(),
            transport: node_tls.transport.clone(),
        },
    )
    .await
    .context("start raft")?;
    // Where this node stands before its gRPC server serves anything: an empty data directory
    // becomes a new region only when told to, joins when told to, and otherwise serves nothing
    // (a node whose disk was replaced must not become a second region of the same name, nor
    // vote with a forgotten log).
    let initialized = raft
        .raft()
        .is_initialized()
        .await
        .map_err(|e| anyhow::anyhow!("raft stopped: {e}"))?;
    let create_region = !initialized && config.may_create_region();
    if !initialized && !create_region {
        // A node about to join serves nothing either until it checked that its id is not a
        // member already (see `join_region`).
        cluster_id.set_standing(arca_raft::Standing::Blank);
        if config.join.is_none() {
            tracing::error!(
                data_dir = %config.data_dir.display(),
                region = %config.region,
                "this node holds no region data and was not told to create a region (--init-region) or to join one (--join): it serves nothing until restarted with one of them"
            );
        }
    }
    let peers = Peers::new(config.node_id, raft.clone(), node_tls.transport.clone());
    let resync = Resync::new(
        db.clone(),
        chunks.clone(),
        catalog.clone(),
        peers.clone(),
        unsettled,
    )?;
    // Until start-up reconciliation has run, the queue may miss chunks: not ready.
    resync.begin_unsettled();
    let region = Arc::new(Region::new(
        raft.clone(),
        self_info.clone(),
        peers,
        chunks.clone(),
        resync.clone(),
        config.cluster.clone(),
        Duration::from_millis(config.raft.write_timeout_ms),
        formats.clone(),
    ));

    let (geo, peer_rx) = Geo::new(
        region.clone(),
        catalog.clone(),
        formats.clone(),
        chunks.clone(),
        config.replication.clone(),
        endpoint.clone(),
    );

    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    // Every background task runs in a span naming it, the region and the node.
    let node_span = tracing::info_span!("node", region = %config.region, node = config.node_id);

    // Credentials and the audit log come first: the gRPC port admits nothing without them.
    let (audit_sink, audit_queue) =
        crate::auth::audit::AuditSink::new(config.region.clone(), config.node_id);
    let auth = crate::auth::Auth::new(catalog.clone(), config.auth.clone(), audit_sink);
    let guard = crate::auth::grpc::GrpcGuard::new(
        auth.clone(),
        config.region.clone(),
        node_tls.server.is_some(),
    );

    let grpc_cancel = cancel.clone();
    let raft_service = raft.grpc_service();
    let cluster_service = ClusterServiceServer::new(ClusterGrpcService::new(
        region.clone(),
        geo.clone(),
        auth.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let chunk_service = ChunkServiceServer::new(ChunkGrpcService::new(chunks.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Cluster and chunk RPCs from another cluster are refused, like Raft's.
    let cluster_service = {
        let id = cluster_id.clone();
        tonic::service::interceptor::InterceptedService::new(cluster_service, move |request| {
            crate::region::peers::check_cluster(&id, &request).map(|()| request)
        })
    };
    let chunk_service = {
        let id = cluster_id.clone();
        tonic::service::interceptor::InterceptedService::new(chunk_service, move |request| {
            crate::region::peers::check_cluster(&id, &request).map(|()| request)
        })
    };
    let grpc_tls = node_tls.server.clone();
    tasks.push(spawn_named("grpc-server", &node_span, async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = grpc_tls {
            builder = match builder.tls_config(tls) {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::error!(error = %e, "gRPC TLS configuration refused");
                    grpc_cancel.cancel();
                    return;
                }
            };
        }
        let served = builder
            .layer(crate::auth::grpc::GuardLayer(guard))
            .add_service(raft_service)
            .add_service(cluster_service)
            .add_service(chunk_service)
            .serve_with_incoming_shutdown(incoming, grpc_cancel.clone().cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
            grpc_cancel.cancel();
        }
    }));

    let mut initialized_now = false;
    if create_region {
        let mut members = BTreeMap::new();
        members.insert(config.node_id, self_info.clone());
        if raft
            .initialize(members)
            .await
            .context("initialize raft group")?
        {
            initialized_now = true;
            let id = uuid::Uuid::new_v4().to_string();
            adopt_cluster_id(&config.data_dir, &cluster_id, &id)
                .context("record the new region's cluster id")?;
            tracing::info!(node_id = config.node_id, region = %config.region, cluster_id = %id, "initialized a new single-node region");
        }
    }
    // Right after initializing, the Raft metrics may not show the new membership yet: a region
    // this node just created has it as its sole voter whatever the metrics say.
    let sole_voter = initialized_now
        || (initialized && {
            let membership = raft.membership();
            membership.voters.len() == 1 && membership.voters.contains(&config.node_id)
        });
    if sole_voter {
        // A one-node region elects itself at once; wait so the first request can write.
        raft.wait_for_leader(Duration::from_secs(30))
            .await
            .context("wait for a raft leader")?;
        // A new region configured as a mirror must not take a single write as a primary, and a
        // former primary that returns must learn it was replaced before it takes any.
        crate::geo::fencing::adopt_configured_primary(&geo).await;
        crate::geo::fencing::probe_peers(&geo).await;
    }

    tasks.push(spawn_named(
        "settle",
        &node_span,
        settle(
            region.clone(),
            collector.clone(),
            config.join.clone().filter(|_| !initialized),
            Duration::from_secs(config.gc.orphan_grace_secs),
            config.data_dir.clone(),
            cancel.clone(),
        ),
    ));
    tasks.push(spawn_named(
        "gc",
        &node_span,
        collector.clone().run(
            freed_rx,
            Duration::from_secs(config.gc.sweep_interval_secs),
            Duration::from_secs(config.gc.orphan_grace_secs),
            cancel.clone(),
        ),
    ));
    tasks.push(spawn_named(
        "forward-referenced",
        &node_span,
        forward_referenced(resync.clone(), referenced_rx, cancel.clone()),
    ));
    tasks.push(spawn_named(
        "resync",
        &node_span,
        resync.clone().run(cancel.clone()),
    ));
    tasks.push(spawn_named(
        "reclaim",
        &node_span,
        crate::geo::reclaim::run(geo.clone(), config.gc.clone(), cancel.clone()),
    ));
    tasks.push(spawn_named(
        "forward-head",
        &node_span,
        forward_head(geo.clone(), applied_rx.clone(), cancel.clone()),
    ));
    if let Some(endpoint) = endpoint {
        tracing::info!(addr = %replication_addr, "replication endpoint up (QUIC, mutual TLS)");
        tasks.push(spawn_named(
            "replication-source",
            &node_span,
            arca_replication::server::serve(
                endpoint.clone(),
                Arc::new(NodeSource(geo.clone())),
                cancel.clone(),
            ),
        ));
        let options = MirrorOptions {
            parallel_streams: config.replication.parallel_streams,
            ..MirrorOptions::default()
        };
        let mirror = Mirror::new(
            Arc::new(NodeSink::new(geo.clone())),
            endpoint,
            options,
            geo.lag.clone(),
        );
        tasks.push(spawn_named(
            "mirror",
            &node_span,
            mirror.run(cancel.clone()),
        ));
        tasks.push(spawn_named(
            "fencing",
            &node_span,
            crate::geo::fencing::run(geo.clone(), peer_rx, cancel.clone()),
        ));
    }

    let config = Arc::new(config);
    let service = Arc::new(ArtifactService {
        catalog,
        chunks,
        collector,
        region,
        geo,
        remotes: Arc::new(crate::remote::Remotes::open(
            config.data_dir.join("remote-spool"),
        )?),
        config,
        formats,
    });
    tasks.push(spawn_named(
        "audit",
        &node_span,
        crate::auth::audit::run(service.clone(), auth.clone(), audit_queue, cancel.clone()),
    ));
    if sole_voter {
        // The region's only voter creates the first account before it serves a request, so
        // the password file is there when `start` returns.
        if let Err(e) = crate::auth::bootstrap::bootstrap_once(&service, &auth).await {
            tracing::warn!(error = %e, "could not create the first account yet; retrying in the background");
        }
    }
    tasks.push(spawn_named(
        "bootstrap",
        &node_span,
        crate::auth::bootstrap::run(service.clone(), auth.clone(), cancel.clone()),
    ));
    // Each format opens what it keeps besides the state machine and builds its routes.
    let metrics = crate::metrics::install();
    let registered = crate::formats::registered();
    let context = crate::formats::FormatContext {
        service: service.clone(),
        auth: auth.clone(),
        cancel: cancel.clone(),
        span: node_span.clone(),
    };
    let mut format_routes = Vec::new();
    for format in &registered {
        format.describe_metrics();
        let started = format
            .start(&context)
            .with_context(|| format!("start the {} format", format.name()))?;
        tasks.extend(started.tasks);
        format_routes.push(started.router);
    }
    let state = AppState {
        service: service.clone(),
        formats: registered.into(),
        metrics,
        uploads: crate::api::limits::UploadLimiter::new(
            &service.config.limits,
            service.config.data_dir.clone(),
        ),
        auth,
    };
    let app = api::router(state, format_routes);
    let http_cancel = cancel.clone();
    let tls = http::server_config(&service.config.tls)?;
    if tls.is_some() {
        tracing::info!(addr = %http_addr, "HTTPS on (HSTS)");
    }
    tasks.push(spawn_named("http-server", &node_span, async move {
        let served = http::serve(http_listener, app, tls, http_cancel.clone()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
            http_cancel.cancel();
        }
    }));

    Ok(RunningNode {
        http_addr,
        grpc_addr,
        replication_addr: replication_socket,
        service,
        applied: applied_rx,
        cancel,
        tasks,
    })
}

/// Start-up work that needs the region: join it if asked to, then remove chunks orphaned by
/// uploads killed mid-way, then queue every referenced chunk this node lacks.
async fn settle(
    region: Arc<Region>,
    collector: Collector,
    join: Option<String>,
    grace: Duration,
    data_dir: std::path::PathBuf,
    cancel: CancellationToken,
) {
    if join.is_none() && region.raft.cluster_id().standing() == arca_raft::Standing::Blank {
        return;
    }
    if let Some(join) = join {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = join_region(&region, &join, &data_dir) => {}
        }
    }
    loop {
        let leader = tokio::select! {
            _ = cancel.cancelled() => return,
            leader = region.raft.wait_for_leader(Duration::from_secs(60)) => leader,
        };
        match leader {
            Ok(_) => break,
            Err(arca_raft::RaftGroupError::Timeout(..)) => {
                tracing::warn!("still no raft leader after 60s; start-up housekeeping waits");
            }
            Err(e) => {
                tracing::warn!(error = %e, "raft stopped; start-up housekeeping skipped");
                return;
            }
        }
    }
    // Apply every entry the region committed before this start first: an entry fsynced in the
    // log but not yet applied (or whose applied state a power cut lost) references chunks the
    // sweep below would otherwise take for orphans.
    loop {
        let caught_up = async {
            let index = region.read_index().await?;
            region
                .raft
                .wait_applied(index, Duration::from_secs(30))
                .await
                .map_err(crate::error::Error::from)
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = caught_up => outcome,
        };
        match outcome {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "start-up housekeeping waits to catch up with the region");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    // With no other voter, nobody can be about to reference an unreferenced chunk: sweep them
    // all. Otherwise peers may be mid-write with chunks they pushed here: keep the grace period.
    let membership = region.raft.membership();
    let sole_voter = membership.voters.len() == 1 && membership.voters.contains(&region.node_id);
    let startup_grace = if sole_voter { Duration::ZERO } else { grace };
    let resync = region.resync.clone();
    let sweeper = collector.clone();
    let housekeeping =
        tokio::task::spawn_blocking(move || -> crate::error::Result<(usize, usize)> {
            Ok((sweeper.sweep(startup_grace)?, resync.reconcile()?))
        })
        .await;
    region.resync.end_unsettled();
    match housekeeping {
        Ok(Ok((swept, queued))) => tracing::info!(swept, queued, "start-up housekeeping done"),
        Ok(Err(e)) => tracing::warn!(error = %e, "start-up housekeeping failed"),
        Err(e) => tracing::error!(error = %e, "start-up housekeeping panicked"),
    }
    settle_cluster_id(&region, &data_dir, &cancel).await;
    collector
        .check_unindexed(
            data_dir.join(crate::storage::gc::UNINDEXED_CHECK_FILE),
            cancel,
        )
        .await;
}

/// Tells replication feeds when the change log moves.
async fn forward_head(
    geo: Arc<Geo>,
    mut applied: watch::Receiver<AppliedPosition>,
    cancel: CancellationToken,
) {
    loop {
        let seq = applied.borrow_and_update().seq;
        geo.head_tx.send_if_modified(|current| {
            let moved = *current != seq;
            *current = seq;
            moved
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}

/// Moves chunk references announced by the state machine into the resync queue.
async fn forward_referenced(
    resync: Arc<Resync>,
    mut rx: ReferencedReceiver,
    cancel: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => return,
            message = rx.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let worker = resync.clone();
        let queued = tokio::task::spawn_blocking(move || match message {
            ReferencedChunks::Chunks(ids) => worker.enqueue_missing(&ids),
            ReferencedChunks::All => worker.reconcile(),
        })
        .await;
        rx.handled();
        match queued {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not queue missing chunks; start-up reconciliation will")
            }
            Err(e) => tracing::error!(error = %e, "resync queueing panicked"),
        }
    }
}

/// Spawns a background task inside a span naming it (`task`) under the node's span (region
/// and node), so every line it logs says where it comes from.
pub(crate) fn spawn_named<F>(
    task: &'static str,
    node: &tracing::Span,
    future: F,
) -> JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(future.instrument(tracing::info_span!(parent: node, "task", task)))
}
