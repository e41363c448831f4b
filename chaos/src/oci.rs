//! OCI images in the workload: pushing, deleting and pulling tags of the `oci` repository
//! [`OCI_REPO`] through the registry API at `/v2/`, recorded in the [`History`] like file
//! operations.
//!
//! A tag is a key, `oci:img/<image>:<tag>`; version `v` of it is an image manifest whose bytes
//! (and those of its config and its one layer) are a pure function of `(seed, key, v)`, so the
//! recorded content of a version is the sha256 of the manifest bytes (its digest) and the
//! checker's file logic applies unchanged. Client `c` owns image `img/c{c}` and its tags.

use crate::content::{content, sha256_hex};
use crate::history::{History, Op, OpKind, Outcome};
use crate::workload::{classify_write, region_name, transport_outcome};

/// The `oci` repository.
pub const OCI_REPO: &str = "img";
/// Every OCI key starts with this.
pub const OCI_KEY_PREFIX: &str = "oci:";
/// OCI keys pushed to mirrors start with this (they must never exist anywhere).
pub const OCI_MIRROR_PROBE_PREFIX: &str = "oci:img/mirror-probe-";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// The key of `tag` of image `<OCI_REPO>/<image>`.
pub fn key(image: &str, tag: &str) -> String {
    format!("{OCI_KEY_PREFIX}{OCI_REPO}/{image}:{tag}")
}

/// The registry name (`img/<image>`) and tag of an OCI key; `None` for a file key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(OCI_KEY_PREFIX)?.rsplit_once(':')
}

pub fn is_oci_key(key: &str) -> bool {
    key.starts_with(OCI_KEY_PREFIX)
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// One version of a tag: the manifest and the two blobs it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

/// The image pushed as `version` of `key`.
pub fn image(seed: u64, key: &str, version: u64) -> Image {
    let layer = content(seed, &format!("{key}#layer"), version);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        "config": {"Labels": {
            "org.arca.chaos.key": key,
            "org.arca.chaos.seed": seed.to_string(),
            "org.arca.chaos.version": version.to_string(),
        }},
    }))
    .unwrap_or_default();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest(&layer), "size": layer.len()}],
        "annotations": {"org.arca.chaos.key": key, "org.arca.chaos.version": version.to_string()},
    }))
    .unwrap_or_default();
    Image {
        manifest,
        config,
        layer,
    }
}

/// The digests of the blobs a manifest references (config first, then layers).
pub fn referenced_blobs(manifest: &[u8]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let mut blobs = vec![value["config"]["digest"].as_str()?.to_string()];
    for layer in value["layers"].as_array()? {
        blobs.push(layer["digest"].as_str()?.to_string());
    }
    Some(blobs)
}

/// The Arca code (`detail.arca_code`) of a registry error body, else its spec code, else the
/// start of the body.
pub async fn error_detail(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let first = &body["errors"][0];
    if let Some(code) = first["detail"]["arca_code"].as_str() {
        return code.to_string();
    }
    if let Some(code) = first["code"].as_str() {
        return code.to_string();
    }
    text.chars().take(120).collect()
}

/// A step's answer when it did not succeed: outcome, status, detail.
type StepError = (Outcome, Option<u16>, String);

fn absolute(base_url: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base_url}{location}")
    }
}

