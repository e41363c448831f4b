//! A load generator for any OCI registry (Arca, CNCF distribution, …) and for Arca's generic file
//! API: pushes and pulls blobs, manifests and files of a chosen size with a chosen number of
//! concurrent clients, and reports throughput and latency percentiles from an HDR histogram.
//!
//! Every operation is a real HTTP exchange through `reqwest`, the way an OCI client does it:
//! a blob push is `POST /v2/<name>/blobs/uploads/` then `PUT <location>?digest=` with the bytes,
//! a manifest push is `PUT /v2/<name>/manifests/<tag>` of an OCI image manifest whose config and
//! layer exist. Content is random and different for every operation (nothing deduplicates
//! unless the registry finds identical bytes on its own) and derived from a seed, so runs repeat.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use sha2::Digest;

use crate::random_bytes;

/// What each operation of a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// OCI blob upload (POST, then PUT with the digest), a fresh blob every time.
    BlobPush,
    /// OCI blob download by digest.
    BlobPull,
    /// OCI image manifest upload by tag, a fresh manifest every time.
    ManifestPush,
    /// OCI manifest download by tag.
    ManifestPull,
    /// Arca generic file upload (`PUT /files/<repo>/<path>`).
    FilePush,
    /// Arca generic file download.
    FilePull,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::BlobPush,
        Workload::BlobPull,
        Workload::ManifestPush,
        Workload::ManifestPull,
        Workload::FilePush,
        Workload::FilePull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::BlobPush => "blob-push",
            Workload::BlobPull => "blob-pull",
            Workload::ManifestPush => "manifest-push",
            Workload::ManifestPull => "manifest-pull",
            Workload::FilePush => "file-push",
            Workload::FilePull => "file-pull",
        }
    }

    fn is_push(self) -> bool {
        matches!(
            self,
            Workload::BlobPush | Workload::ManifestPush | Workload::FilePush
        )
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                anyhow!("unknown workload {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Parses `4096`, `4KiB`, `16MiB`, `1GiB` (also `k`, `m`, `g` and `KB`-style, all binary).
pub fn parse_size(s: &str) -> anyhow::Result<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: usize = number
        .parse()
        .with_context(|| format!("size {s:?} does not start with a number"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    number
        .checked_shl(shift)
        .filter(|n| n >> shift == number)
        .ok_or_else(|| anyhow!("size {s:?} is too large"))
}

/// `4 KiB`, `16 MiB`, `1 GiB`.
pub fn format_size(bytes: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The registry's base URL, `http://127.0.0.1:7070`.
    pub target: String,
    pub workload: Workload,
    /// Blob or file size; for manifests, the size of the layer they reference.
    pub size: usize,
    pub concurrency: usize,
    /// Operations in the measured phase.
    pub ops: u64,
    /// OCI repository name (for Arca, `<arca repository>/<image>`).
    pub image: String,
    /// Arca repository for generic files.
    pub repo: String,
    pub seed: u64,
    /// Pulls: hash every downloaded byte (sha256) and compare with the digest.
    pub verify: bool,
    /// The bearer token every request sends (default: `ARCA_TOKEN`, else this process's, see
    /// `arca_chaos::credentials`).
    pub token: Option<String>,
}

impl LoadSpec {
    pub fn new(target: impl Into<String>, workload: Workload, size: usize) -> Self {
        Self {
            target: target.into().trim_end_matches('/').to_string(),
            workload,
            size,
            concurrency: 1,
            ops: 100,
            image: "containers/bench".into(),
            repo: "bench".into(),
            seed: 1,
            verify: false,
            token: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub workload: Workload,
    pub target: String,
    pub size: usize,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Payload bytes moved by successful operations.
    pub bytes: u64,
    pub mib_per_s: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A fresh blob: its bytes and `sha256:<hex>` digest.
#[derive(Clone)]
struct Blob {
    bytes: Bytes,
    digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
        Self {
            bytes: Bytes::from(bytes),
            digest,
        }
    }
}

/// Above this many bytes of prepared bodies the run refuses to start (lower `--ops`).
const PREPARE_LIMIT: u64 = 6 << 30;
/// Pulls rotate over at most this many distinct objects, of at most this many bytes in all
/// (a 1 GiB pull run reads one blob again and again).
const PULL_SET: u64 = 512;
const PULL_BYTES: u64 = 256 << 20;

/// An HTTP client sized for `concurrency` connections to one host.
pub fn client(concurrency: usize) -> reqwest::Client {
    client_with_token(concurrency, None)
}

/// [`client`] sending `token` (default: `ARCA_TOKEN`, else this process's).
pub fn client_with_token(concurrency: usize, token: Option<&str>) -> reqwest::Client {
    let token = token
        .map(str::to_string)
        .or_else(|| std::env::var("ARCA_TOKEN").ok());
    arca_chaos::credentials::authorized(reqwest::Client::builder(), token.as_deref())
        .pool_max_idle_per_host(concurrency.max(1))
        .redirect(reqwest::redirect::Policy::limited(4))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(600))
        .build()
        .expect("http client")
}

/// Runs the preparation (uploads a pull run reads, manifests' layers) and then the measured
/// phase.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    if spec.concurrency == 0 || spec.ops == 0 {
        bail!("concurrency and ops must be at least 1");
    }
    let http = client_with_token(spec.concurrency, spec.token.as_deref());
    let plan = Arc::new(prepare(&http, spec).await?);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..spec.concurrency {
        let http = http.clone();
        let plan = plan.clone();
        let next = next.clone();
        let spec = spec.clone();
        workers.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
            let mut bytes = 0u64;
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let op = next.fetch_add(1, Ordering::Relaxed);
                if op >= spec.ops {
                    break;
                }
                let began = Instant::now();
                match one_op(&http, &spec, &plan, op).await {
                    Ok(moved) => {
                        histogram.saturating_record(began.elapsed().as_micros().max(1) as u64);
                        bytes += moved;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (histogram, bytes, errors, first_error)
        }));
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    let (mut bytes, mut errors, mut first_error) = (0, 0, None);
    for worker in workers {
        let (h, b, e, f) = worker.await.context("load worker panicked")?;
        histogram.add(&h).context("merge histograms")?;
        bytes += b;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadResult {
        workload: spec.workload,
        target: spec.target.clone(),
        size: spec.size,
        concurrency: spec.concurrency,
        ops: spec.ops,
        errors,
        first_error,
        seconds,
        bytes,
        mib_per_s: bytes as f64 / (1 << 20) as f64 / seconds,
        ops_per_s: (spec.ops - errors) as f64 / seconds,
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}

/// What the measured phase needs, made before the clock starts.
enum Plan {
    /// Pushes: the bodies, one per operation.
    Blobs(Vec<Blob>),
    /// Pulls: the objects to rotate over.
    Pulls(Vec<Blob>),
    /// Manifest pushes: the manifests, one per operation.
    Manifests(Vec<Blob>),
    /// Manifest pulls: the tags pushed and their manifests.
    Tags(Vec<(String, Blob)>),
}

fn blob_seed(spec: &LoadSpec, i: u64) -> u64 {
    spec.seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(spec.size as u64)
}

fn fresh_blobs(spec: &LoadSpec, count: u64, salt: u64) -> anyhow::Result<Vec<Blob>> {
    if count.saturating_mul(spec.size as u64) > PREPARE_LIMIT {
        bail!(
            "{count} × {} is more than the {} this tool prepares in memory; lower --ops",
            format_size(spec.size),
            format_size(PREPARE_LIMIT as usize)
        );
    }
    Ok((0..count)
        .map(|i| Blob::new(random_bytes(spec.size, blob_seed(spec, i) ^ salt)))
        .collect())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest(config: &Blob, layer: &Blob, n: u64, seed: u64) -> Blob {
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.digest,
            "size": layer.bytes.len(),
        }],
        "annotations": {"org.arca.bench.n": n.to_string(), "org.arca.bench.seed": seed.to_string()},
    });
    Blob::new(serde_json::to_vec(&body).expect("manifest json"))
}

async fn prepare(http: &reqwest::Client, spec: &LoadSpec) -> anyhow::Result<Plan> {
    // Salt with the time so that a second run against the same registry pushes new content.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let salt = if spec.workload.is_push() { salt } else { 0 };
    match spec.workload {
        Workload::BlobPush | Workload::FilePush => {
            if spec.workload == Workload::FilePush {
                create_arca_repo(http, &spec.target, &spec.repo, "generic").await?;
            }
            Ok(Plan::Blobs(fresh_blobs(spec, spec.ops, salt)?))
        }
        Workload::BlobPull | Workload::FilePull => {
            let count = spec
                .ops
                .min(PULL_SET)
                .min((PULL_BYTES / spec.size.max(1) as u64).max(1));
            let blobs = fresh_blobs(spec, count, 0)?;
            if spec.workload == Workload::FilePull {
                create_arca_repo(http, &spec.target, &spec.repo, "generic").await?;
            }
            for (i, blob) in blobs.iter().enumerate() {
                match spec.workload {
                    Workload::BlobPull => push_blob(http, spec, blob).await?,
                    _ => push_file(http, spec, i as u64, blob).await?,
                }
            }
            Ok(Plan::Pulls(blobs))
        }
        Workload::ManifestPush | Workload::ManifestPull => {
            let config = Blob::new(
                serde_json::to_vec(&serde_json::json!({
                    "architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []},
                }))
                .expect("config json"),
            );
            let layer = fresh_blobs(spec, 1, 0)?.remove(0);
            push_blob(http, spec, &config).await?;
            push_blob(http, spec, &layer).await?;
            if spec.workload == Workload::ManifestPush {
                Ok(Plan::Manifests(
                    (0..spec.ops)
                        .map(|n| manifest(&config, &layer, n, salt))
                        .collect(),
                ))
            } else {
                let mut tags = Vec::new();
                for n in 0..spec.ops.min(PULL_SET) {
                    let tag = format!("pull-{n}");
                    let manifest = manifest(&config, &layer, n, spec.seed);
                    push_manifest(http, spec, &tag, &manifest).await?;
                    tags.push((tag, manifest));
                }
                Ok(Plan::Tags(tags))
            }
        }
    }
}

async fn one_op(
    http: &reqwest::Client,
    spec: &LoadSpec,
    plan: &Plan,
    op: u64,
) -> anyhow::Result<u64> {
    match (plan, spec.workload) {
        (Plan::Blobs(blobs), Workload::BlobPush) => {
            let blob = &blobs[op as usize];
            push_blob(http, spec, blob).await?;
            Ok(blob.bytes.len() as u64)
        }
        (Plan::Blobs(blobs), Workload::FilePush) => {
            let blob = &blobs[op as usize];
            push_file(http, spec, op, blob).await?;
            Ok(blob.bytes.len() as u64)
        }
        (Plan::Pulls(blobs), workload) => {
            let index = (op % blobs.len() as u64) as usize;
            let blob = &blobs[index];
            let url = if workload == Workload::BlobPull {
                format!("{}/v2/{}/blobs/{}", spec.target, spec.image, blob.digest)
            } else {
                format!("{}/files/{}/load/{index}", spec.target, spec.repo)
            };
            let response = http.get(&url).send().await.context("GET")?;
            expect_status(response.status(), &[200], "GET", &url)?;
            let mut stream = response.bytes_stream();
            let mut hasher = spec.verify.then(sha2::Sha256::new);
            let mut moved = 0u64;
            while let Some(frame) = stream.next().await {
                let frame = frame.context("reading the body")?;
                moved += frame.len() as u64;
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&frame);
                }
            }
            if moved != blob.bytes.len() as u64 {
                bail!("GET {url}: {moved} bytes, expected {}", blob.bytes.len());
            }
            if let Some(hasher) = hasher {
                let got = format!("sha256:{:x}", hasher.finalize());
                if got != blob.digest {
                    bail!("GET {url}: digest {got}, expected {}", blob.digest);
                }
            }
            Ok(moved)
        }
        (Plan::Manifests(manifests), _) => {
            let manifest = &manifests[op as usize];
            push_manifest(http, spec, &format!("t{op}"), manifest).await?;
            Ok(manifest.bytes.len() as u64)
        }
        (Plan::Tags(tags), _) => {
            let (tag, manifest) = &tags[(op % tags.len() as u64) as usize];
            let url = format!("{}/v2/{}/manifests/{tag}", spec.target, spec.image);
            let response = http
                .get(&url)
                .header(reqwest::header::ACCEPT, OCI_MANIFEST)
                .send()
                .await
                .context("GET")?;
            expect_status(response.status(), &[200], "GET", &url)?;
            let body = response.bytes().await.context("reading the manifest")?;
            if body != manifest.bytes {
                bail!("GET {url}: the manifest differs from the one pushed");
            }
            Ok(body.len() as u64)
        }
        (_, workload) => Err(anyhow!("no plan for {workload}")),
    }
}

