//! The node's configuration: defaults, then a TOML file, then `ARCA_*` environment variables,
//! then command-line flags (applied by the CLI).
//!
//! Environment variables name a key by its path in upper case, with `__` between sections:
//! `ARCA_DATA_DIR`, `ARCA_HTTP_ADDR`, `ARCA_RAFT__HEARTBEAT_INTERVAL_MS`. Variables that name
//! no key (such as the client's `ARCA_SERVER`) are ignored.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use arca_raft::RaftConfig;
use serde::{Deserialize, Serialize};

use crate::storage::chunker::ChunkerConfig;

/// Everything a node needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory for the node's RocksDB and Raft snapshots. Created if missing.
    pub data_dir: PathBuf,
    /// This node's id inside its region (unique per region, never reused).
    pub node_id: u64,
    /// The name of the region this node belongs to.
    pub region: String,
    /// Address the HTTP API listens on (`host:port`; port 0 picks a free port).
    pub http_addr: String,
    /// Address the intra-region gRPC server (Raft, chunks, admin) listens on.
    pub grpc_addr: String,
    /// HTTP address other nodes and redirected clients use to reach this node, when it differs
    /// from `http_addr` (a wildcard bind, NAT). Defaults to the bound address.
    pub advertise_http_addr: Option<String>,
    /// gRPC address the region's other nodes use to reach this node. Defaults to the bound
    /// address.
    pub advertise_grpc_addr: Option<String>,
    /// gRPC address of any member of an existing region to join (a node with an empty data
    /// directory asks it to add this node under `node_id`, which must not be a voter's).
    pub join: Option<String>,
    /// Create a new region if the data directory is empty (pass it once, to the region's first
    /// node). Without it (or `join`), a node with an empty data directory serves nothing: a
    /// node whose disk was replaced must not quietly become a second region of the same name.
    /// The embedded single-node default (region `local`) creates its region without it.
    pub init_region: bool,
    /// Coordination inside the region.
    pub cluster: ClusterConfig,
    /// Replication between regions.
    pub replication: ReplicationConfig,
    /// Raft timing and log retention.
    pub raft: RaftConfig,
    /// Content-defined chunking bounds.
    pub chunking: ChunkerConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Garbage collection of unreferenced chunks.
    pub gc: GcConfig,
    /// The OCI registry (`/v2/`).
    pub oci: OciConfig,
    /// Authentication, tokens and the audit log.
    pub auth: AuthConfig,
    /// HTTPS for the HTTP API (`arca serve --tls-cert --tls-key`).
    pub tls: TlsConfig,
    /// Allow listening on a non-loopback address without TLS (`--insecure`): plaintext
    /// credentials on a network, and (for gRPC) no node identity. Off by default.
    pub insecure: bool,
    /// The base URL clients reach Arca by (`https://arca.example.com`), for the absolute URLs
    /// in answers (the registry's token realm, package indexes), when a proxy or load balancer
    /// fronts the nodes. Unset: the scheme this node serves and the request's `Host`.
    pub public_url: Option<String>,
    /// Take the client-facing scheme and host from `X-Forwarded-Proto` / `X-Forwarded-Host`
    /// (only behind a proxy that sets them: a client could otherwise choose the URLs Arca hands
    /// out). `public_url` wins when both are set.
    pub trust_forwarded_headers: bool,
    /// Settings of repository formats that keep them in a section of their own,
    /// `[formats.<name>]`, read by the format when the node starts
    /// ([`NodeConfig::format_settings`]); the registry's predate it and stay under `[oci]`.
    /// Only the file sets them (no `ARCA_*` variable names a key here).
    pub formats: std::collections::BTreeMap<String, toml::Table>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("arca-data"),
            node_id: 1,
            region: "local".into(),
            http_addr: "127.0.0.1:7070".into(),
            grpc_addr: "127.0.0.1:7071".into(),
            advertise_http_addr: None,
            advertise_grpc_addr: None,
            join: None,
            init_region: false,
            cluster: ClusterConfig::default(),
            replication: ReplicationConfig::default(),
            raft: RaftConfig::default(),
            chunking: ChunkerConfig::default(),
            limits: LimitsConfig::default(),
            gc: GcConfig::default(),
            oci: OciConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            insecure: false,
            public_url: None,
            trust_forwarded_headers: false,
            formats: std::collections::BTreeMap::new(),
        }
    }
}

