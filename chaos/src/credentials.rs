//! Signing in to a cluster the harness started: the bootstrap account's password is in the
//! first node's data directory (`initial-admin-password`); the harness exchanges it for a
//! session token that every client of this process sends (see [`authorized`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::{anyhow, Context};

static TOKEN: RwLock<Option<String>> = RwLock::new(None);

/// The token that works at an address (`host:port` of a node's HTTP, gRPC or replication
/// port): tests of one process run clusters side by side, each with its own accounts.
static BY_ADDRESS: RwLock<BTreeMap<String, String>> = RwLock::new(BTreeMap::new());

/// Records that `token` works at each of `addrs` (a later cluster on a reused port wins).
pub fn register(addrs: impl IntoIterator<Item = String>, token: &str) {
    if let Ok(mut map) = BY_ADDRESS.write() {
        for addr in addrs {
            map.insert(addr, token.to_string());
        }
    }
}

/// The token registered for `addr` (`host:port`, or a URL of one), if any.
pub fn registered(addr: &str) -> Option<String> {
    let addr = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    BY_ADDRESS.read().ok()?.get(addr).cloned()
}

/// The token for `addr`: the one registered for it, else this process's.
pub fn token_for(addr: &str) -> Option<String> {
    registered(addr).or_else(token)
}

/// The token clients of this process send (the last cluster signed in to).
pub fn token() -> Option<String> {
    TOKEN.read().ok().and_then(|t| t.clone())
}

pub fn set_token(token: &str) {
    if let Ok(mut slot) = TOKEN.write() {
        *slot = Some(token.to_string());
    }
}

/// The bootstrap password of a data directory, if this node created the first account.
pub fn admin_password(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join("initial-admin-password"))
        .ok()
        .map(|p| p.trim().to_string())
}

/// Signs in at `base_url` as `admin` with the password in `data_dir`: a session token.
pub async fn admin_login(base_url: &str, data_dir: &Path) -> anyhow::Result<String> {
    let password = admin_password(data_dir)
        .ok_or_else(|| anyhow!("no initial-admin-password in {}", data_dir.display()))?;
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .post(format!("{base_url}/api/v1/auth/login"))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .context("sign in")?;
    anyhow::ensure!(
        response.status().is_success(),
        "sign in as admin: {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    body["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no token in the login answer"))
}

/// A client builder that sends `token` (or this process's, see [`token`]) on every request.
pub fn authorized(builder: reqwest::ClientBuilder, token: Option<&str>) -> reqwest::ClientBuilder {
    let token = token.map(str::to_string).or_else(self::token);
    let Some(token) = token else {
        return builder;
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder.default_headers(headers)
}
