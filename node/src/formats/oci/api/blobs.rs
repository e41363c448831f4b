//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::formats::oci::api::{set, Request, CONTENT_DIGEST};
use crate::formats::oci::error::{OciError, OciResult};
use crate::formats::oci::names::{digest_string, parse_digest, DigestProblem, OciName};
use crate::formats::oci::registry::Registry;
use crate::http_common::parse_range;

/// A digest in a blob URL: malformed is `DIGEST_INVALID`; well formed but not sha256 cannot
/// name anything stored, so it is unknown.
fn blob_digest(name: &OciName, raw: &str) -> OciResult<crate::digest::Sha256> {
    parse_digest(raw).map_err(|problem| match problem {
        DigestProblem::Malformed(reason) => OciError::DigestInvalid { reason },
        DigestProblem::Unsupported(_) => OciError::BlobUnknown {
            name: name.to_string(),
            digest: raw.chars().take(160).collect(),
        },
    })
}

pub async fn get(
    registry: &Registry,
    name: &str,
    digest: &str,
    request: Request,
) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let digest = blob_digest(&name, digest)?;
    let blob = match registry.blob(&name, &digest).await {
        Ok((_, blob)) => blob,
        Err(unknown @ OciError::BlobUnknown { .. }) => {
            return crate::formats::oci::remote::blob(
                registry,
                &name,
                &digest,
                request.is_head(),
                unknown,
            )
            .await
        }
        Err(e) => return Err(e),
    };
    let size = blob.descriptor.size;
    let digest_text = digest_string(&digest);
    let mut headers = HeaderMap::new();
    set(&mut headers, CONTENT_DIGEST, &digest_text);
    set(&mut headers, header::ETAG, &format!("\"{digest_text}\""));
    set(
        &mut headers,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    set(&mut headers, header::ACCEPT_RANGES, "bytes");
    let range = match request.header(header::RANGE) {
        Some(value) => parse_range(value, size)?,
        None => None,
    };
    let (status, span) = match range {
        Some(range) => {
            let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, size);
            set(&mut headers, header::CONTENT_RANGE, &content_range);
            (StatusCode::PARTIAL_CONTENT, range)
        }
        None => (StatusCode::OK, 0..size),
    };
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(span.end - span.start),
    );
    if request.is_head() {
        return Ok((status, headers).into_response());
    }
    let stream = registry.service.open_blob(&blob.descriptor, span).await?;
    Ok((status, headers, Body::from_stream(stream)).into_response())
}

pub async fn delete(registry: &Registry, name: &str, digest: &str) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let digest = blob_digest(&name, digest)?;
    registry.delete_blob(&name, &digest).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
