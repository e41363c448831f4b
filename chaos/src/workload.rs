//! Concurrent clients pushing, overwriting, deleting and pulling generic files, OCI image
//! tags (see [`crate::oci`]) and packages (PyPI wheels, npm tarballs, Maven jars, crates, Helm charts and NuGet packages, see
//! [`crate::packages`]), and now and then writing
//! to a mirror, recording every operation in the [`History`].
//!
//! Each key has exactly one writer (client `c` owns the file keys named `c{c}-…` and the tags
//! of image `img/c{c}`), so the writes to a key form a sequence and the checker needs no
//! linearizability search; reads go to any key from any client, any region and any node.
//!
//! Each repository format contributes a part ([`WorkloadPart`], listed in [`parts`]) with its
//! weight in the mix (of 160): generic files 60 (2 PUT without a valid credential, 23 PUT,
//! 6 DELETE, 7 immutable PUT, 2 PUT to a mirror, 20 GET), OCI 28 (13 image push, 4 tag delete,
//! 1 push to a mirror, 10 tag pull), PyPI, npm, Maven, cargo, Helm and NuGet 12 each (5 publish, 1 publish to a mirror,
//! 6 resolve); a mirror's share
//! goes to reads when no region is a mirror.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::Endpoints;
use crate::content::{content, sha256_hex};
use crate::history::{History, Op, OpKind, Outcome};
use crate::oci::{self, OCI_REPO};

/// The mutable repository.
pub const MUTABLE_REPO: &str = "mut";
/// The immutable repository.
pub const IMMUTABLE_REPO: &str = "imm";
/// Keys written to mirrors start with this (they must never exist anywhere).
pub const MIRROR_PROBE_PREFIX: &str = "mut/mirror-probe-";
/// Keys only ever written without a valid credential.
pub const INTRUDER_PREFIX: &str = "mut/intruder-";
/// Mutable keys per client (small, so keys are overwritten and deleted often).
const MUTABLE_KEYS: u64 = 6;

/// Workload settings.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub seed: u64,
    pub clients: u32,
    /// Think time between a client's operations, uniformly in this range (ms).
    pub think_ms: (u64, u64),
}

