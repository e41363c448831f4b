//! A small HTTP client for Arca's API: URL building and error decoding.

use anyhow::{anyhow, Context};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Characters escaped in a path segment (everything URL-special except the `/` we split on).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

pub struct Client {
    base: String,
    pub http: reqwest::Client,
}

#[derive(Deserialize)]
struct ApiError {
    code: String,
    message: String,
}

impl Client {
    pub fn new(server: &str) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).with_context(|| format!("invalid --server URL {server:?}"))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("arca-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("build HTTP client")?;
        Ok(Self { base, http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The URL of a file, with its path percent-encoded segment by segment.
    pub fn file_url(&self, repo: &str, path: &str) -> String {
        self.url(&format!(
            "/files/{}/{}",
            utf8_percent_encode(repo, SEGMENT),
            encode_path(path)
        ))
    }

    /// Turns a non-success response into an error carrying the server's code and message.
    pub async fn check(response: Response) -> anyhow::Result<Response> {
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiError>(&text) {
            Ok(error) => Err(anyhow!(
                "{} ({}): {}",
                error.code,
                status.as_u16(),
                error.message
            )),
            Err(_) => Err(anyhow!("HTTP {status}: {}", text.trim())),
        }
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .with_context(|| format!("GET {}", self.url(path)))?;
        Ok(Self::check(response).await?.json().await?)
    }
}

/// Percent-encodes an artifact path segment by segment, keeping the `/` separators.
pub fn encode_path(path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    segments.join("/")
}

/// Splits `REPO/PATH`; the path must be non-empty unless `allow_empty_path`.
pub fn split_target(target: &str, allow_empty_path: bool) -> anyhow::Result<(String, String)> {
    let (repo, path) = target.split_once('/').unwrap_or((target, ""));
    if repo.is_empty() {
        return Err(anyhow!("expected REPO/PATH, got {target:?}"));
    }
    if path.is_empty() && !allow_empty_path {
        return Err(anyhow!("expected REPO/PATH, got {target:?} (no path)"));
    }
    Ok((repo.to_string(), path.to_string()))
}
