//! A counting, misbehaving HTTP proxy in front of a real upstream, for remote-repository
//! tests: it counts the requests the upstream receives, and on request answers 500, 429 or an
//! HTML page, delays its answers, cuts a body part-way or corrupts a byte of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// How the proxy answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Answer with this status and a short text body.
    Status(u16),
    /// Answer 200 with an HTML error page (a captive portal, a misconfigured CDN).
    Html,
    /// Forward, but end the body after this many bytes (once: the mode then returns to Pass).
    CutOnceAfter(u64),
    /// Forward with one byte of the body flipped (the upstream's checksum headers unchanged).
    Corrupt,
}

#[derive(Default)]
pub struct Log {
    /// (method, path, Range header) of every request forwarded or answered.
    pub requests: Vec<(String, String, Option<String>)>,
}

struct Shared {
    target: Mutex<String>,
    mode: Mutex<Mode>,
    delay_ms: AtomicU64,
    log: Mutex<Log>,
    client: reqwest::Client,
}

/// A running proxy.
pub struct UpstreamProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl UpstreamProxy {
    /// Starts a proxy to `target` (`http://127.0.0.1:PORT`) on a loopback port.
    pub async fn start(target: &str) -> Self {
        let shared = Arc::new(Shared {
            target: Mutex::new(target.trim_end_matches('/').to_string()),
            mode: Mutex::new(Mode::Pass),
            delay_ms: AtomicU64::new(0),
            log: Mutex::new(Log::default()),
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode") = mode;
    }

    /// Points the proxy at another upstream (the same one restarted on a new port).
    pub fn set_target(&self, target: &str) {
        *self.shared.target.lock().expect("target") = target.trim_end_matches('/').to_string();
    }

    /// Delays every answer's head by this long.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Requests with this method whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.shared
            .log
            .lock()
            .expect("log")
            .requests
            .iter()
            .filter(|(m, p, _)| m == method && p.contains(needle))
            .count()
    }

    /// The Range headers of requests whose path contains `needle`.
    pub fn ranges(&self, needle: &str) -> Vec<String> {
        self.shared
            .log
            .lock()
            .expect("log")
            .requests
            .iter()
            .filter(|(_, p, _)| p.contains(needle))
            .filter_map(|(_, _, r)| r.clone())
            .collect()
    }
}

impl Drop for UpstreamProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const FORWARDED: [&str; 8] = [
    "content-type",
    "content-length",
    "content-range",
    "etag",
    "last-modified",
    "x-checksum-sha256",
    "docker-content-digest",
    "www-authenticate",
];

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    shared
        .log
        .lock()
        .expect("log")
        .requests
        .push((method.to_string(), path.clone(), range));
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mode = *shared.mode.lock().expect("mode");
    match mode {
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).expect("status");
            return (status, "the upstream is unwell\n").into_response();
        }
        Mode::Html => {
            return (
                StatusCode::OK,
                [("content-type", "text/html; charset=utf-8")],
                "<html><body>Service temporarily unavailable</body></html>",
            )
                .into_response()
        }
        _ => {}
    }
    let target = shared.target.lock().expect("target").clone();
    let mut upstream = shared.client.request(method, format!("{target}{path}"));
    for (name, value) in request.headers() {
        if matches!(
            name.as_str(),
            "authorization" | "range" | "if-range" | "accept" | "if-none-match"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let answer = match upstream.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(value) = answer.headers().get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let stream = answer.bytes_stream();
    let body = match mode {
        Mode::CutOnceAfter(limit) => {
            *shared.mode.lock().expect("mode") = Mode::Pass;
            let mut sent = 0u64;
            let cut = stream
                .map(move |piece| {
                    let piece = piece.map_err(std::io::Error::other)?;
                    if sent >= limit {
                        return Err(std::io::Error::other("cut by the test proxy"));
                    }
                    let keep = ((limit - sent) as usize).min(piece.len());
                    sent += keep as u64;
                    Ok(piece.slice(..keep))
                })
                .take_while(|piece| futures::future::ready(piece.is_ok()))
                .chain(futures::stream::once(async {
                    Err(std::io::Error::other("cut by the test proxy"))
                }));
            Body::from_stream(cut)
        }
        Mode::Corrupt => {
            let mut first = true;
            Body::from_stream(stream.map(move |piece| {
                let piece = piece.map_err(std::io::Error::other)?;
                if first && !piece.is_empty() {
                    first = false;
                    let mut bytes = piece.to_vec();
                    bytes[0] ^= 0xff;
                    return Ok::<_, std::io::Error>(bytes::Bytes::from(bytes));
                }
                Ok(piece)
            }))
        }
        _ => Body::from_stream(stream),
    };
    (status, headers, body).into_response()
}

/// `GET url` from `clients` concurrent tasks; asserts each got 200 and returns the bodies.
pub async fn concurrent_gets(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
) -> Vec<bytes::Bytes> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                let response = http.get(url).send().await.expect("get");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body")
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        bodies.push(task.await.expect("client"));
    }
    bodies
}

/// A response's `X-Arca-Cache` value ("" when absent).
pub fn cache_header(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-arca-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