/// Coordination inside the region: reads, chunk replication, readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long a read waits to confirm it sees every acknowledged write (a read-index round
    /// with the leader) before it serves this node's local state instead, in milliseconds.
    pub read_barrier_timeout_ms: u64,
    /// How long a node keeps chunks a peer asked about, so its write can rely on them, in
    /// seconds.
    pub chunk_lease_secs: u64,
    /// `/readyz` fails while this node has more unapplied log entries than this.
    pub ready_max_apply_lag: u64,
    /// `/readyz` fails while this node lacks more referenced chunks than this.
    pub ready_max_resync_backlog: u64,
    /// The cluster CA certificate (PEM): with `cert` and `key`, the gRPC port requires mutual
    /// TLS, and this node reaches its peers with its certificate.
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM): a node certificate of this region from the cluster CA
    /// (`arca certs issue --region`).
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key: Option<PathBuf>,
}

impl ClusterConfig {
    /// The gRPC port's TLS files: all three or none.
    pub fn tls_files(&self) -> anyhow::Result<Option<arca_replication::TlsFiles>> {
        match (&self.ca_cert, &self.cert, &self.key) {
            (None, None, None) => Ok(None),
            (Some(ca_cert), Some(cert), Some(key)) => Ok(Some(arca_replication::TlsFiles {
                ca_cert: ca_cert.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => bail!("cluster.ca_cert, cluster.cert and cluster.key go together"),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            read_barrier_timeout_ms: 1000,
            chunk_lease_secs: 600,
            ready_max_apply_lag: 64,
            ready_max_resync_backlog: 0,
            ca_cert: None,
            cert: None,
            key: None,
        }
    }
}

/// Replication between regions over QUIC with mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// UDP address of this node's replication endpoint; unset: no replication.
    pub listen_addr: Option<String>,
    /// Replication address other regions use to reach this node, if not the bound one.
    pub advertise_addr: Option<String>,
    /// The cluster CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the cluster CA.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key: Option<PathBuf>,
    /// Replication addresses of the primary region's nodes: a new region started with these
    /// becomes a mirror of that primary. Ignored once the region holds data (after a
    /// promotion, the region's own state decides its role).
    pub primary: Vec<String>,
    /// Replication addresses of other regions' nodes, probed so that a former primary learns
    /// it was replaced (and a mirror learns of a new primary).
    pub peers: Vec<String>,
    /// A mirror serves an artifact it has not received yet by fetching it from the primary.
    pub read_through: bool,
    /// Change-log entries the region keeps for mirrors; a mirror further behind catches up
    /// from a snapshot.
    pub retain_entries: u64,
    /// How long a push to a sync-replicated repository waits for a mirror, in milliseconds.
    pub sync_timeout_ms: u64,
    /// The mirror regions that must each hold a write to a sync-replicated repository before
    /// it is acknowledged. Empty: any one mirror (then only that mirror is safe to promote
    /// without losing acknowledged writes; name the mirrors you would promote here).
    pub sync_mirrors: Vec<String>,
    /// Concurrent chunk-fetch streams of a mirror.
    pub parallel_streams: usize,
    /// How often the region leader probes `peers`, in milliseconds.
    pub probe_interval_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            listen_addr: None,
            advertise_addr: None,
            ca_cert: None,
            cert: None,
            key: None,
            primary: Vec::new(),
            peers: Vec::new(),
            read_through: false,
            retain_entries: 100_000,
            sync_timeout_ms: 10_000,
            sync_mirrors: Vec::new(),
            parallel_streams: 8,
            probe_interval_ms: 1_000,
        }
    }
}

