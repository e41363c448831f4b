//! How every format answers a GET or HEAD of a stored file (validators, ranges, caching, the
//! bytes streamed from the chunk store): one implementation for files, distributions and
//! packages.

use axum::http::HeaderMap;

use crate::error::Result;
use crate::http_common::{etag_matches, parse_range};

/// How a stored file is answered: its validators and caching (the body comes from its blob).
pub struct FileResponse<'a> {
    /// The blob holding the bytes.
    pub blob: &'a crate::metadata::model::BlobDescriptor,
    /// When the file was stored (`Last-Modified`).
    pub modified_ms: i64,
    /// Whether the bytes at this URL can never change (long-lived `Cache-Control`).
    pub immutable: bool,
    pub content_type: &'static str,
    /// More headers to send (checksums, the format's own).
    pub headers: HeaderMap,
}

/// Answers a GET or HEAD of a stored file: `ETag` (its sha256), `Last-Modified`,
/// `If-None-Match` (`304`), a single `Range` (`206`, or `416` past the end), `Content-Length`,
/// and the bytes streamed from the chunk store (fetched from peers when this node lacks
/// them). Every format's file routes answer through here.
pub async fn serve_file(
    service: &crate::service::ArtifactService,
    method: &axum::http::Method,
    request: &HeaderMap,
    file: FileResponse<'_>,
) -> Result<axum::response::Response> {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;

    let FileResponse {
        blob,
        modified_ms,
        immutable,
        content_type,
        mut headers,
    } = file;
    let etag = format!("\"{}\"", blob.sha256.to_hex());
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CONTENT_TYPE, content_type);
    if let Some(modified) = chrono::DateTime::from_timestamp_millis(modified_ms) {
        set(
            header::LAST_MODIFIED,
            &modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    set(
        header::CACHE_CONTROL,
        if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        },
    );
    if let Some(candidates) = request.get(header::IF_NONE_MATCH) {
        if etag_matches(candidates.to_str().unwrap_or_default(), &etag) {
            return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
        }
    }
    let size = blob.size;
    let range = match request.get(header::RANGE) {
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
    if *method == axum::http::Method::HEAD {
        return Ok((status, headers).into_response());
    }
    let stream = service.open_blob(blob, span).await?;
    Ok((status, headers, axum::body::Body::from_stream(stream)).into_response())
}
