//! A region of real `arca serve` processes on loopback: node 1 starts the region, the others
//! join it. Helpers find the leader, wait for readiness and applied indexes, and kill, restart,
//! pause and resume nodes by id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::process::{ArcaProcess, ProcessOptions};
use crate::proxy::TcpProxy;
use crate::wait::wait_until;

/// How to start a region.
#[derive(Debug, Clone)]
pub struct RegionOptions {
    pub binary: PathBuf,
    /// Each node's data directory is `root/node-{id}`.
    pub root: PathBuf,
    pub region: String,
    pub nodes: u64,
    /// Environment for every node (configuration overrides such as `ARCA_RAFT__…`).
    pub env: Vec<(String, String)>,
    /// Replication between regions, if any.
    pub replication: Option<RegionReplication>,
    /// Put a [`TcpProxy`] in front of every node's gRPC port and advertise the proxy, so the
    /// region's Raft and chunk traffic into a node crosses it and can be cut or delayed.
    pub grpc_proxies: bool,
}

/// How a region's nodes replicate with other regions.
#[derive(Debug, Clone, Default)]
pub struct RegionReplication {
    /// Directory of the cluster CA (`ca.pem`, `ca.key`; created if missing); node certificates
    /// are issued into it.
    pub tls_dir: PathBuf,
    /// Replication addresses of the primary region's nodes (makes this region a mirror).
    pub primary: Vec<String>,
    /// Replication addresses of other regions to probe.
    pub peers: Vec<String>,
    pub read_through: bool,
}

impl RegionOptions {
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>, nodes: u64) -> Self {
        Self {
            binary: binary.into(),
            root: root.into(),
            region: "test".into(),
            nodes,
            env: Vec::new(),
            replication: None,
            grpc_proxies: false,
        }
    }
}

/// The processes of one region, by node id.
pub struct Region {
    options: RegionOptions,
    pub nodes: BTreeMap<u64, ArcaProcess>,
    /// Nodes currently paused with SIGSTOP.
    paused: Vec<u64>,
    /// The proxy in front of each node's gRPC port (inbound traffic), with
    /// [`RegionOptions::grpc_proxies`].
    pub grpc_proxies: BTreeMap<u64, TcpProxy>,
    /// The port each proxy forwards to (the node's real gRPC address).
    proxy_targets: BTreeMap<u64, std::net::SocketAddr>,
    http: reqwest::Client,
    /// A session token of the bootstrap account, when this region created it.
    pub token: Option<String>,
}

impl Region {
    /// Starts every node (node 1 first, the rest joining it) and waits until all are ready.
    pub async fn must_start(options: RegionOptions) -> Self {
        let mut region = Region {
            options: options.clone(),
            nodes: BTreeMap::new(),
            paused: Vec::new(),
            grpc_proxies: BTreeMap::new(),
            proxy_targets: BTreeMap::new(),
            http: crate::credentials::authorized(reqwest::Client::builder(), None)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            token: None,
        };
        for id in 1..=options.nodes {
            if options.grpc_proxies {
                region.must_add_grpc_proxy(id).await;
            }
            region.must_add_process(id);
        }
        let ids: Vec<u64> = region.nodes.keys().copied().collect();
        for id in ids {
            region.must_wait_ready(id, Duration::from_secs(60)).await;
        }
        // The first node of a new primary region creates the first account (a primary that
        // must hear from its peer regions first does so a little later): sign in with it.
        let is_primary = options
            .replication
            .as_ref()
            .is_none_or(|r| r.primary.is_empty());
        if let Some(first) = region.nodes.get(&1) {
            if is_primary {
                let dir = first.data_dir().to_path_buf();
                let _ = crate::wait_until(
                    "the first account",
                    Duration::from_secs(60),
                    Duration::from_millis(100),
                    || {
                        let dir = dir.clone();
                        async move { crate::credentials::admin_password(&dir) }
                    },
                )
                .await;
            }
            if crate::credentials::admin_password(first.data_dir()).is_some() {
                let token = first.admin_token().await.expect("sign in as admin");
                crate::credentials::set_token(&token);
                region.token = Some(token);
            }
        }
        if region.token.is_none() {
            // A mirror knows its primary's accounts: the primary's session works here too.
            region.token = options
                .replication
                .iter()
                .flat_map(|r| r.primary.iter())
                .find_map(|addr| crate::credentials::registered(addr))
                .or_else(crate::credentials::token);
        }
        if let Some(token) = region.token.clone() {
            region.http = crate::credentials::authorized(reqwest::Client::builder(), Some(&token))
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client");
            region.register_addresses();
        }
        // `--init-region` is for the first start only: a node restarted on an empty data
        // directory must not create a second region of the same name.
        if let Some(first) = region.nodes.get_mut(&1) {
            first
                .options_mut()
                .env
                .retain(|(name, _)| name != "ARCA_INIT_REGION");
        }
        region
    }