impl ReplicationConfig {
    /// The TLS files, all required once replication is on.
    pub fn tls_files(&self) -> anyhow::Result<Option<arca_replication::TlsFiles>> {
        if self.listen_addr.is_none() {
            return Ok(None);
        }
        match (&self.ca_cert, &self.cert, &self.key) {
            (Some(ca_cert), Some(cert), Some(key)) => Ok(Some(arca_replication::TlsFiles {
                ca_cert: ca_cert.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            _ => bail!(
                "replication.listen_addr needs replication.ca_cert, replication.cert and replication.key \
                 (create them with `arca certs init` and `arca certs issue`)"
            ),
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// Largest page a listing returns.
    pub max_list_page: usize,
    /// Uploads (file PUTs, OCI blob and manifest uploads) in progress on this node at once;
    /// more are refused with `503 TOO_MANY_UPLOADS` (OCI: `429 TOOMANYREQUESTS`).
    pub max_concurrent_uploads: usize,
    /// Uploads in progress from one client address at once.
    pub max_uploads_per_client: usize,
    /// An upload whose body sends nothing for this long is cut off, in seconds.
    pub body_idle_timeout_secs: u64,
    /// An upload slower than this on average after its first 30 s is cut off, in bytes per
    /// second (0: no minimum).
    pub min_upload_bytes_per_sec: u64,
    /// Uploads are refused with `507 INSUFFICIENT_STORAGE` while the data directory's
    /// filesystem has less free space than this, in bytes, so a full disk never stops Raft.
    pub min_free_disk_bytes: u64,
}

impl LimitsConfig {
    /// What ingest enforces on every upload body.
    pub fn ingest_limits(&self) -> crate::storage::ingest::IngestLimits {
        crate::storage::ingest::IngestLimits {
            max_bytes: self.max_upload_bytes,
            idle_timeout: std::time::Duration::from_secs(self.body_idle_timeout_secs),
            min_bytes_per_sec: self.min_upload_bytes_per_sec,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 64 << 30,
            max_list_page: 10_000,
            max_concurrent_uploads: 256,
            max_uploads_per_client: 64,
            body_idle_timeout_secs: 60,
            min_upload_bytes_per_sec: 1024,
            min_free_disk_bytes: 1 << 30,
        }
    }
}

/// The HTTP API's certificate and key (PEM): both set turns HTTPS (and HSTS) on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// Whether `addr` (`host:port`) names only loopback addresses.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost",
    }
}

/// Authentication, tokens and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Expiry of an access token created without one, in days.
    pub token_default_days: u64,
    /// Longest expiry an access token may be created with, in days.
    pub token_max_days: u64,
    /// Lifetime of a registry (`/v2/`) bearer token, in seconds (at least 60).
    pub registry_token_secs: u64,
    /// Lifetime of a CLI session (`arca login` with a password), in seconds.
    pub session_secs: u64,
    /// Lifetime of a registry refresh token, in days.
    pub refresh_token_days: u64,
    /// Failed logins allowed per principal and per source address in `failure_window_secs`
    /// before further attempts are refused with `429`.
    pub max_failures: u32,
    pub failure_window_secs: u64,
    /// Audit records older than this are dropped (the chain stays verifiable from the oldest
    /// kept record); 0 keeps every record.
    pub audit_retention_days: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_default_days: 30,
            token_max_days: 365,
            registry_token_secs: 300,
            session_secs: 12 * 3600,
            refresh_token_days: 30,
            max_failures: 10,
            failure_window_secs: 60,
            audit_retention_days: 0,
        }
    }
}

/// Garbage collection of chunks no artifact references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often to sweep for orphaned chunks, in seconds.
    pub sweep_interval_secs: u64,
    /// An unreferenced chunk younger than this is left alone (an upload may still be about to
    /// reference it), in seconds.
    pub orphan_grace_secs: u64,
    /// A chunk an overwrite or delete freed is kept at least this long (downloads of the old
    /// version finish, lagging readers find it), in seconds.
    pub freed_retention_secs: u64,
    /// ... and until every mirror this region knows applied the change that freed it, but no
    /// longer than this (a mirror gone for good catches up from a snapshot), in seconds.
    pub freed_max_retention_secs: u64,
    /// How often the region's leader reclaims freed chunks that are due, in seconds.
    pub release_interval_secs: u64,
    /// A new leader waits this long before its first reclaim, so that mirrors can reconnect
    /// and say how far they are, in seconds.
    pub release_start_delay_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            sweep_interval_secs: 600,
            orphan_grace_secs: 3600,
            freed_retention_secs: 600,
            freed_max_retention_secs: 86_400,
            release_interval_secs: 10,
            release_start_delay_secs: 60,
        }
    }
}