/// An HTTP client that never follows redirects: a 307 from a mirror is an answer to record.
pub fn http_client() -> reqwest::Client {
    crate::credentials::authorized(reqwest::Client::builder(), None)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// Creates the three repositories on the primary, retrying while the region settles.
pub async fn create_repos(endpoints: &Endpoints) -> anyhow::Result<()> {
    let http = http_client();
    let primary = &endpoints.regions[endpoints.primary()];
    for (name, immutable, format) in [
        (MUTABLE_REPO, false, "generic"),
        (IMMUTABLE_REPO, true, "generic"),
        (OCI_REPO, false, "oci"),
    ]
    .into_iter()
    .chain(
        crate::packages::formats()
            .into_iter()
            .map(|format| (format.repo(), false, format.format())),
    ) {
        let mut created = false;
        for attempt in 0..50 {
            let (_, url) = &primary.nodes[attempt % primary.nodes.len()];
            let response = http
                .post(format!("{url}/api/v1/repos"))
                .json(&serde_json::json!({"name": name, "immutable": immutable, "format": format}))
                .send()
                .await;
            if let Ok(response) = response {
                if matches!(response.status().as_u16(), 201 | 409) {
                    created = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !created {
            anyhow::bail!("could not create repository {name}");
        }
    }
    Ok(())
}

/// Keys any client may read (every key some client has tried to write).
#[derive(Clone, Default)]
pub struct KeyRegistry(Arc<Mutex<Vec<String>>>);

impl KeyRegistry {
    pub(crate) fn add(&self, key: &str) {
        let mut keys = self.0.lock();
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
    }

    pub(crate) fn pick(&self, rng: &mut StdRng) -> Option<String> {
        let keys = self.0.lock();
        if keys.is_empty() {
            return None;
        }
        Some(keys[rng.random_range(0..keys.len())].clone())
    }
}

/// One immutable key a client owns.
struct ImmutableKey {
    key: String,
    next_version: u64,
    acknowledged: bool,
}

/// What a format's part of the workload gets for one operation.
pub struct Step<'a> {
    pub http: &'a reqwest::Client,
    pub history: &'a History,
    pub endpoints: &'a Endpoints,
    pub seed: u64,
    pub client: u32,
}

/// A repository format's part of the workload: its share of each client's operations, and
/// what those operations are. Adding a format to the chaos workload is one more part in
/// [`parts`].
pub trait WorkloadPart: Send + Sync {
    /// The format, for reports.
    fn format(&self) -> &'static str;
    /// Its share of the operations, in percent of all of them (the parts add up to 100).
    fn share(&self) -> u32;
    /// The part's state for one client (each key has one writer: its client).
    fn client(&self, client: u32) -> Box<dyn ClientPart>;
}

/// One client's side of a [`WorkloadPart`].
pub trait ClientPart: Send {
    /// One operation, chosen with `roll` (uniform in `0..share`).
    fn step<'a>(
        &'a mut self,
        step: &'a Step<'a>,
        roll: u32,
        rng: &'a mut StdRng,
    ) -> futures::future::BoxFuture<'a, ()>;
}

/// The workload's parts, one per format.
pub fn parts() -> Vec<Arc<dyn WorkloadPart>> {
    let core: [Arc<dyn WorkloadPart>; 2] = [
        Arc::new(FilesPart::default()),
        Arc::new(oci::ImagesPart::default()),
    ];
    core.into_iter()
        .chain(crate::packages::formats().into_iter().map(|format| {
            let part: Arc<dyn WorkloadPart> = Arc::new(crate::packages::PackagesPart::new(format));
            part
        }))
        .collect()
}

/// Runs `options.clients` clients until `stop` is set.
pub async fn run(
    options: WorkloadOptions,
    endpoints: Arc<Endpoints>,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let parts = parts();
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let endpoints = endpoints.clone();
        let history = history.clone();
        let stop = stop.clone();
        let clients: Vec<(u32, Box<dyn ClientPart>)> = parts
            .iter()
            .map(|part| (part.share(), part.client(client)))
            .collect();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            run_client(client, options, endpoints, history, stop, clients).await
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn run_client(
    client: u32,
    options: WorkloadOptions,
    endpoints: Arc<Endpoints>,
    history: History,
    stop: Arc<AtomicBool>,
    mut parts: Vec<(u32, Box<dyn ClientPart>)>,
) {
    let mut rng = StdRng::seed_from_u64(
        options
            .seed
            .wrapping_add(u64::from(client + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    );
    let http = http_client();
    let total: u32 = parts.iter().map(|(share, _)| *share).sum::<u32>().max(1);
    while !stop.load(Ordering::Relaxed) {
        let step = Step {
            http: &http,
            history: &history,
            endpoints: &endpoints,
            seed: options.seed,
            client,
        };
        let mut roll = rng.random_range(0..total);
        for (share, part) in parts.iter_mut() {
            if roll < *share {
                part.step(&step, roll, &mut rng).await;
                break;
            }
            roll -= *share;
        }
        let think = rng.random_range(options.think_ms.0..=options.think_ms.1);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
}

/// Generic files: PUT, DELETE, immutable PUT, a PUT to a mirror now and then, GET.
#[derive(Default)]
struct FilesPart {
    keys: KeyRegistry,
}

impl WorkloadPart for FilesPart {
    fn format(&self) -> &'static str {
        "generic"
    }

    fn share(&self) -> u32 {
        60
    }

    fn client(&self, client: u32) -> Box<dyn ClientPart> {
        Box::new(FilesClient {
            keys: self.keys.clone(),
            client,
            mutable_versions: vec![0u64; MUTABLE_KEYS as usize],
            immutables: Vec::new(),
            probes: 0,
            intrusions: 0,
            anonymous: intruder_client(None),
            forged: intruder_client(Some("arca_forgedtoken1_00000000000000000000000000000000")),
        })
    }
}

/// A client that sends `token` (or nothing), never this process's credentials.
fn intruder_client(token: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2));
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        builder = builder.default_headers(headers);
    }
    builder.build().expect("http client")
}

struct FilesClient {
    keys: KeyRegistry,
    client: u32,
    mutable_versions: Vec<u64>,
    immutables: Vec<ImmutableKey>,
    probes: u64,
    intrusions: u64,
    /// Clients of an intruder: without a credential, and with a forged token.
    anonymous: reqwest::Client,
    forged: reqwest::Client,
}

impl ClientPart for FilesClient {
    fn step<'a>(
        &'a mut self,
        step: &'a Step<'a>,
        roll: u32,
        rng: &'a mut StdRng,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.run(step, roll, rng))
    }
}

impl FilesClient {
    async fn run(&mut self, step: &Step<'_>, roll: u32, rng: &mut StdRng) {
        let (http, history, endpoints, seed) = (step.http, step.history, step.endpoints, step.seed);
        let client = self.client;
        let has_mirror = !endpoints.mirrors().is_empty();
        match roll {
            0..2 => {
                // An intruder: no credential, or a forged token; always refused, never stored.
                self.intrusions += 1;
                let key = format!("{INTRUDER_PREFIX}c{client}-{}", self.intrusions);
                self.keys.add(&key);
                let target = pick_primary_node(endpoints, rng);
                let intruder = if rng.random_range(0..2u32) == 0 {
                    &self.anonymous
                } else {
                    &self.forged
                };
                write(
                    intruder,
                    history,
                    seed,
                    client,
                    OpKind::Unauthorized,
                    &key,
                    1,
                    target,
                )
                .await;
            }
            2..25 => {
                let index = rng.random_range(0..MUTABLE_KEYS) as usize;
                self.mutable_versions[index] += 1;
                let key = format!("{MUTABLE_REPO}/c{client}-k{index}");
                self.keys.add(&key);
                let target = pick_primary_node(endpoints, rng);
                let version = self.mutable_versions[index];
                write(
                    http,
                    history,
                    seed,
                    client,
                    OpKind::Put,
                    &key,
                    version,
                    target,
                )
                .await;
            }
            25..31 => {
                let index = rng.random_range(0..MUTABLE_KEYS) as usize;
                let key = format!("{MUTABLE_REPO}/c{client}-k{index}");
                let target = pick_primary_node(endpoints, rng);
                delete(http, history, client, &key, target).await;
            }
            31..38 => {
                // A new key most of the time; otherwise retry one whose first write was not
                // acknowledged, or try to overwrite one that was (which must be refused).
                let reuse = !self.immutables.is_empty() && rng.random_range(0..3u32) == 0;
                let index = if reuse {
                    rng.random_range(0..self.immutables.len())
                } else {
                    self.immutables.push(ImmutableKey {
                        key: format!("{IMMUTABLE_REPO}/c{client}-i{}", self.immutables.len()),
                        next_version: 1,
                        acknowledged: false,
                    });
                    self.immutables.len() - 1
                };
                let entry = &mut self.immutables[index];
                self.keys.add(&entry.key);
                let version = entry.next_version;
                entry.next_version += 1;
                let target = pick_primary_node(endpoints, rng);
                let kind = OpKind::PutImmutable;
                let outcome = write(
                    http, history, seed, client, kind, &entry.key, version, target,
                )
                .await;
                if outcome == Outcome::Ok {
                    entry.acknowledged = true;
                }
            }
            38..40 if has_mirror => {
                let target = pick_mirror_node(endpoints, rng);
                self.probes += 1;
                let key = format!("{MIRROR_PROBE_PREFIX}c{client}-{}", self.probes);
                let kind = OpKind::MirrorWrite;
                write(http, history, seed, client, kind, &key, 1, target).await;
            }
            _ => {
                if let Some(key) = self.keys.pick(rng) {
                    let up = endpoints.up();
                    if !up.is_empty() {
                        let region = up[rng.random_range(0..up.len())];
                        let (node, url) = pick_node(endpoints, region, rng);
                        read(http, history, endpoints, client, &key, (region, node, url)).await;
                    }
                }
            }
        }
    }
}

pub(crate) fn pick_node(endpoints: &Endpoints, region: usize, rng: &mut StdRng) -> (u64, String) {
    let nodes = &endpoints.regions[region].nodes;
    nodes[rng.random_range(0..nodes.len())].clone()
}

/// A node of a random mirror region (there must be one).
pub(crate) fn pick_mirror_node(endpoints: &Endpoints, rng: &mut StdRng) -> (usize, u64, String) {
    let mirrors = endpoints.mirrors();
    let region = mirrors[rng.random_range(0..mirrors.len())];
    let (node, url) = pick_node(endpoints, region, rng);
    (region, node, url)
}

pub(crate) fn pick_primary_node(endpoints: &Endpoints, rng: &mut StdRng) -> (usize, u64, String) {
    let region = endpoints.primary();
    let (node, url) = pick_node(endpoints, region, rng);
    (region, node, url)
}

/// The error code of a JSON error body, or the start of the body.
async fn error_detail(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(body) if body["code"].is_string() => body["code"].as_str().unwrap_or_default().into(),
        _ => text.chars().take(120).collect(),
    }
}