    fn node_options(&self, id: u64) -> ProcessOptions {
        let mut options = ProcessOptions::new(
            &self.options.binary,
            self.options.root.join(format!("node-{id}")),
        );
        options.extra_args = vec![
            "--node-id".into(),
            id.to_string(),
            "--region".into(),
            self.options.region.clone(),
        ];
        if id != 1 {
            let seed = self
                .nodes
                .get(&1)
                .or_else(|| self.nodes.values().next())
                .expect("a running node to join");
            let seed_addr = match self.grpc_proxies.get(&1) {
                Some(proxy) => proxy.addr,
                None => seed.grpc_addr,
            };
            options.extra_args.push("--join".into());
            options.extra_args.push(seed_addr.to_string());
        }
        if let Some(proxy) = self.grpc_proxies.get(&id) {
            // The proxy forwards to a port picked now; the node binds it and advertises the
            // proxy, so its peers reach it only through the proxy.
            options.grpc_addr = self.proxy_targets[&id].to_string();
            options
                .extra_args
                .extend(["--advertise-grpc".to_string(), proxy.addr.to_string()]);
        }
        options.env = self.options.env.clone();
        if id == 1 && self.nodes.is_empty() {
            // Through the environment, which binaries older than --init-region ignore.
            options.env.push(("ARCA_INIT_REGION".into(), "true".into()));
        }
        if let Some(replication) = &self.options.replication {
            let name = format!("{}-node-{id}", self.options.region);
            let files = must_issue(&replication.tls_dir, &name, &self.options.region);
            options.replication_addr = Some("127.0.0.1:0".into());
            options.extra_args.extend([
                "--ca-cert".to_string(),
                files.ca_cert.display().to_string(),
                "--cert".to_string(),
                files.cert.display().to_string(),
                "--key".to_string(),
                files.key.display().to_string(),
            ]);
            for primary in &replication.primary {
                options
                    .extra_args
                    .extend(["--primary".to_string(), primary.clone()]);
            }
            for peer in &replication.peers {
                options
                    .extra_args
                    .extend(["--peer".to_string(), peer.clone()]);
            }
            if replication.read_through {
                options.extra_args.push("--read-through".to_string());
            }
        }
        options
    }

    /// Picks a free loopback port for node `id`'s gRPC server and starts a proxy in front of it.
    async fn must_add_grpc_proxy(&mut self, id: u64) {
        let target = pick_unused_port();
        let proxy = TcpProxy::start(target).await.expect("start a grpc proxy");
        self.proxy_targets.insert(id, target);
        self.grpc_proxies.insert(id, proxy);
    }

    /// Starts node `id` as a process; ids above 1 join the region through an existing node.
    pub fn must_add_process(&mut self, id: u64) {
        let process = ArcaProcess::must_start(self.node_options(id));
        self.nodes.insert(id, process);
        self.register_addresses();
    }

    /// Records the region's token for every address of its nodes (see
    /// [`crate::credentials::token_for`]).
    fn register_addresses(&self) {
        let Some(token) = &self.token else {
            return;
        };
        let mut addrs = Vec::new();
        for process in self.nodes.values() {
            addrs.push(process.http_addr.to_string());
            addrs.push(process.grpc_addr.to_string());
            addrs.extend(process.replication_addr.map(|a| a.to_string()));
        }
        addrs.extend(self.grpc_proxies.values().map(|p| p.addr.to_string()));
        crate::credentials::register(addrs, token);
    }

