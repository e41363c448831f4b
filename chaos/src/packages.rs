//! Package formats in the workload (PyPI, npm, Maven, cargo, Helm, NuGet): one client loop for all of them, and what the
//! checker, the final reads and the summary need to know of each.
//!
//! A package file is a key `<format>:<repo>/…`, written like a key of an immutable repository:
//! version `v` of the key is a file whose payload is a pure function of `(seed, key, v)`;
//! version 1 is the release, a later version the same release with other bytes, which the
//! server must refuse. A resolve reads the format's index document on any node of any region
//! and downloads the file it lists, checking the digest the index lists. A publish to a mirror
//! must be refused with a 403 whose body names the read-only mirror (twine, npm, Maven,
//! cargo and helm's uploaders do not resend a body to a redirect).

use futures::future::BoxFuture;

use crate::content::sha256_hex;
use crate::history::{History, Op, OpKind, Outcome};
use crate::workload::{
    classify_write, pick_mirror_node, pick_node, pick_primary_node, region_name, ClientPart,
    KeyRegistry, Step, WorkloadPart,
};

/// What a refused publish to a mirror is recorded with (the body names the mirror).
pub const MIRROR_REFUSAL: &str = "READ_ONLY_MIRROR";

/// What a resolve saw: outcome, status, the state read (`Some(sha256)` of the file, or
/// `index-mismatch:<listed>` when the index lists another digest) and a detail.
pub type Resolved = (Outcome, Option<u16>, Option<String>, String);

/// What the workload knows of a package format besides its requests.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The repository format (`pypi`), also the key prefix before `:`.
    pub format: &'static str,
    /// The repository the workload creates for it.
    pub repo: &'static str,
    /// Every key of the format starts with this.
    pub key_prefix: &'static str,
    /// Keys only ever published to mirrors start with this.
    pub mirror_probe_prefix: &'static str,
    /// The part's weight in the workload's mix.
    pub share: u32,
}

/// One package format of the workload.
pub trait PackageFormat: Send + Sync {
    fn spec(&self) -> Spec;
    fn format(&self) -> &'static str {
        self.spec().format
    }
    fn repo(&self) -> &'static str {
        self.spec().repo
    }
    fn key_prefix(&self) -> &'static str {
        self.spec().key_prefix
    }
    fn mirror_probe_prefix(&self) -> &'static str {
        self.spec().mirror_probe_prefix
    }
    fn share(&self) -> u32 {
        self.spec().share
    }
    /// The key of release `release` of client `client`'s package.
    fn key(&self, client: u32, release: u64) -> String;
    /// The key of client `client`'s `probe`th publish to a mirror.
    fn mirror_probe_key(&self, client: u32, probe: u64) -> String;
    /// The URL path a key's file is served at (final reads).
    fn file_path(&self, key: &str) -> Option<String>;
    /// The file of content version `version` of `key`, and the publish request that sends it
    /// to the node at `url`.
    fn publish(
        &self,
        http: &reqwest::Client,
        url: &str,
        seed: u64,
        key: &str,
        version: u64,
    ) -> (Vec<u8>, reqwest::RequestBuilder);
    /// Resolves `key` as the format's client does: the index document, then the file it lists.
    fn resolve<'a>(
        &'a self,
        http: &'a reqwest::Client,
        url: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Resolved>;
}

/// Every package format of the workload.
pub fn formats() -> [&'static dyn PackageFormat; 6] {
    [
        &crate::pypi::Pypi,
        &crate::npm::Npm,
        &crate::maven::Maven,
        &crate::cargo::Cargo,
        &crate::helm::Helm,
        &crate::nuget::Nuget,
    ]
}

/// The package format `key` belongs to.
pub fn format_of(key: &str) -> Option<&'static dyn PackageFormat> {
    formats()
        .into_iter()
        .find(|format| key.starts_with(format.key_prefix()))
}

pub fn is_package_key(key: &str) -> bool {
    format_of(key).is_some()
}

