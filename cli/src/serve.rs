//! `arca serve`: run a node until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use arca_node::NodeConfig;
use clap::Args;
use tracing_subscriber::EnvFilter;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (see docs/operator-guide.md). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./arca-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:7070].
    #[arg(long)]
    http: Option<String>,
    /// gRPC (intra-region) listen address [default: 127.0.0.1:7071].
    #[arg(long)]
    grpc: Option<String>,
    /// This node's id in its region [default: 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// Region name [default: local].
    #[arg(long)]
    region: Option<String>,
    /// gRPC address of any member of an existing region to join (first start only).
    #[arg(long)]
    join: Option<String>,
    /// Create a new region in an empty data directory (once, on the region's first node; the
    /// default region `local` needs no flag).
    #[arg(long, conflicts_with = "join")]
    init_region: bool,
    /// HTTP address to advertise to the region, if not the one bound.
    #[arg(long)]
    advertise_http: Option<String>,
    /// gRPC address to advertise to the region, if not the one bound.
    #[arg(long)]
    advertise_grpc: Option<String>,
    /// UDP address of the replication endpoint (QUIC between regions).
    #[arg(long)]
    replication: Option<String>,
    /// Cluster CA certificate (PEM), for replication (and gRPC with --grpc-tls).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM): `arca certs issue --region`.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This node's key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Require mutual TLS on the gRPC port with the node certificate (--ca-cert, --cert,
    /// --key): Raft and chunk RPCs only from nodes of this region, admin RPCs from operators.
    #[arg(long)]
    grpc_tls: bool,
    /// Replication address of a node of the primary region (repeatable): a new region started
    /// with it becomes a read-only mirror of that primary.
    #[arg(long = "primary")]
    primary: Vec<String>,
    /// Replication address of another region's node to probe for epoch changes (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Serve artifacts not replicated yet by reading through to the primary (mirrors).
    #[arg(long)]
    read_through: bool,
    /// Certificate (PEM) of the HTTP API: serve HTTPS, with HSTS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the HTTP API's certificate.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen on non-loopback addresses without TLS (plaintext credentials on the network).
    #[arg(long)]
    insecure: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "ARCA_LOG_JSON")]
    log_json: bool,
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("ARCA_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let mut config =
        NodeConfig::load(args.config.as_deref(), std::env::vars()).context("load configuration")?;
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(http) = args.http {
        config.http_addr = http;
    }
    if let Some(grpc) = args.grpc {
        config.grpc_addr = grpc;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let Some(region) = args.region {
        config.region = region;
    }
    if args.join.is_some() {
        config.join = args.join;
    }
    if args.init_region {
        config.init_region = true;
    }
    if args.advertise_http.is_some() {
        config.advertise_http_addr = args.advertise_http;
    }
    if args.advertise_grpc.is_some() {
        config.advertise_grpc_addr = args.advertise_grpc;
    }
    let replication = &mut config.replication;
    if args.replication.is_some() {
        replication.listen_addr = args.replication;
    }
    if args.ca_cert.is_some() {
        replication.ca_cert = args.ca_cert;
    }
    if args.cert.is_some() {
        replication.cert = args.cert;
    }
    if args.key.is_some() {
        replication.key = args.key;
    }
    if !args.primary.is_empty() {
        replication.primary = args.primary;
    }
    if !args.peers.is_empty() {
        replication.peers = args.peers;
    }
    if args.read_through {
        replication.read_through = true;
    }
    if args.grpc_tls {
        config.cluster.ca_cert = config.replication.ca_cert.clone();
        config.cluster.cert = config.replication.cert.clone();
        config.cluster.key = config.replication.key.clone();
        anyhow::ensure!(
            config.cluster.tls_files()?.is_some(),
            "--grpc-tls needs --ca-cert, --cert and --key"
        );
    }
    if args.tls_cert.is_some() {
        config.tls.cert = args.tls_cert;
        config.tls.key = args.tls_key;
    }
    if args.insecure {
        config.insecure = true;
    }
    let node = arca_node::start(config).await?;
    // One machine-readable line on stdout, for scripts and test harnesses.
    match node.replication_addr {
        Some(replication) => println!(
            "arca listening http={} grpc={} replication={replication}",
            node.http_addr, node.grpc_addr
        ),
        None => println!(
            "arca listening http={} grpc={}",
            node.http_addr, node.grpc_addr
        ),
    }
    tracing::info!(http = %node.http_addr, grpc = %node.grpc_addr, "serving");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = node.stopped() => tracing::error!("a server stopped unexpectedly; shutting down"),
    }
    node.shutdown().await;
    Ok(())
}