/// The OCI registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OciConfig {
    /// An upload session with no activity for this long is deleted with its spooled bytes, in
    /// seconds; the client then gets `BLOB_UPLOAD_UNKNOWN` and starts over.
    pub upload_expiry_secs: u64,
    /// How often to look for expired upload sessions, in seconds.
    pub upload_sweep_interval_secs: u64,
    /// Largest accepted manifest, in bytes (larger pushes get `413`). The spec asks registries
    /// to accept at least 4 MB.
    pub max_manifest_bytes: u64,
    /// Upload sessions open on this node at once (`429 TOOMANYREQUESTS` past it).
    pub max_upload_sessions: usize,
    /// Upload sessions open in one repository at once.
    pub max_upload_sessions_per_repo: usize,
    /// Bytes all upload sessions on this node may hold spooled at once (`413` for the PATCH
    /// that would go past it).
    pub max_spooled_bytes: u64,
}

impl Default for OciConfig {
    fn default() -> Self {
        Self {
            upload_expiry_secs: 6 * 3600,
            upload_sweep_interval_secs: 300,
            max_manifest_bytes: 4 << 20,
            max_upload_sessions: 1024,
            max_upload_sessions_per_repo: 256,
            max_spooled_bytes: 64 << 30,
        }
    }
}

impl NodeConfig {
    /// The settings of format `format` from its `[formats.<format>]` section, or their
    /// defaults when there is none; a section the format cannot read fails the start.
    pub fn format_settings<T: serde::de::DeserializeOwned + Default>(
        &self,
        format: &str,
    ) -> anyhow::Result<T> {
        match self.formats.get(format) {
            None => Ok(T::default()),
            Some(table) => toml::Value::Table(table.clone())
                .try_into()
                .with_context(|| format!("invalid [formats.{format}] settings")),
        }
    }

    /// Whether an empty data directory may become a new region.
    pub fn may_create_region(&self) -> bool {
        self.join.is_none() && (self.init_region || self.region == "local")
    }