pub fn is_mirror_probe(key: &str) -> bool {
    formats()
        .into_iter()
        .any(|format| key.starts_with(format.mirror_probe_prefix()))
}

/// A key without its format's prefix, as the node names it in a divergent write's summary.
pub fn unprefixed(key: &str) -> Option<&str> {
    format_of(key).and_then(|format| key.strip_prefix(format.key_prefix()))
}

/// The URL path of a package key's file.
pub fn file_path(key: &str) -> Option<String> {
    format_of(key).and_then(|format| format.file_path(key))
}

/// A refusal's detail: [`MIRROR_REFUSAL`] when the body says a mirror refused, else its start.
pub async fn detail(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    if text.contains("read-only mirror") {
        MIRROR_REFUSAL.to_string()
    } else {
        text.chars().take(120).collect()
    }
}

/// Reads an index document (a packument, a project page, an index file): `Ok(None)` for a
/// `404` (nothing is listed), the failure as a [`Resolved`] otherwise.
pub async fn read_index(request: reqwest::RequestBuilder) -> Result<Option<String>, Resolved> {
    match request.send().await {
        Ok(response) if response.status() == 404 => Ok(None),
        Ok(response) if response.status() == 200 => match response.text().await {
            Ok(text) => Ok(Some(text)),
            Err(error) => Err((Outcome::Failed, Some(200), None, error.to_string())),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            Err((Outcome::Failed, Some(status), None, detail(response).await))
        }
        Err(error) => Err((
            crate::workload::transport_outcome(&error),
            None,
            None,
            error.to_string(),
        )),
    }
}

/// [`read_index`] of a JSON document; a body that is not JSON is a failed read.
pub async fn read_json(
    request: reqwest::RequestBuilder,
) -> Result<Option<serde_json::Value>, Resolved> {
    match read_index(request).await? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| (Outcome::Failed, Some(200), None, error.to_string())),
        None => Ok(None),
    }
}

/// Downloads the file an index listed and compares its `digest` (computed by `digest_of`) with
/// the listed one.
pub async fn fetch_listed(
    http: &reqwest::Client,
    file_url: &str,
    listed: &str,
    digest_of: impl FnOnce(&[u8]) -> String,
) -> Resolved {
    match http.get(file_url).send().await {
        Ok(response) if response.status() == 200 => match response.bytes().await {
            Ok(body) => {
                let sha = sha256_hex(&body);
                let digest = digest_of(&body);
                if digest == listed {
                    (Outcome::Ok, Some(200), Some(sha), String::new())
                } else {
                    let state = format!("index-mismatch:{listed}");
                    (
                        Outcome::Ok,
                        Some(200),
                        Some(state),
                        format!("file is {digest}"),
                    )
                }
            }
            Err(error) => (Outcome::Failed, Some(200), None, error.to_string()),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            (Outcome::Failed, Some(status), None, detail(response).await)
        }
        Err(error) => (
            crate::workload::transport_outcome(&error),
            None,
            None,
            error.to_string(),
        ),
    }
}

