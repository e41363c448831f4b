//! HTTP pieces every format's routes share: `Range` and `If-None-Match`, the `{repo}` path
//! extractor, the marker the read barrier leaves on reads it let through unconfirmed, and the
//! client-facing base URL for absolute URLs in answers.

use std::ops::Range;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::names::RepoName;

/// Header naming how a read was served: `linearizable`; `immutable` (content by digest, or in
/// an immutable repository, served from this node without a barrier); or `local` when the
/// client sent it with the value `stale-ok` and the region could not confirm in time, so this
/// node's own, possibly stale, state was used.
pub const READ_CONSISTENCY: &str = "x-arca-read-consistency";

/// A read that may be answered from this node's state without a barrier when it finds what it
/// looks for (a miss runs the barrier and looks again).
#[derive(Debug, Clone, Copy)]
pub struct LocalFirst;

/// A `{repo}` path parameter, validated; a bad one is a JSON `INVALID_REPO_NAME`.
pub struct RepoParam(pub RepoName);

impl<S: Send + Sync> FromRequestParts<S> for RepoParam {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::InvalidRepoName {
                name: String::new(),
                reason: e.body_text(),
            })?;
        Ok(Self(RepoName::parse(&raw)?))
    }
}

/// The base URL clients reach this node by (`https://arca.example.com`, no trailing `/`):
/// `public_url` when configured; else, with `trust_forwarded_headers`, the `X-Forwarded-Proto`
/// and `X-Forwarded-Host` a proxy set; else the scheme this node serves and the request's
/// `Host`. A host that is not a plain `host[:port]` is never echoed back.
pub fn client_base_url(config: &NodeConfig, headers: &HeaderMap) -> String {
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let plain_host = |host: &&str| {
        !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    let mut scheme = if config.tls.enabled() {
        "https"
    } else {
        "http"
    };
    let mut host = first("host").filter(plain_host);
    if config.trust_forwarded_headers {
        if let Some(proto) = first("x-forwarded-proto").filter(|p| matches!(*p, "http" | "https")) {
            scheme = proto;
        }
        if let Some(forwarded) = first("x-forwarded-host").filter(plain_host) {
            host = Some(forwarded);
        }
    }
    let host = host.map_or_else(|| config.http_addr.clone(), str::to_string);
    format!("{scheme}://{host}")
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, `*` matches anything).
pub fn etag_matches(candidates: &str, etag: &str) -> bool {
    candidates.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// An HTTP date (`Last-Modified`) of a time in ms since the epoch.
pub fn http_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

/// A metadata document rendered from the state machine (an index, a packument): an `ETag` of
/// its bytes, `Last-Modified`, `Cache-Control: no-cache` (a client re-reads it right after a
/// publish) and `304` when the request's `If-None-Match` names it. `headers` come along.
pub fn document_response(
    request: &HeaderMap,
    content_type: &'static str,
    modified_ms: i64,
    headers: HeaderMap,
    body: Vec<u8>,
) -> axum::response::Response {
    let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
    tagged_document_response(request, content_type, modified_ms, headers, &etag, body)
}

/// Whether the request's `If-None-Match` names `etag`.
pub fn not_modified(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(axum::http::header::IF_NONE_MATCH)
        .iter()
        .any(|candidates| etag_matches(candidates.to_str().unwrap_or_default(), etag))
}

/// [`document_response`] with an `ETag` the caller derived from the state the document is
/// rendered from (so a `304` can be answered without rendering it).
pub fn tagged_document_response(
    request: &HeaderMap,
    content_type: &'static str,
    modified_ms: i64,
    mut headers: HeaderMap,
    etag: &str,
    body: impl Into<bytes::Bytes>,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&http_date(modified_ms)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    if not_modified(request, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, body.into()).into_response()
}

/// Parses a single `bytes=` range against `size`. Returns `None` for headers a server may
/// ignore (other units, several ranges, malformed), and `RANGE_NOT_SATISFIABLE` for a range
/// that starts past the end.
pub fn parse_range(header: &str, size: u64) -> Result<Option<Range<u64>>> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = Error::RangeNotSatisfiable { size };
    let range = match (start.trim(), end.trim()) {
        ("", "") => return Ok(None),
        ("", suffix) => {
            let Ok(n) = suffix.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            size.saturating_sub(n)..size
        }
        (start, end) => {
            let Ok(first) = start.parse::<u64>() else {
                return Ok(None);
            };
            let last = if end.is_empty() {
                u64::MAX
            } else {
                match end.parse::<u64>() {
                    Ok(last) if last >= first => last,
                    _ => return Ok(None),
                }
            };
            if first >= size {
                return Err(unsatisfiable);
            }
            first..last.saturating_add(1).min(size)
        }
    };
    Ok(Some(range))
}

/// The name a handler gives the action it performed, for the audit log (a response
/// extension; without one the record names the method and format).
#[derive(Debug, Clone, Copy)]
pub struct AuditAction(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn the_client_facing_base_url_comes_from_config_a_trusted_proxy_or_the_request() {
        let mut config = NodeConfig::default();
        let proxied = headers(&[
            ("host", "10.0.0.5:7070"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "arca.example.com"),
        ]);
        // Untrusted forwarding headers are ignored: a client cannot pick the URLs handed out.
        assert_eq!(client_base_url(&config, &proxied), "http://10.0.0.5:7070");
        config.trust_forwarded_headers = true;
        assert_eq!(
            client_base_url(&config, &proxied),
            "https://arca.example.com"
        );
        let bad = headers(&[
            ("host", "evil.example/\"><script>"),
            ("x-forwarded-proto", "javascript"),
        ]);
        assert_eq!(client_base_url(&config, &bad), "http://127.0.0.1:7070");
        config.trust_forwarded_headers = false;
        config.tls = crate::config::TlsConfig {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
        };
        assert_eq!(
            client_base_url(&config, &headers(&[("host", "arca.internal:8443")])),
            "https://arca.internal:8443"
        );
        config.public_url = Some("https://packages.example.com/".into());
        assert_eq!(
            client_base_url(&config, &proxied),
            "https://packages.example.com"
        );
        assert!(config.validate().is_ok());
        for bad in [
            "ftp://x",
            "packages.example.com",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            config.public_url = Some(bad.into());
            assert!(config.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).ok().flatten(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).ok().flatten(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).ok().flatten(), Some(90..100));
        assert_eq!(parse_range("bytes=-1000", 100).ok().flatten(), Some(0..100));
        assert_eq!(
            parse_range("bytes=95-200", 100).ok().flatten(),
            Some(95..100)
        );
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=-0", 100).is_err());
        assert!(parse_range("bytes=0-0", 0).is_err());
        assert_eq!(parse_range("bytes=5-2", 100).ok().flatten(), None);
        assert_eq!(parse_range("items=0-1", 100).ok().flatten(), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100).ok().flatten(), None);
        assert_eq!(parse_range("bytes=x-1", 100).ok().flatten(), None);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"def\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