    /// Loads defaults, then `file` (if any), then `ARCA_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut tree =
            toml::Value::try_from(NodeConfig::default()).context("serialize default config")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read config file {}", path.display()))?;
            let file_tree: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parse config file {}", path.display()))?;
            merge(&mut tree, file_tree);
        }
        // JSON keeps `null` for unset optional keys, so every key can be named by a variable.
        let known =
            serde_json::to_value(NodeConfig::default()).context("serialize default config")?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("ARCA_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let Some(default) = lookup(&known, &path) else {
                continue;
            };
            set_path(&mut tree, &path, parse_env_value(&name, &value, default)?)?;
        }
        let config: NodeConfig = tree.try_into().context("invalid configuration")?;
        Ok(config)
    }

    /// Checks cross-field rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node_id == 0 {
            bail!("node_id must be > 0");
        }
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("region must be non-empty letters, digits, '-' or '_'");
        }
        self.raft.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.chunking.validate().map_err(|e| anyhow::anyhow!(e))?;
        if self.limits.max_upload_bytes == 0
            || self.limits.max_list_page == 0
            || self.limits.max_concurrent_uploads == 0
            || self.limits.max_uploads_per_client == 0
            || self.limits.body_idle_timeout_secs == 0
        {
            bail!("limits must be > 0");
        }
        if self.oci.max_upload_sessions == 0
            || self.oci.max_upload_sessions_per_repo == 0
            || self.oci.max_spooled_bytes == 0
        {
            bail!("oci upload session limits must be > 0");
        }
        if let Some(url) = &self.public_url {
            let parsed = url
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
                .filter(|u| u.host().is_some_and(|h| !h.is_empty()) && u.query().is_none());
            if parsed.is_none() || url.contains('#') {
                bail!("public_url {url:?} must be an http:// or https:// URL of a host, with no query");
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!("tls.cert and tls.key go together");
        }
        if !self.insecure {
            if !self.tls.enabled() && !is_loopback(&self.http_addr) {
                bail!(
                    "refusing to serve HTTP on {} without TLS: credentials would cross the network in \
                     plaintext; give --tls-cert and --tls-key, bind a loopback address, or pass \
                     --insecure",
                    self.http_addr
                );
            }
            if self.cluster.tls_files()?.is_none() && !is_loopback(&self.grpc_addr) {
                bail!(
                    "refusing to serve gRPC on {} without TLS: anyone reaching it could speak \
                     Raft; give the node certificate (cluster.ca_cert, cluster.cert, \
                     cluster.key, or --grpc-tls with --ca-cert --cert --key), bind a loopback \
                     address, or pass --insecure",
                    self.grpc_addr
                );
            }
        }
        let auth = &self.auth;
        if auth.token_default_days == 0
            || auth.token_max_days < auth.token_default_days
            || auth.registry_token_secs < 60
            || auth.session_secs == 0
            || auth.refresh_token_days == 0
            || auth.max_failures == 0
            || auth.failure_window_secs == 0
        {
            bail!(
                "auth: token days must be > 0 with token_max_days >= token_default_days, \
                 registry_token_secs >= 60, and the session, refresh and failure limits > 0"
            );
        }
        if self.cluster.read_barrier_timeout_ms == 0 || self.cluster.chunk_lease_secs == 0 {
            bail!("cluster timeouts must be > 0");
        }
        self.replication.tls_files()?;
        self.cluster.tls_files()?;
        if self.replication.listen_addr.is_none()
            && !(self.replication.primary.is_empty() && self.replication.peers.is_empty())
        {
            bail!("replication.primary and replication.peers need replication.listen_addr");
        }
        if self.replication.retain_entries == 0 || self.replication.parallel_streams == 0 {
            bail!("replication.retain_entries and replication.parallel_streams must be > 0");
        }
        if self.gc.sweep_interval_secs == 0 || self.gc.release_interval_secs == 0 {
            bail!("gc.sweep_interval_secs and gc.release_interval_secs must be > 0");
        }
        if self.gc.freed_max_retention_secs < self.gc.freed_retention_secs {
            bail!("gc.freed_max_retention_secs must be at least gc.freed_retention_secs");
        }
        if self.oci.upload_expiry_secs == 0 || self.oci.upload_sweep_interval_secs == 0 {
            bail!("oci.upload_expiry_secs and oci.upload_sweep_interval_secs must be > 0");
        }
        // Manifests are read whole into memory and parsed: keep them small.
        if self.oci.max_manifest_bytes == 0 || self.oci.max_manifest_bytes > 64 << 20 {
            bail!("oci.max_manifest_bytes must be between 1 and 67108864");
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn lookup<'a>(tree: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    let mut node = tree;
    for key in path {
        node = node.as_object()?.get(key)?;
    }
    Some(node)
}

fn set_path(tree: &mut toml::Value, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    let mut node = tree;
    for key in &path[..path.len() - 1] {
        node = node
            .as_table_mut()
            .and_then(|t| t.get_mut(key))
            .with_context(|| format!("no config section {key}"))?;
    }
    let table = node.as_table_mut().context("config path is not a table")?;
    table.insert(path[path.len() - 1].clone(), value);
    Ok(())
}

/// Parses an environment value as the type of the key's default (strings for unset keys).
fn parse_env_value(
    name: &str,
    raw: &str,
    default: &serde_json::Value,
) -> anyhow::Result<toml::Value> {
    let value = match default {
        serde_json::Value::Number(_) => toml::Value::Integer(
            raw.parse::<i64>()
                .with_context(|| format!("{name} must be an integer, got {raw:?}"))?,
        ),
        serde_json::Value::Bool(_) => toml::Value::Boolean(
            raw.parse::<bool>()
                .with_context(|| format!("{name} must be true or false, got {raw:?}"))?,
        ),
        // Lists are comma-separated: ARCA_REPLICATION__PEERS=10.0.0.1:7072,10.0.0.2:7072
        serde_json::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        ),
        serde_json::Value::Object(_) => anyhow::bail!("{name} names a section, not a value"),
        serde_json::Value::String(_) | serde_json::Value::Null => {
            toml::Value::String(raw.to_string())
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_address_needs_tls_or_insecure() {
        let mut config = NodeConfig::default();
        assert!(config.validate().is_ok());
        config.http_addr = "0.0.0.0:7070".into();
        let refused = config.validate().expect_err("plaintext beyond loopback");
        assert!(refused.to_string().contains("without TLS"), "{refused}");
        config.tls = TlsConfig {
            cert: Some("cert.pem".into()),
            key: Some("key.pem".into()),
        };
        assert!(config.validate().is_ok());
        config.grpc_addr = "10.1.2.3:7071".into();
        assert!(
            config.validate().is_err(),
            "gRPC without the node certificate"
        );
        config.cluster.ca_cert = Some("ca.pem".into());
        config.cluster.cert = Some("node.pem".into());
        assert!(config.validate().is_err(), "a certificate without its key");
        config.cluster.key = Some("node.key".into());
        assert!(config.validate().is_ok(), "gRPC with mutual TLS");
        config.cluster = ClusterConfig::default();
        config.insecure = true;
        assert!(config.validate().is_ok());
        config.tls.key = None;
        assert!(config.validate().is_err(), "a certificate without its key");
        for (addr, loopback) in [
            ("127.0.0.1:1", true),
            ("[::1]:1", true),
            ("localhost:1", true),
            ("127.9.9.9:1", true),
            ("0.0.0.0:1", false),
            ("[::]:1", false),
            ("example.com:1", false),
        ] {
            assert_eq!(is_loopback(addr), loopback, "{addr}");
        }
    }

    #[test]
    fn a_format_reads_its_own_section_and_defaults_without_one() {
        #[derive(Debug, Default, PartialEq, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Settings {
            max_package_bytes: u64,
            upstream: Option<String>,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("arca.toml");
        std::fs::write(
            &file,
            "[formats.example]\nmax_package_bytes = 4096\nupstream = \"http://127.0.0.1:1\"\n\n[formats.strict]\nunknown_key = 1\n",
        )
        .expect("write");
        let config = NodeConfig::load(Some(&file), Vec::new()).expect("load");
        assert_eq!(
            config
                .format_settings::<Settings>("example")
                .expect("settings"),
            Settings {
                max_package_bytes: 4096,
                upstream: Some("http://127.0.0.1:1".into()),
            }
        );
        assert_eq!(
            config
                .format_settings::<Settings>("absent")
                .expect("defaults"),
            Settings::default()
        );
        let refused = config
            .format_settings::<Settings>("strict")
            .expect_err("an unknown key is refused");
        assert!(
            format!("{refused:#}").contains("[formats.strict]"),
            "{refused:#}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let config = NodeConfig::load(None, Vec::new()).expect("load");
        assert_eq!(config, NodeConfig::default());
        config.validate().expect("valid");
    }

    #[test]
    fn file_then_env_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("arca.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9000\"\n[raft]\nheartbeat_interval_ms = 100\n",
        )
        .expect("write");
        let env = vec![
            ("ARCA_DATA_DIR".to_string(), "/srv/arca".to_string()),
            (
                "ARCA_RAFT__HEARTBEAT_INTERVAL_MS".to_string(),
                "120".to_string(),
            ),
            ("ARCA_SERVER".to_string(), "http://ignored".to_string()),
            ("ARCA_JOIN".to_string(), "127.0.0.1:7171".to_string()),
            (
                "ARCA_REPLICATION__PEERS".to_string(),
                "127.0.0.1:1, 127.0.0.1:2".to_string(),
            ),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let config = NodeConfig::load(Some(&path), env).expect("load");
        assert_eq!(config.http_addr, "127.0.0.1:9000");
        assert_eq!(config.data_dir, PathBuf::from("/srv/arca"));
        assert_eq!(config.raft.heartbeat_interval_ms, 120);
        assert_eq!(config.join.as_deref(), Some("127.0.0.1:7171"));
        assert_eq!(config.replication.peers, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(
            config.raft.election_timeout_min_ms,
            RaftConfig::default().election_timeout_min_ms
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("arca.toml");
        std::fs::write(&path, "htp_addr = \"x\"\n").expect("write");
        assert!(NodeConfig::load(Some(&path), Vec::new()).is_err());
        let mut config = NodeConfig::default();
        config.chunking.min_size = 10;
        assert!(config.validate().is_err());
        config = NodeConfig::default();
        config.node_id = 0;
        assert!(config.validate().is_err());
    }
}
