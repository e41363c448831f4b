//! Driving the OCI registry the way a client does: blobs, manifests, images, error bodies.

use reqwest::Response;
use serde_json::{json, Value};

use super::{bytes, sha256_hex, TestNode};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// The status and the codes of an OCI error body, after checking the body has the spec's
/// shape (`{"errors":[{"code","message",…}]}`) and that client errors use the spec's codes.
pub async fn oci_errors(response: Response) -> (u16, Vec<String>) {
    let status = response.status().as_u16();
    let version = response
        .headers()
        .get("docker-distribution-api-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(version.as_deref(), Some("registry/2.0"), "version header");
    let text = response.text().await.expect("body");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("OCI error body is JSON: {text:?}"));
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"));
    assert!(!errors.is_empty(), "{body}");
    if (400..500).contains(&status) {
        let parsed: Result<oci_spec::distribution::ErrorResponse, _> =
            serde_json::from_value(body.clone());
        assert!(parsed.is_ok(), "a 4xx body oci-spec cannot parse: {body}");
    }
    let codes = errors
        .iter()
        .map(|e| {
            assert!(e["message"].is_string(), "error has a message: {e}");
            e["code"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    (status, codes)
}

/// One expected error: status and a single code.
pub async fn oci_error(response: Response) -> (u16, String) {
    let (status, codes) = oci_errors(response).await;
    (status, codes.into_iter().next().unwrap_or_default())
}

/// Uploads a blob in one `POST ?digest=`; returns its digest.
pub async fn push_blob(node: &TestNode, name: &str, data: &[u8]) -> String {
    let digest = digest(data);
    let response = node
        .http
        .post(node.url(&format!("/v2/{name}/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("post blob");
    assert_eq!(response.status(), 201, "push blob to {name}");
    digest
}

pub async fn put_manifest(
    node: &TestNode,
    name: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    node.http
        .put(node.url(&format!("/v2/{name}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("put manifest")
}

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(data), "size": data.len()})
}

/// An OCI image manifest over `config` and `layers`.
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    });
    serde_json::to_vec_pretty(&manifest).expect("json")
}

/// An image's parts: config, layers, and the manifest bytes.
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(seed: u64, layer_sizes: &[usize]) -> Self {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [format!("SEED={seed}")]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .expect("json");
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| bytes(*size, seed * 100 + i as u64))
            .collect();
        let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let manifest = image_manifest(&config, &refs);
        Self {
            config,
            layers,
            manifest,
        }
    }

    pub fn digest(&self) -> String {
        digest(&self.manifest)
    }

    /// Pushes the blobs, then the manifest under `reference`; asserts 201.
    pub async fn push(&self, node: &TestNode, name: &str, reference: &str) {
        push_blob(node, name, &self.config).await;
        for layer in &self.layers {
            push_blob(node, name, layer).await;
        }
        let response = put_manifest(node, name, reference, OCI_MANIFEST, &self.manifest).await;
        assert_eq!(response.status(), 201, "push manifest {name}:{reference}");
    }
}