fn expect_status(
    status: reqwest::StatusCode,
    want: &[u16],
    method: &str,
    url: &str,
) -> anyhow::Result<()> {
    if want.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(anyhow!("{method} {url}: status {status}"))
    }
}

/// `POST` an upload session, then `PUT` the whole blob to it with its digest (what docker and
/// containerd do for a layer that fits one request).
async fn push_blob(http: &reqwest::Client, spec: &LoadSpec, blob: &Blob) -> anyhow::Result<()> {
    let start = format!("{}/v2/{}/blobs/uploads/", spec.target, spec.image);
    let response = http.post(&start).send().await.context("POST upload")?;
    expect_status(response.status(), &[202], "POST", &start)?;
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("POST {start}: no Location"))?;
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{}{location}", spec.target)
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(&blob.digest);
    let response = http
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await
        .context("PUT upload")?;
    expect_status(response.status(), &[201], "PUT", &url)
}

async fn push_manifest(
    http: &reqwest::Client,
    spec: &LoadSpec,
    tag: &str,
    manifest: &Blob,
) -> anyhow::Result<()> {
    let url = format!("{}/v2/{}/manifests/{tag}", spec.target, spec.image);
    let response = http
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, OCI_MANIFEST)
        .body(manifest.bytes.clone())
        .send()
        .await
        .context("PUT manifest")?;
    expect_status(response.status(), &[201], "PUT", &url)
}

