//! One remote repository's upstream, as seen from this node: an HTTP client with deadlines,
//! a concurrency limit and a request budget, cached bearer tokens, and the classification of
//! every answer into what the cache may do with it.
//!
//! The upstream's password lives only in the repository record and in the `Authorization`
//! header of requests to the upstream (and its token realm); it is never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method, StatusCode};
use metrics::counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metadata::remote_spec::RemoteSpec;
use crate::names::RepoName;

/// Bearer tokens kept per upstream (one per image scope, for OCI).
const MAX_TOKENS: usize = 512;
/// A token is renewed this long before the upstream says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// A token whose lifetime the realm does not state is kept this long.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The largest token answer read from a realm.
const MAX_TOKEN_ANSWER: usize = 64 << 10;
/// Requests per node per upstream per minute (a request over the budget is not sent: the
/// cache serves what it has, or answers 503).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 6_000;

/// What an upstream's answer allows the cache to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Down, slow, overloaded (429, 5xx), over budget, or answering an HTML error page: serve
    /// what is cached (stale-if-error), cache nothing.
    Unavailable,
    /// The upstream does not have it (404): a short negative cache entry.
    NotFound,
    /// The upstream refused the configured credentials (401, 403): nothing cached.
    Denied,
}

/// Why an upstream request did not produce usable content.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub kind: FailureKind,
    pub message: String,
}

impl UpstreamError {
    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Unavailable,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An upstream answer (2xx or 304) and the concurrency permit it holds until dropped.
pub struct Fetched {
    pub response: reqwest::Response,
    _permit: OwnedSemaphorePermit,
}

impl Fetched {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }
}

/// A fixed one-minute window of requests.
struct Budget {
    window_start: Instant,
    used: u32,
}