/// Publishes version `version` of `key` and records it.
pub async fn record_publish(
    format: &dyn PackageFormat,
    step: &Step<'_>,
    kind: OpKind,
    key: &str,
    version: u64,
    (region, node, url): (usize, u64, String),
) -> Outcome {
    let history = step.history;
    let (data, request) = format.publish(step.http, &url, step.seed, key, version);
    let start_ms = history.now_ms();
    let (outcome, status, detail) = classify_write(request.send().await, detail).await;
    history.push(Op {
        id: 0,
        client: step.client,
        kind,
        key: key.to_string(),
        version: Some(version),
        sha256: Some(sha256_hex(&data)),
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

/// Resolves `key` and records it as a read. A package or file the index does not list reads as
/// absent; a listed digest that is not the downloaded file's is recorded as the state
/// `index-mismatch:<listed>` (never acceptable).
pub async fn record_resolve(
    format: &dyn PackageFormat,
    http: &reqwest::Client,
    history: &History,
    client: u32,
    key: &str,
    (region, node, url): (usize, u64, String),
) {
    let start_ms = history.now_ms();
    let (outcome, status, sha, detail) = format.resolve(http, &url, key).await;
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

/// A package format's part of the workload: publishes (new releases, retries, overwrite
/// attempts), a publish to a mirror now and then, resolves.
pub struct PackagesPart {
    format: &'static dyn PackageFormat,
    keys: KeyRegistry,
}

impl PackagesPart {
    pub fn new(format: &'static dyn PackageFormat) -> Self {
        Self {
            format,
            keys: KeyRegistry::default(),
        }
    }
}

impl WorkloadPart for PackagesPart {
    fn format(&self) -> &'static str {
        self.format.format()
    }

    fn share(&self) -> u32 {
        self.format.share()
    }

    fn client(&self, _client: u32) -> Box<dyn ClientPart> {
        Box::new(PackagesClient {
            format: self.format,
            keys: self.keys.clone(),
            releases: Vec::new(),
            probes: 0,
        })
    }
}

struct PackagesClient {
    format: &'static dyn PackageFormat,
    keys: KeyRegistry,
    /// The next content version of each release's key (1 is the release itself).
    releases: Vec<u64>,
    probes: u64,
}

impl ClientPart for PackagesClient {
    fn step<'a>(
        &'a mut self,
        step: &'a Step<'a>,
        roll: u32,
        rng: &'a mut rand::rngs::StdRng,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.run(step, roll, rng))
    }
}

impl PackagesClient {
    async fn run(&mut self, step: &Step<'_>, roll: u32, rng: &mut rand::rngs::StdRng) {
        use rand::Rng;
        let endpoints = step.endpoints;
        let has_mirror = !endpoints.mirrors().is_empty();
        // Of every 12 rolls of the part's share: 5 publish, 1 probes a mirror, the rest resolve.
        match roll * 12 / self.format.share().max(1) {
            0..5 => {
                // A new release most of the time; otherwise a retry or an overwrite attempt
                // of an earlier one (its next content version).
                let reuse = !self.releases.is_empty() && rng.random_range(0..3u32) == 0;
                let release = if reuse {
                    rng.random_range(0..self.releases.len())
                } else {
                    self.releases.push(1);
                    self.releases.len() - 1
                };
                let key = self.format.key(step.client, release as u64);
                self.keys.add(&key);
                // A retry resends version 1 until it was acknowledged once; after that a
                // reuse is an overwrite attempt with the next version.
                let version = self.releases[release];
                let target = pick_primary_node(endpoints, rng);
                let outcome = record_publish(
                    self.format,
                    step,
                    OpKind::PutImmutable,
                    &key,
                    version,
                    target,
                )
                .await;
                if outcome == Outcome::Ok {
                    self.releases[release] += 1;
                }
            }
            5..6 if has_mirror => {
                self.probes += 1;
                let key = self.format.mirror_probe_key(step.client, self.probes);
                let target = pick_mirror_node(endpoints, rng);
                record_publish(self.format, step, OpKind::MirrorWrite, &key, 1, target).await;
            }
            _ => {
                let up = endpoints.up();
                if let (Some(key), false) = (self.keys.pick(rng), up.is_empty()) {
                    let region = up[rng.random_range(0..up.len())];
                    let (node, url) = pick_node(endpoints, region, rng);
                    let target = (region, node, url);
                    record_resolve(
                        self.format,
                        step.http,
                        step.history,
                        step.client,
                        &key,
                        target,
                    )
                    .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_owns_its_keys_and_probes() {
        for format in formats() {
            let key = format.key(3, 7);
            assert_eq!(format_of(&key).map(|f| f.format()), Some(format.format()));
            assert!(!is_mirror_probe(&key), "{key}");
            let probe = format.mirror_probe_key(3, 1);
            assert!(is_mirror_probe(&probe), "{probe}");
            assert!(is_package_key(&probe), "{probe}");
            assert!(file_path(&key).is_some(), "{key}");
        }
        assert!(format_of("mutable/c0/k1").is_none());
        assert!(format_of("oci:img/c0:t1").is_none());
    }
}