async fn push_file(
    http: &reqwest::Client,
    spec: &LoadSpec,
    n: u64,
    blob: &Blob,
) -> anyhow::Result<()> {
    let url = format!("{}/files/{}/load/{n}", spec.target, spec.repo);
    let response = http
        .put(&url)
        .body(blob.bytes.clone())
        .send()
        .await
        .context("PUT file")?;
    expect_status(response.status(), &[200, 201], "PUT", &url)
}

/// Creates an Arca repository unless it exists.
pub async fn create_arca_repo(
    http: &reqwest::Client,
    target: &str,
    name: &str,
    format: &str,
) -> anyhow::Result<()> {
    let url = format!("{target}/api/v1/repos");
    let response = http
        .post(&url)
        .json(&serde_json::json!({"name": name, "format": format}))
        .send()
        .await
        .context("create repository")?;
    expect_status(response.status(), &[201, 409], "POST", &url)
}

/// Samples a process's resident set size while a workload runs.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Resident set size of `pid` in bytes, from `/proc`.
fn rss_bytes(pid: u32) -> Option<u64> {
    arca_chaos::process::memory_of(pid).ok().map(|(rss, _)| rss)
}

impl RssSampler {
    /// Starts sampling every 10 ms.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or_default()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let peak = peak.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Some(rss) = rss_bytes(pid) {
                                peak.fetch_max(rss, Ordering::Relaxed);
                            }
                        }
                        _ = stopped.changed() => return,
                    }
                }
            }
        });
        Self { peak, stop, task }
    }

    /// Stops sampling; the highest RSS seen, in bytes.
    pub async fn finish(self) -> u64 {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("4KiB").ok(), Some(4096));
        assert_eq!(parse_size("16m").ok(), Some(16 << 20));
        assert_eq!(parse_size("1 GiB").ok(), Some(1 << 30));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(1000), "1000 B");
    }

    #[test]
    fn workloads_round_trip_their_names() {
        for workload in Workload::ALL {
            assert_eq!(workload.name().parse::<Workload>().ok(), Some(workload));
        }
        assert!("blob-pushh".parse::<Workload>().is_err());
    }
}
