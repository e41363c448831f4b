//! `/files/{repo}/{path...}`: PUT, GET, HEAD, DELETE of generic files.

use std::ops::Range;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::api::AppState;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::model::format_ms;
use crate::names::{ArtifactPath, RepoName};

pub const CHECKSUM_SHA256: &str = "x-checksum-sha256";
pub const CHECKSUM_BLAKE3: &str = "x-checksum-blake3";
/// Set when a mirror served the file by reading through to its primary.
pub const READ_THROUGH: &str = "x-arca-read-through";

/// Splits the raw request path into repository and artifact path. The path is decoded here,
/// from the raw URI, so that bad encodings get a precise `INVALID_PATH`.
fn target(uri: &Uri) -> Result<(RepoName, ArtifactPath)> {
    let rest = uri.path().strip_prefix("/files/").unwrap_or_default();
    let (repo, path) = rest.split_once('/').unwrap_or((rest, ""));
    parse_target(repo, path)
}

/// Decodes and validates a percent-encoded repository name and artifact path.
pub fn parse_target(repo: &str, path: &str) -> Result<(RepoName, ArtifactPath)> {
    let repo = percent_encoding::percent_decode_str(repo)
        .decode_utf8()
        .map_err(|_| Error::InvalidRepoName {
            name: repo.to_string(),
            reason: "it is not valid UTF-8".into(),
        })?;
    Ok((
        RepoName::parse(&repo)?,
        ArtifactPath::from_url_encoded(path)?,
    ))
}

#[derive(Serialize)]
struct PutResponse {
    repo: String,
    path: String,
    size: u64,
    sha256: String,
    blake3: String,
    chunks: usize,
    new_chunks: usize,
    created_at: String,
    updated_at: String,
}

pub async fn put(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let (repo, path) = target(&uri)?;
    let expected = match headers.get(CHECKSUM_SHA256) {
        Some(value) => {
            let text = value.to_str().unwrap_or_default().trim();
            let text = text.strip_prefix("sha256:").unwrap_or(text);
            Some(Sha256::from_hex(text).ok_or_else(|| Error::InvalidDigest {
                header: "X-Checksum-Sha256",
                reason: "expected 64 hex characters".into(),
            })?)
        }
        None => None,
    };
    let result = state
        .service
        .put_file(&repo, &path, body.into_data_stream(), expected)
        .await?;
    let artifact = &result.artifact;
    let status = if result.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = PutResponse {
        repo: repo.to_string(),
        path: path.to_string(),
        size: artifact.size,
        sha256: artifact.sha256.to_hex(),
        blake3: artifact.blob.to_hex(),
        chunks: result.chunks,
        new_chunks: result.new_chunks,
        created_at: format_ms(artifact.created_at_ms),
        updated_at: format_ms(artifact.updated_at_ms),
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(uri.path()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn delete(State(state): State<AppState>, uri: Uri) -> Result<StatusCode> {
    let (repo, path) = target(&uri)?;
    state.service.delete_file(&repo, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
    local_first: Option<axum::Extension<crate::api::LocalFirst>>,
) -> Result<Response> {
    let (repo_name, path) = target(&uri)?;
    let mut found = state.service.file(&repo_name, &path);
    if local_first.is_some() && found.is_err() {
        // Served without a barrier because the repository is immutable: a miss may be a file
        // written through another node a moment ago.
        state.service.read_barrier().await?;
        found = state.service.file(&repo_name, &path);
    }
    let (immutable, artifact, blob, read_through) = match found {
        Ok((repo, artifact, blob)) => (repo.immutable, artifact, blob.descriptor, false),
        Err(error @ (Error::ArtifactNotFound { .. } | Error::RepoNotFound { .. })) => {
            match state.service.geo.read_through(&repo_name, &path).await? {
                Some(found) => (found.immutable, found.artifact, found.blob, true),
                None => return Err(error),
            }
        }
        Err(error) => return Err(error),
    };
    let etag = format!("\"{}\"", artifact.sha256.to_hex());
    let mut headers = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(
        header::HeaderName::from_static(CHECKSUM_SHA256),
        &artifact.sha256.to_hex(),
    );
    set(
        header::HeaderName::from_static(CHECKSUM_BLAKE3),
        &artifact.blob.to_hex(),
    );
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(modified) = chrono::DateTime::from_timestamp_millis(artifact.updated_at_ms) {
        set(
            header::LAST_MODIFIED,
            &modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    if read_through {
        set(header::HeaderName::from_static(READ_THROUGH), "primary");
    }
    if immutable {
        set(header::CACHE_CONTROL, "public, max-age=31536000, immutable");
    } else {
        set(header::CACHE_CONTROL, "no-cache");
    }

    if let Some(candidates) = request_headers.get(header::IF_NONE_MATCH) {
        if etag_matches(candidates.to_str().unwrap_or_default(), &etag) {
            return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
        }
    }

    let size = artifact.size;
    let range = match request_headers.get(header::RANGE) {
        Some(value) => parse_range(value.to_str().unwrap_or_default(), size)?,
        None => None,
    };
    let (status, span) = match range {
        Some(range) => {
            let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, size);
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, range)
        }
        None => (StatusCode::OK, 0..size),
    };
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    if method == Method::HEAD {
        return Ok((status, headers).into_response());
    }
    let stream = state.service.open_blob(&blob, span).await?;
    Ok((status, headers, Body::from_stream(stream)).into_response())
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, `*` matches anything).
fn etag_matches(candidates: &str, etag: &str) -> bool {
    candidates.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// Parses a single `bytes=` range against `size`. Returns `None` for headers a server may
/// ignore (other units, several ranges, malformed), and `RANGE_NOT_SATISFIABLE` for a range
/// that starts past the end.
pub(crate) fn parse_range(header: &str, size: u64) -> Result<Option<Range<u64>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn targets() {
        let uri: Uri = "/files/libs/a/b%20c.txt".parse().expect("uri");
        let (repo, path) = target(&uri).expect("target");
        assert_eq!(repo.as_str(), "libs");
        assert_eq!(path.as_str(), "a/b c.txt");
        for bad in [
            "/files/libs",
            "/files/libs/",
            "/files/Libs/a",
            "/files/libs/a/../b",
            "/files/libs/a//b",
        ] {
            let uri: Uri = bad.parse().expect("uri");
            assert!(target(&uri).is_err(), "{bad}");
        }
    }
}
