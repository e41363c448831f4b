//! A whole Arca deployment on loopback for a chaos run: one primary region and any number of
//! mirror regions, every intra-region gRPC link behind a [`TcpProxy`] (inbound per node) and
//! every mirror-to-primary QUIC link behind a [`UdpProxy`] (one per primary node per mirror).
//!
//! The cluster also owns the client-facing view the workload uses ([`Endpoints`]): which region
//! is primary now and which regions are down, so faults such as a failover can move clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use parking_lot::RwLock;

use crate::proxy::UdpProxy;
use crate::region::{Region, RegionOptions, RegionReplication};

/// Region names by position in the topology.
const REGION_NAMES: [&str; 6] = ["us", "eu", "ap", "sa", "af", "oc"];

/// The name of the region at position `index` of the topology.
pub fn region_name(index: usize) -> &'static str {
    REGION_NAMES.get(index).copied().unwrap_or("region")
}

/// Regions × nodes, e.g. `3,1,3`: the first region is the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology(pub Vec<u64>);

impl std::str::FromStr for Topology {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut sizes = Vec::new();
        for part in text.split(',') {
            let nodes: u64 = part
                .trim()
                .parse()
                .with_context(|| format!("parse region size {part:?}"))?;
            if !(1..=7).contains(&nodes) {
                bail!("a region has 1 to 7 nodes, not {nodes}");
            }
            sizes.push(nodes);
        }
        if sizes.is_empty() || sizes.len() > REGION_NAMES.len() {
            bail!("a topology has 1 to {} regions", REGION_NAMES.len());
        }
        Ok(Self(sizes))
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Environment for every node: short timeouts so faults are noticed within a short run, and
/// small chunks so modest files span several chunks.
fn node_env() -> Vec<(String, String)> {
    [
        ("ARCA_RAFT__WRITE_TIMEOUT_MS", "4000"),
        ("ARCA_REPLICATION__PROBE_INTERVAL_MS", "300"),
        ("ARCA_REPLICATION__SYNC_TIMEOUT_MS", "2500"),
        ("ARCA_CLUSTER__READ_BARRIER_TIMEOUT_MS", "500"),
        ("ARCA_CHUNKING__MIN_SIZE", "16384"),
        ("ARCA_CHUNKING__AVG_SIZE", "32768"),
        ("ARCA_CHUNKING__MAX_SIZE", "131072"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One region of the cluster with its links toward the (original) primary.
pub struct ClusterRegion {
    pub name: String,
    pub region: Region,
    /// Mirror regions: one proxy per primary node that this region's `--primary` points at.
    pub links: Vec<UdpProxy>,
}

/// What clients see: nodes' HTTP URLs by region and who takes writes now.
pub struct Endpoints {
    pub regions: Vec<RegionEndpoint>,
    state: RwLock<EndpointState>,
}

pub struct RegionEndpoint {
    pub name: String,
    /// (node id, base URL); URLs survive restarts (nodes keep their ports).
    pub nodes: Vec<(u64, String)>,
}

#[derive(Debug, Clone)]
struct EndpointState {
    primary: usize,
    /// Regions clients must not use (lost, or rejoining and not yet demoted).
    down: Vec<bool>,
}

impl Endpoints {
    pub fn primary(&self) -> usize {
        self.state.read().primary
    }

    pub fn set_primary(&self, index: usize) {
        self.state.write().primary = index;
    }

    pub fn set_down(&self, index: usize, down: bool) {
        self.state.write().down[index] = down;
    }

    pub fn is_down(&self, index: usize) -> bool {
        self.state.read().down[index]
    }

    /// Regions that are up and not the primary.
    pub fn mirrors(&self) -> Vec<usize> {
        let state = self.state.read();
        (0..self.regions.len())
            .filter(|i| *i != state.primary && !state.down[*i])
            .collect()
    }

    /// Regions that are up.
    pub fn up(&self) -> Vec<usize> {
        let state = self.state.read();
        (0..self.regions.len())
            .filter(|i| !state.down[*i])
            .collect()
    }
}

/// The running cluster.
pub struct Cluster {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub regions: Vec<ClusterRegion>,
    pub endpoints: Arc<Endpoints>,
}

/// Waits until the node at `base_url` accepts `token` (a mirror that replicated the
/// primary's accounts and signing keys).
async fn wait_accepts(base_url: &str, token: &str) -> anyhow::Result<()> {
    let http = crate::credentials::authorized(reqwest::Client::builder(), Some(token))
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = format!("{base_url}/api/v1/auth/whoami");
    crate::wait_until(
        "a mirror accepts the primary's token",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(())
            }
        },
    )
    .await
}

impl Cluster {
    /// Starts the primary region, then each mirror region (following the primary through its
    /// link proxies, probing the mirrors started before it as peers).
    pub async fn start(binary: &Path, root: &Path, topology: &Topology) -> anyhow::Result<Self> {
        let tls_dir = root.join("tls");
        let mut regions: Vec<ClusterRegion> = Vec::new();
        for (index, nodes) in topology.0.iter().enumerate() {
            let name = REGION_NAMES[index].to_string();
            let mut replication = RegionReplication {
                tls_dir: tls_dir.clone(),
                ..Default::default()
            };
            let mut links = Vec::new();
            if let Some(primary) = regions.first() {
                for node in primary.region.nodes.values() {
                    let addr = node
                        .replication_addr
                        .ok_or_else(|| anyhow!("primary node without a replication address"))?;
                    let proxy = UdpProxy::start(addr).await.context("start a link proxy")?;
                    replication.primary.push(proxy.addr.to_string());
                    links.push(proxy);
                }
                for earlier in regions.iter().skip(1) {
                    replication.peers.extend(earlier.region.replication_addrs());
                }
            }
            let mut options = RegionOptions::new(binary, root.join(&name), *nodes);
            options.region = name.clone();
            options.env = node_env();
            options.replication = Some(replication);
            options.grpc_proxies = true;
            let region = Region::must_start(options).await;
            region.must_wait_leader(Duration::from_secs(60)).await;
            if let Some(token) = &region.token {
                crate::credentials::set_token(token);
            } else if let Some(token) = crate::credentials::token() {
                // A mirror knows the primary's accounts once it replicated them.
                for node in region.nodes.values() {
                    wait_accepts(&node.base_url(), &token).await?;
                }
            }
            regions.push(ClusterRegion {
                name,
                region,
                links,
            });
        }
        let endpoints = Arc::new(Endpoints {
            regions: regions
                .iter()
                .map(|r| RegionEndpoint {
                    name: r.name.clone(),
                    nodes: r
                        .region
                        .nodes
                        .iter()
                        .map(|(id, p)| (*id, p.base_url()))
                        .collect(),
                })
                .collect(),
            state: RwLock::new(EndpointState {
                primary: 0,
                down: vec![false; regions.len()],
            }),
        });
        Ok(Self {
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
            regions,
            endpoints,
        })
    }

    /// The admin (gRPC) address of a live node of region `index`, for the CLI. The node's own
    /// address, not its proxy, so the harness can ask even while the node is cut off.
    pub fn admin_addr(&self, index: usize) -> Option<String> {
        let region = &self.regions[index].region;
        let id = *region.live().first()?;
        Some(region.node(id).grpc_addr.to_string())
    }

    /// Runs `arca <args> --output json --admin <addr>` and parses its output; the exit status
    /// is returned beside the JSON (verify exits non-zero when regions differ).
    pub async fn cli_json(
        &self,
        args: &[&str],
        admin: &str,
    ) -> anyhow::Result<(bool, serde_json::Value)> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(args)
            .args(["--output", "json", "--admin", admin])
            .kill_on_drop(true);
        // The admin RPCs need a cluster-admin: the harness's session.
        if let Some(token) = crate::credentials::token_for(admin) {
            command.env("ARCA_TOKEN", token);
        }
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .map_err(|_| anyhow!("arca {args:?} timed out"))?
            .with_context(|| format!("run arca {args:?}"))?;
        let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            serde_json::json!({
                "stdout": String::from_utf8_lossy(&output.stdout),
                "stderr": String::from_utf8_lossy(&output.stderr),
            })
        });
        Ok((output.status.success(), value))
    }

    /// Heals every network fault: links, node proxies, shapes.
    pub fn heal_network(&self) {
        for region in &self.regions {
            for link in &region.links {
                link.heal();
                link.shape(Default::default());
            }
            for proxy in region.region.grpc_proxies.values() {
                proxy.heal();
                proxy.set_latency(Duration::ZERO);
            }
        }
    }

    /// Resumes paused nodes and restarts stopped ones, in regions that are not down.
    pub async fn heal_processes(&mut self) {
        for (index, region) in self.regions.iter_mut().enumerate() {
            if self.endpoints.is_down(index) {
                continue;
            }
            let ids: Vec<u64> = region.region.nodes.keys().copied().collect();
            for id in ids {
                if region.region.is_paused(id) {
                    region.region.must_resume(id);
                }
                if region.region.node(id).pid().is_none() {
                    region.region.must_restart(id);
                }
            }
            for id in region.region.nodes.keys() {
                region
                    .region
                    .must_wait_ready(*id, Duration::from_secs(60))
                    .await;
            }
        }
    }
}