    pub fn node_mut(&mut self, id: u64) -> &mut ArcaProcess {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Replication addresses of every node (for another region's `--primary` or `--peer`).
    pub fn replication_addrs(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter_map(|p| p.replication_addr.map(|a| a.to_string()))
            .collect()
    }

    pub fn node(&self, id: u64) -> &ArcaProcess {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}{}", self.node(id).base_url(), path)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        self.node(id).data_dir()
    }

    /// Node ids whose process is running and not paused.
    pub fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(id, p)| p.pid().is_some() && !self.paused.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// `/readyz` of a node as JSON, or None if it is not ready or not answering.
    pub async fn readyz(&self, id: u64) -> Option<serde_json::Value> {
        let response = self
            .http
            .get(self.url(id, "/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    pub async fn must_wait_ready(&self, id: u64, timeout: Duration) -> serde_json::Value {
        wait_until(
            &format!("node {id} to be ready"),
            timeout,
            Duration::from_millis(50),
            || self.readyz(id),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; log of node {id}:\n{}", self.node(id).log()))
    }

    /// The leader as the live nodes see it, once one is elected among them.
    pub async fn must_wait_leader(&self, timeout: Duration) -> u64 {
        wait_until(
            "a leader among the live nodes",
            timeout,
            Duration::from_millis(50),
            || async {
                let live = self.live();
                for id in &live {
                    if let Some(ready) = self.readyz(*id).await {
                        let leader = ready["leader"].as_u64()?;
                        if live.contains(&leader)
                            && self.readyz(leader).await.map(|r| r["role"] == "leader")
                                == Some(true)
                        {
                            return Some(leader);
                        }
                    }
                }
                None
            },
        )
        .await
        .expect("leader")
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn must_wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        wait_until(
            &format!("node {id} to apply index {index}"),
            timeout,
            Duration::from_millis(50),
            || async {
                let ready = self.readyz(id).await?;
                (ready["applied_index"].as_u64()? >= index).then_some(())
            },
        )
        .await
        .expect("applied index");
    }

    pub fn must_kill(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("node").must_kill();
    }

    /// Graceful stop (`SIGTERM`, then `SIGKILL` after `timeout`).
    pub fn must_stop(&mut self, id: u64, timeout: Duration) {
        self.nodes.get_mut(&id).expect("node").must_stop(timeout);
    }

    pub fn must_restart(&mut self, id: u64) {
        self.nodes.get_mut(&id).expect("node").must_restart();
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.paused.contains(&id)
    }

    pub fn must_pause(&mut self, id: u64) {
        self.node(id).must_pause();
        self.paused.push(id);
    }

    pub fn must_resume(&mut self, id: u64) {
        self.node(id).must_resume();
        self.paused.retain(|p| *p != id);
    }

    /// A counter or gauge from a node's `/metrics` (summed over label sets matching `labels`).
    pub async fn metric(&self, id: u64, name: &str, labels: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(self.url(id, "/metrics"))
            .send()
            .await
            .context("scrape metrics")?
            .text()
            .await?;
        let mut total = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) || !rest.contains(labels) {
                continue;
            }
            let value: f64 = rest
                .rsplit(' ')
                .next()
                .ok_or_else(|| anyhow!("malformed line {line}"))?
                .parse()?;
            *total.get_or_insert(0.0) += value;
        }
        Ok(total.unwrap_or(0.0))
    }
}

/// A loopback address with a port free now, for a node to bind later. Chosen below Linux's
/// ephemeral range (32768 and up): a port `bind(0)` handed out is free only until some
/// outgoing connection takes it as its local port, which happened to a node starting a moment
/// later (`Address already in use`).
fn pick_unused_port() -> std::net::SocketAddr {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("local address");
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// Creates the CA in `dir` if needed and issues (or reuses) a node certificate of `region` for
/// `name`, valid for the loopback addresses tests use.
pub fn must_issue(dir: &Path, name: &str, region: &str) -> arca_replication::TlsFiles {
    let year = Duration::from_secs(365 * 24 * 3600);
    if !dir.join("ca.pem").exists() {
        arca_replication::tls::init_ca(dir, year).expect("create the test CA");
    }
    let out = dir.join(name);
    let (cert, key) = if out.with_extension("pem").exists() {
        (out.with_extension("pem"), out.with_extension("key"))
    } else {
        arca_replication::tls::issue(
            dir,
            name,
            arca_replication::tls::Role::Node { region },
            &["127.0.0.1".to_string(), "localhost".to_string()],
            &out,
            year,
        )
        .expect("issue a test certificate")
    };
    arca_replication::TlsFiles {
        ca_cert: dir.join("ca.pem"),
        cert,
        key,
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Paused processes cannot act on SIGKILL until resumed.
        for id in self.paused.clone() {
            if let Some(process) = self.nodes.get(&id) {
                process.must_resume();
            }
        }
    }
}
