//! An in-process node on loopback port 0 with a temporary data directory, and raw-HTTP helpers
//! for requests a URL library would normalize away.

#![allow(dead_code)]

pub mod oci;
pub mod upstream_proxy;

use std::time::{Duration, Instant};

use arca_node::storage::chunker::ChunkerConfig;
use arca_node::{NodeConfig, RunningNode};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TestNode {
    pub dir: TempDir,
    pub config: NodeConfig,
    node: Option<RunningNode>,
    pub base: String,
    /// Signed in as the bootstrap account `admin` (cluster-admin).
    pub http: reqwest::Client,
    /// Without credentials.
    pub anon: reqwest::Client,
    /// The bootstrap password (from `<data-dir>/initial-admin-password`).
    pub admin_password: String,
}

/// The `Authorization` value of `user:secret`.
pub fn basic(user: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// A client that sends `authorization` on every request.
pub fn client_with(authorization: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        authorization.parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// The bootstrap password a node wrote into its data directory.
pub fn admin_password(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("initial-admin-password");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Small chunks, so that tests exercise multi-chunk blobs with kilobytes of data.
pub fn small_chunks() -> ChunkerConfig {
    ChunkerConfig {
        min_size: 4 * 1024,
        avg_size: 16 * 1024,
        max_size: 64 * 1024,
    }
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), adjust).await
    }

    /// Starts a node on `dir/data`, which may already hold a data directory.
    pub async fn start_in(dir: TempDir, adjust: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = NodeConfig {
            data_dir: dir.path().join("data"),
            http_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
            chunking: small_chunks(),
            ..NodeConfig::default()
        };
        adjust(&mut config);
        let node = must_start(config.clone()).await;
        let base = format!("http://{}", node.http_addr);
        let admin_password = admin_password(&config.data_dir);
        Self {
            dir,
            config,
            node: Some(node),
            base,
            http: client_with(&basic("admin", &admin_password)),
            anon: reqwest::Client::new(),
            admin_password,
        }
    }

    /// Starts a node with settings given as `ARCA_*` variables (`("OCI__MAX_UPLOAD_SESSIONS",
    /// "3")`), so a test can name a setting an older build does not know (it is ignored there).
    pub async fn start_with_env(vars: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (format!("ARCA_{k}"), v.to_string()))
            .collect();
        let loaded = NodeConfig::load(None, env).expect("configuration");
        Self::start_with(move |config| {
            let (data_dir, http, grpc, chunking) = (
                config.data_dir.clone(),
                config.http_addr.clone(),
                config.grpc_addr.clone(),
                config.chunking,
            );
            *config = loaded;
            config.data_dir = data_dir;
            config.http_addr = http;
            config.grpc_addr = grpc;
            config.chunking = chunking;
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn node(&self) -> &RunningNode {
        self.node.as_ref().expect("node is running")
    }

    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Stops the node and starts it again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let node = must_start(self.config.clone()).await;
        self.base = format!("http://{}", node.http_addr);
        self.node = Some(node);
    }

    pub async fn create_repo(&self, name: &str, immutable: bool) {
        let response = self
            .http
            .post(self.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": name, "format": "generic", "immutable": immutable}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201, "create repo {name}");
    }

    /// Creates a repository of format `oci`.
    pub async fn create_oci_repo(&self, name: &str, immutable: bool) {
        let response = self
            .http
            .post(self.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": name, "format": "oci", "immutable": immutable}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201, "create oci repo {name}");
    }

    /// How many chunks this node stores (referenced or not).
    pub fn stored_chunks(&self) -> usize {
        self.node()
            .service
            .chunks
            .entries()
            .expect("chunk entries")
            .len()
    }

    pub async fn put(&self, repo: &str, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/files/{repo}/{path}")))
            .body(body)
            .send()
            .await
            .expect("put")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("get")
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// A counter or gauge from `/metrics`, summed over its label sets (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// An access token of `admin` with `scopes`: (id, secret).
    pub async fn create_token(&self, scopes: &[&str]) -> (String, String) {
        let response = self
            .http
            .post(self.url("/api/v1/tokens"))
            .json(&serde_json::json!({ "scopes": scopes }))
            .send()
            .await
            .expect("create token");
        assert_eq!(response.status(), 200, "create token {scopes:?}");
        let body: serde_json::Value = response.json().await.expect("json");
        (
            body["id"].as_str().expect("id").to_string(),
            body["token"].as_str().expect("token").to_string(),
        )
    }

    /// The `Authorization` value of the bootstrap account.
    pub fn admin_auth(&self) -> String {
        basic("admin", &self.admin_password)
    }

    /// Sends raw bytes as an HTTP/1.1 request (signed in as `admin`: the header goes in
    /// before `Host:`) and returns (status, body).
    pub async fn raw(&self, request: &[u8]) -> (u16, String) {
        let text = String::from_utf8_lossy(request);
        let signed = text.replacen(
            "\r\nHost:",
            &format!("\r\nAuthorization: {}\r\nHost:", self.admin_auth()),
            1,
        );
        raw_request(self.node().http_addr, signed.as_bytes()).await
    }
}

/// Starts a node, retrying while the previous instance in this process releases the database.
async fn must_start(config: NodeConfig) -> RunningNode {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match arca_node::start(config.clone()).await {
            Ok(node) => return node,
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("lock") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("start node: {e:#}"),
        }
    }
}

pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Polls `condition` until it holds, failing the test after `timeout`.
pub async fn must_wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `probe` until it answers `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    assert!(body["message"].is_string(), "error has a message: {body}");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}