/// Classifies a write's answer: 2xx is ok, 5xx unknown (it may have applied), any other status
/// failed, a transport error as [`transport_outcome`] says; with `detail` of the answer when it
/// is not ok.
pub(crate) async fn classify_write<Fut>(
    result: reqwest::Result<reqwest::Response>,
    detail: impl FnOnce(reqwest::Response) -> Fut,
) -> (Outcome, Option<u16>, String)
where
    Fut: std::future::Future<Output = String>,
{
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let outcome = match status {
                200..=299 => Outcome::Ok,
                500..=599 => Outcome::Unknown,
                _ => Outcome::Failed,
            };
            let detail = match outcome {
                Outcome::Ok => String::new(),
                _ => detail(response).await,
            };
            (outcome, Some(status), detail)
        }
        Err(error) => (transport_outcome(&error), None, error.to_string()),
    }
}

/// How a transport error is classified: no connection means the request was never sent.
pub(crate) fn transport_outcome(error: &reqwest::Error) -> Outcome {
    if error.is_connect() {
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    http: &reqwest::Client,
    history: &History,
    seed: u64,
    client: u32,
    kind: OpKind,
    key: &str,
    version: u64,
    (region, node, url): (usize, u64, String),
) -> Outcome {
    let data = content(seed, key, version);
    let sha = sha256_hex(&data);
    let start_ms = history.now_ms();
    let result = http
        .put(format!("{url}/files/{key}"))
        .body(data)
        .send()
        .await;
    let (outcome, status, detail) = classify_write(result, error_detail).await;
    history.push(Op {
        id: 0,
        client,
        kind,
        key: key.to_string(),
        version: Some(version),
        sha256: Some(sha),
        region: region_name(region),
        node,
        start_ms,
        end_ms: history.now_ms(),
        outcome,
        status,
        detail,
        blob_mismatch: None,
    });
    outcome
}

async fn delete(
    http: &reqwest::Client,
    history: &History,
    client: u32,
    key: &str,
    (region, node, url): (usize, u64, String),
) {
    let start_ms = history.now_ms();
    let result = http.delete(format!("{url}/files/{key}")).send().await;
    let (outcome, status, detail) = classify_write(result, error_detail).await;
    history.push(Op {
        id: 0,
        client,
        kind: OpKind::Delete,
        key: key.to_string(),
        version: None,
        sha256: None,
        region: region_name(region),
        node,
        start_ms,
        end_ms: history.now_ms(),
        outcome,
        status,
        detail,
        blob_mismatch: None,
    });
}

async fn read(
    http: &reqwest::Client,
    history: &History,
    _endpoints: &Endpoints,
    client: u32,
    key: &str,
    (region, node, url): (usize, u64, String),
) {
    let start_ms = history.now_ms();
    let result = http.get(format!("{url}/files/{key}")).send().await;
    let (outcome, status, sha, detail) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200 => match response.bytes().await {
                    Ok(body) => (
                        Outcome::Ok,
                        Some(status),
                        Some(sha256_hex(&body)),
                        String::new(),
                    ),
                    // A body cut short is a failed read, not a wrong one: the client sees the
                    // length mismatch.
                    Err(error) => (Outcome::Failed, Some(status), None, error.to_string()),
                },
                404 => (Outcome::Ok, Some(status), None, String::new()),
                _ => (
                    Outcome::Failed,
                    Some(status),
                    None,
                    error_detail(response).await,
                ),
            }
        }
        Err(error) => (Outcome::Failed, None, None, error.to_string()),
    };
    history.push(Op {
        id: 0,
        client,
        kind: OpKind::Get,
        key: key.to_string(),
        version: None,
        sha256: sha,
        region: region_name(region),
        node,
        start_ms,
        end_ms: history.now_ms(),
        outcome,
        status,
        detail,
        blob_mismatch: None,
    });
}

/// Region names are positional (see the cluster); kept as strings in the history.
pub(crate) fn region_name(index: usize) -> String {
    crate::cluster::region_name(index).to_string()
}
