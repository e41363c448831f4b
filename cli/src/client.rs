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
    /// A client of `server` that sends `token` (`Authorization: Bearer`) on every request.
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).with_context(|| format!("invalid --server URL {server:?}"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("arca-cli/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers);
        // A server behind a certificate of a private CA (`arca certs`): trust that CA.
        if let Some(ca) = std::env::var_os("ARCA_CA_CERT") {
            let pem = std::fs::read(&ca)
                .with_context(|| format!("read ARCA_CA_CERT {}", ca.to_string_lossy()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("parse ARCA_CA_CERT")?,
            );
        }
        let http = builder.build().context("build HTTP client")?;
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
        if status == StatusCode::UNAUTHORIZED {
            let detail = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(anyhow!(
                "UNAUTHORIZED (401): {detail}; sign in with `arca login` or set ARCA_TOKEN"
            ));
        }
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