/// An upstream of one remote repository.
pub struct Upstream {
    pub repo: RepoName,
    pub spec: RemoteSpec,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    budget: Mutex<Budget>,
    requests_per_minute: u32,
    /// Bearer tokens by scope, with the instant they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl Upstream {
    pub fn new(repo: RepoName, spec: RemoteSpec) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(spec.timeout()))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("arca/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            repo,
            permits: Arc::new(Semaphore::new(spec.max_concurrency as usize)),
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            spec,
            client,
            budget: Mutex::new(Budget {
                window_start: Instant::now(),
                used: 0,
            }),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `method path` to the upstream (path relative to its base URL). `scope` names the
    /// bearer-token scope a challenge will ask for (OCI: `repository:NAME:pull`), so a token
    /// is reused across requests instead of signing in per request.
    ///
    /// Only 2xx and 304 answers are returned; everything else is classified.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        scope: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        let permit =
            tokio::time::timeout(self.spec.timeout(), self.permits.clone().acquire_owned())
                .await
                .map_err(|_| {
                    self.count("busy");
                    UpstreamError::unavailable(format!(
                        "{} requests to the upstream are in flight already",
                        self.spec.max_concurrency
                    ))
                })?
                .map_err(|_| UpstreamError::unavailable("the node is shutting down"))?;
        let url = self.spec.join(path);
        let cached = scope.and_then(|scope| self.token(scope));
        let mut response = self
            .once(method.clone(), &url, &headers, cached.as_deref())
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(challenge) = bearer_challenge(response.headers()) {
                let token = self.fetch_token(&challenge).await?;
                if let Some(scope) = scope.or(challenge.scope.as_deref()) {
                    self.keep_token(scope, &token);
                }
                response = self.once(method, &url, &headers, Some(&token.0)).await?;
            }
        }
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            if status.is_success() && is_html(response.headers()) && !path.ends_with(".html") {
                self.count("html");
                return Err(UpstreamError::unavailable(format!(
                    "the upstream answered {url} with an HTML page"
                )));
            }
            self.count("ok");
            return Ok(Fetched {
                response,
                _permit: permit,
            });
        }
        Err(self.classify(status, &url))
    }

    fn classify(&self, status: StatusCode, url: &str) -> UpstreamError {
        let (kind, label) = match status.as_u16() {
            404 | 410 => (FailureKind::NotFound, "not_found"),
            401 | 403 => (FailureKind::Denied, "denied"),
            _ => (FailureKind::Unavailable, "error"),
        };
        self.count(label);
        UpstreamError {
            kind,
            message: format!("the upstream answered {url} with {status}"),
        }
    }

    /// One attempt, with the deadline for the response head.
    async fn once(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        bearer: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.spend()?;
        let mut request = self.client.request(method, url).headers(headers.clone());
        request = match (bearer, &self.spec.username) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Some(user)) => request.basic_auth(
                user,
                self.spec.password.as_ref().map(|p| p.expose().to_string()),
            ),
            (None, None) => request,
        };
        match tokio::time::timeout(self.spec.timeout(), request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.count("unreachable");
                Err(UpstreamError::unavailable(format!(
                    "the upstream did not answer {url}: {}",
                    error_chain(&e)
                )))
            }
            Err(_) => {
                self.count("timeout");
                Err(UpstreamError::unavailable(format!(
                    "the upstream sent no answer to {url} within {:?}",
                    self.spec.timeout()
                )))
            }
        }
    }

    /// Takes one request from the minute's budget.
    fn spend(&self) -> Result<(), UpstreamError> {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if budget.window_start.elapsed() >= Duration::from_secs(60) {
            budget.window_start = Instant::now();
            budget.used = 0;
        }
        if budget.used >= self.requests_per_minute {
            self.count("over_budget");
            return Err(UpstreamError::unavailable(format!(
                "the request budget of {} per minute for this upstream is spent",
                self.requests_per_minute
            )));
        }
        budget.used += 1;
        Ok(())
    }

    fn token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(token, _)| token.clone())
    }

    fn keep_token(&self, scope: &str, token: &(String, Instant)) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, (_, until)| now < *until);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(scope.to_string(), token.clone());
    }

    /// Asks the challenge's realm for a token (with the upstream credentials, if any).
    async fn fetch_token(&self, challenge: &Challenge) -> Result<(String, Instant), UpstreamError> {
        self.spend()?;
        self.count("token");
        let mut request = self.client.get(&challenge.realm);
        let mut query = Vec::new();
        if let Some(service) = &challenge.service {
            query.push(("service", service.as_str()));
        }
        if let Some(scope) = &challenge.scope {
            query.push(("scope", scope.as_str()));
        }
        request = request.query(&query);
        if let Some(user) = &self.spec.username {
            request = request.basic_auth(
                user,
                self.spec.password.as_ref().map(|p| p.expose().to_string()),
            );
        }
        let denied = |message: String| UpstreamError {
            kind: FailureKind::Denied,
            message,
        };
        let response = tokio::time::timeout(self.spec.timeout(), request.send())
            .await
            .map_err(|_| UpstreamError::unavailable("the upstream's token realm did not answer"))?
            .map_err(|e| {
                UpstreamError::unavailable(format!(
                    "the upstream's token realm: {}",
                    error_chain(&e)
                ))
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(denied(format!(
                "the upstream's token realm refused the credentials ({status})"
            )));
        }
        if !status.is_success() {
            return Err(UpstreamError::unavailable(format!(
                "the upstream's token realm answered {status}"
            )));
        }
        let body = tokio::time::timeout(self.spec.timeout(), response.bytes())
            .await
            .map_err(|_| UpstreamError::unavailable("the token answer stalled"))?
            .map_err(|e| UpstreamError::unavailable(format!("read the token answer: {e}")))?;
        if body.len() > MAX_TOKEN_ANSWER {
            return Err(UpstreamError::unavailable("the token answer is too large"));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::unavailable(format!("the token answer: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::unavailable("the token answer holds no token"))?;
        let lifetime = answer
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        Ok((token, until))
    }

    fn count(&self, result: &'static str) {
        counter!("arca_remote_upstream_requests_total", "repo" => self.repo.to_string(), "result" => result)
            .increment(1);
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// A `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let value = headers.get(header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let rest = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    for (key, value) in challenge_params(rest) {
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    let realm = realm.filter(|r| r.starts_with("http://") || r.starts_with("https://"))?;
    Some(Challenge {
        realm,
        service,
        scope,
    })
}

/// `key="value", key2=value2` pairs (quoted values may hold commas).
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/html"))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn parses_bearer_challenges() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
            ),
        );
        assert_eq!(
            bearer_challenge(&headers),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="Registry Realm""#),
        );
        assert_eq!(bearer_challenge(&headers), None);
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="file:///etc/passwd""#),
        );
        assert_eq!(bearer_challenge(&headers), None);
    }

    #[test]
    fn quoted_values_keep_commas() {
        let params = challenge_params(r#"realm="a,b", scope="repository:x:pull,push""#);
        assert_eq!(
            params,
            vec![
                ("realm".to_string(), "a,b".to_string()),
                ("scope".to_string(), "repository:x:pull,push".to_string())
            ]
        );
    }
}