/// Pushes a blob: `POST /v2/<name>/blobs/uploads/`, then `PUT <Location>?digest=`.
async fn upload_blob(
    http: &reqwest::Client,
    base_url: &str,
    name: &str,
    data: &[u8],
) -> Result<(), StepError> {
    let response = http
        .post(format!("{base_url}/v2/{name}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| (transport_outcome(&e), None, e.to_string()))?;
    let status = response.status().as_u16();
    if status != 202 {
        return Err((Outcome::Failed, Some(status), error_detail(response).await));
    }
    let Some(location) = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
    else {
        return Err((Outcome::Failed, Some(status), "no Location".into()));
    };
    let location = absolute(base_url, location);
    let separator = if location.contains('?') { '&' } else { '?' };
    let response = http
        .put(format!("{location}{separator}digest={}", digest(data)))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .map_err(|e| (transport_outcome(&e), None, e.to_string()))?;
    let status = response.status().as_u16();
    if status != 201 {
        return Err((Outcome::Failed, Some(status), error_detail(response).await));
    }
    Ok(())
}

/// Pushes `image` as `tag` of `name`: config, layer, then the manifest. The outcome is the
/// manifest PUT's; a blob that could not be pushed fails the push before the tag is touched.
/// The detail names the step that was refused (`config blob: <code>`, `layer blob: …`,
/// `manifest: …`) and the steps accepted before it: a mirror must refuse the first one.
pub async fn push(
    http: &reqwest::Client,
    base_url: &str,
    name: &str,
    tag: &str,
    image: &Image,
) -> (Outcome, Option<u16>, String) {
    let mut accepted = Vec::new();
    for (what, data) in [("config", &image.config), ("layer", &image.layer)] {
        match upload_blob(http, base_url, name, data).await {
            Ok(()) => accepted.push(what),
            Err((_, status, detail)) => {
                // The manifest was never sent: the tag is untouched whatever the blob's answer.
                let mut detail = format!("{what} blob: {detail}");
                if !accepted.is_empty() {
                    detail.push_str(&format!(" (after the {accepted:?} blob was accepted)"));
                }
                return (Outcome::Failed, status, detail);
            }
        }
    }
    let result = http
        .put(format!("{base_url}/v2/{name}/manifests/{tag}"))
        .header(reqwest::header::CONTENT_TYPE, MANIFEST_TYPE)
        .body(image.manifest.clone())
        .send()
        .await;
    let (outcome, status, detail) = classify_write(result, error_detail).await;
    let detail = match (outcome, status) {
        (Outcome::Ok, _) => detail,
        (_, Some(_)) => format!("manifest: {detail} (after the {accepted:?} blobs were accepted)"),
        (_, None) => format!("manifest: {detail}"),
    };
    (outcome, status, detail)
}

/// The detail of a push a mirror refused as it must: at its first step.
pub const MIRROR_REFUSAL: &str = "config blob: READ_ONLY_MIRROR";

/// Where an operation was sent.
pub type Target = (usize, u64, String);

#[allow(clippy::too_many_arguments)]
pub async fn record_push(
    http: &reqwest::Client,
    history: &History,
    seed: u64,
    client: u32,
    kind: OpKind,
    key: &str,
    version: u64,
    (region, node, url): Target,
) -> Outcome {
    let Some((name, tag)) = parse_key(key) else {
        return Outcome::Failed;
    };
    let image = image(seed, key, version);
    let sha = sha256_hex(&image.manifest);
    let start_ms = history.now_ms();
    let (outcome, status, detail) = push(http, &url, name, tag, &image).await;
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

/// `DELETE /v2/<name>/manifests/<tag>`: Arca removes the tag (`202`), leaving the manifest and
/// blobs (an unknown tag is `404 MANIFEST_UNKNOWN`, recorded as failed).
pub async fn record_delete(
    http: &reqwest::Client,
    history: &History,
    client: u32,
    key: &str,
    (region, node, url): Target,
) {
    let Some((name, tag)) = parse_key(key) else {
        return;
    };
    let start_ms = history.now_ms();
    let result = http
        .delete(format!("{url}/v2/{name}/manifests/{tag}"))
        .send()
        .await;
    let (outcome, status, detail) = classify_write(result, error_detail).await;
    history.push(Op {
        id: 0,
        client,
        kind: OpKind::OciDelete,
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

/// What reading a blob by digest gave.
pub enum BlobRead {
    /// 200 with these bytes' sha256 (hex).
    Read(String),
    /// Anything else.
    Failed(String),
}

pub async fn read_blob(http: &reqwest::Client, base_url: &str, name: &str, blob: &str) -> BlobRead {
    match http
        .get(format!("{base_url}/v2/{name}/blobs/{blob}"))
        .send()
        .await
    {
        Ok(response) if response.status().as_u16() == 200 => match response.bytes().await {
            Ok(body) => BlobRead::Read(sha256_hex(&body)),
            Err(error) => BlobRead::Failed(format!("body: {error}")),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            BlobRead::Failed(format!("{status} {}", error_detail(response).await))
        }
        Err(error) => BlobRead::Failed(error.to_string()),
    }
}

/// `GET /v2/<name>/manifests/<tag>`.
pub async fn get_manifest(
    http: &reqwest::Client,
    base_url: &str,
    name: &str,
    reference: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    http.get(format!("{base_url}/v2/{name}/manifests/{reference}"))
        .header(reqwest::header::ACCEPT, MANIFEST_TYPE)
        .send()
        .await
}

/// Pulls a tag: the manifest (its sha256 is what the checker judges, like a file read), then
/// every blob it references by digest. A blob whose bytes do not have its digest is recorded
/// in `blob_mismatch`; a blob that could not be read makes the pull failed.
pub async fn record_pull(
    http: &reqwest::Client,
    history: &History,
    client: u32,
    key: &str,
    (region, node, url): Target,
) {
    let Some((name, tag)) = parse_key(key) else {
        return;
    };
    let start_ms = history.now_ms();
    let mut blob_mismatch = None;
    let (outcome, status, sha, detail) = match get_manifest(http, &url, name, tag).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200 => match response.bytes().await {
                    Ok(body) => {
                        let sha = sha256_hex(&body);
                        let mut outcome = Outcome::Ok;
                        let mut detail = String::new();
                        match referenced_blobs(&body) {
                            None => {
                                outcome = Outcome::Failed;
                                detail = "the manifest does not parse".into();
                            }
                            Some(blobs) => {
                                for blob in blobs {
                                    match read_blob(http, &url, name, &blob).await {
                                        BlobRead::Read(read)
                                            if Some(read.as_str())
                                                == blob.strip_prefix("sha256:") => {}
                                        BlobRead::Read(read) => {
                                            blob_mismatch = Some(format!(
                                                "blob {blob} read back with sha256:{read}"
                                            ));
                                            break;
                                        }
                                        BlobRead::Failed(error) => {
                                            outcome = Outcome::Failed;
                                            detail = format!("blob {blob}: {error}");
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                        (outcome, Some(status), Some(sha), detail)
                    }
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
        kind: OpKind::OciPull,
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
        blob_mismatch,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = key("c3", "t1");
        assert_eq!(key, "oci:img/c3:t1");
        assert_eq!(parse_key(&key), Some(("img/c3", "t1")));
        assert_eq!(parse_key("mut/c3-k1"), None);
    }

    #[test]
    fn an_image_is_a_function_of_seed_key_and_version_and_references_its_blobs() {
        let a = image(1, "oci:img/c0:t0", 1);
        assert_eq!(a, image(1, "oci:img/c0:t0", 1));
        assert_ne!(a.manifest, image(1, "oci:img/c0:t0", 2).manifest);
        assert_ne!(a.manifest, image(2, "oci:img/c0:t0", 1).manifest);
        assert_ne!(a.manifest, image(1, "oci:img/c0:t1", 1).manifest);
        assert_eq!(
            referenced_blobs(&a.manifest).expect("manifest parses"),
            vec![digest(&a.config), digest(&a.layer)]
        );
    }
}

/// Tags of its image per client.
const OCI_TAGS: u64 = 4;

/// The OCI registry's part of the workload: image pushes, tag deletes, a push to a mirror now
/// and then, pulls.
#[derive(Default)]
pub struct ImagesPart {
    keys: crate::workload::KeyRegistry,
}

impl crate::workload::WorkloadPart for ImagesPart {
    fn format(&self) -> &'static str {
        "oci"
    }

    fn share(&self) -> u32 {
        28
    }

    fn client(&self, client: u32) -> Box<dyn crate::workload::ClientPart> {
        Box::new(ImagesClient {
            keys: self.keys.clone(),
            image: format!("c{client}"),
            versions: vec![0u64; OCI_TAGS as usize],
            probes: 0,
        })
    }
}

struct ImagesClient {
    keys: crate::workload::KeyRegistry,
    image: String,
    versions: Vec<u64>,
    probes: u64,
}

impl crate::workload::ClientPart for ImagesClient {
    fn step<'a>(
        &'a mut self,
        step: &'a crate::workload::Step<'a>,
        roll: u32,
        rng: &'a mut rand::rngs::StdRng,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.run(step, roll, rng))
    }
}

impl ImagesClient {
    async fn run(
        &mut self,
        step: &crate::workload::Step<'_>,
        roll: u32,
        rng: &mut rand::rngs::StdRng,
    ) {
        use crate::workload::{pick_mirror_node, pick_node, pick_primary_node};
        use rand::Rng;
        let (http, history, endpoints, seed, client) = (
            step.http,
            step.history,
            step.endpoints,
            step.seed,
            step.client,
        );
        let has_mirror = !endpoints.mirrors().is_empty();
        match roll {
            0..13 => {
                let index = rng.random_range(0..OCI_TAGS) as usize;
                self.versions[index] += 1;
                let key = key(&self.image, &format!("t{index}"));
                self.keys.add(&key);
                let target = pick_primary_node(endpoints, rng);
                let version = self.versions[index];
                record_push(
                    http,
                    history,
                    seed,
                    client,
                    OpKind::OciPush,
                    &key,
                    version,
                    target,
                )
                .await;
            }
            13..17 => {
                let index = rng.random_range(0..OCI_TAGS);
                let key = key(&self.image, &format!("t{index}"));
                record_delete(
                    http,
                    history,
                    client,
                    &key,
                    pick_primary_node(endpoints, rng),
                )
                .await;
            }
            17..18 if has_mirror => {
                let target = pick_mirror_node(endpoints, rng);
                self.probes += 1;
                let key = format!("{OCI_MIRROR_PROBE_PREFIX}c{client}:p{}", self.probes);
                let kind = OpKind::MirrorWrite;
                record_push(http, history, seed, client, kind, &key, 1, target).await;
            }
            _ => {
                let up = endpoints.up();
                if let (Some(key), false) = (self.keys.pick(rng), up.is_empty()) {
                    let region = up[rng.random_range(0..up.len())];
                    let (node, url) = pick_node(endpoints, region, rng);
                    record_pull(http, history, client, &key, (region, node, url)).await;
                }
            }
        }
    }
}
