//! `GET`, `HEAD`, `PUT` and `DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::Error;
use crate::formats::oci::api::{set, Request, CONTENT_DIGEST, OCI_SUBJECT};
use crate::formats::oci::error::{OciError, OciResult};
use crate::formats::oci::manifest;
use crate::formats::oci::names::{digest_string, OciName, Reference};
use crate::formats::oci::registry::Registry;
use crate::formats::oci::remote::{self, ManifestSource};
use crate::remote::CacheResult;

/// Serves a manifest. By tag, the stored media type must be one the `Accept` header allows
/// (`MANIFEST_UNKNOWN` otherwise, as distribution answers); by digest the client named the
/// exact bytes, so they are served whatever it accepts.
pub async fn get(
    registry: &Registry,
    name: &str,
    reference: &str,
    request: Request,
) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    // A reference that is neither a tag nor a digest names no manifest: 404, as distribution
    // answers (its router matches no route); a write to one is still refused as invalid.
    let reference = Reference::parse(reference).map_err(|_| OciError::ManifestUnknown {
        name: name.to_string(),
        reference: reference.chars().take(128).collect(),
    })?;
    let cache = match remote::manifest(registry, &name, &reference).await? {
        None => None,
        Some(ManifestSource::Local(result)) => Some(result),
        Some(ManifestSource::Fetched(fetched)) => {
            check_accept(&name, &reference, &request, &fetched.media_type)?;
            let mut headers = manifest_headers(
                &fetched.media_type,
                &fetched.digest,
                fetched.bytes.len() as u64,
            );
            CacheResult::Miss.mark(&mut headers);
            if request.is_head() {
                return Ok((StatusCode::OK, headers).into_response());
            }
            return Ok((StatusCode::OK, headers, Body::from(fetched.bytes)).into_response());
        }
    };
    let (digest, record, blob) = registry.manifest(&name, &reference).await?;
    check_accept(&name, &reference, &request, &record.media_type)?;
    let mut headers = manifest_headers(&record.media_type, &digest, record.size);
    if let Some(result) = cache {
        result.mark(&mut headers);
    }
    if request.is_head() {
        return Ok((StatusCode::OK, headers).into_response());
    }
    let stream = registry
        .service
        .open_blob(&blob.descriptor, 0..blob.descriptor.size)
        .await?;
    Ok((StatusCode::OK, headers, Body::from_stream(stream)).into_response())
}

/// By tag, the manifest's media type must be one the `Accept` header allows.
fn check_accept(
    name: &OciName,
    reference: &Reference,
    request: &Request,
    media_type: &str,
) -> OciResult<()> {
    if let Reference::Tag(_) = reference {
        let accept = request
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok());
        if !manifest::accepts(accept, media_type) {
            return Err(OciError::ManifestNotAcceptable {
                name: name.to_string(),
                reference: reference.to_string(),
                media_type: media_type.to_string(),
            });
        }
    }
    Ok(())
}

fn manifest_headers(media_type: &str, digest: &crate::digest::Sha256, size: u64) -> HeaderMap {
    let digest_text = digest_string(digest);
    let mut headers = HeaderMap::new();
    set(&mut headers, header::CONTENT_TYPE, media_type);
    set(&mut headers, CONTENT_DIGEST, &digest_text);
    set(&mut headers, header::ETAG, &format!("\"{digest_text}\""));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers
}

/// Reads a manifest body whole, refusing it past `limit` bytes (`413`).
async fn read_manifest(request: Request, limit: u64) -> OciResult<Bytes> {
    if let Some(length) = request.header(header::CONTENT_LENGTH) {
        if length
            .trim()
            .parse::<u64>()
            .is_ok_and(|length| length > limit)
        {
            return Err(OciError::TooLarge { limit });
        }
    }
    let mut body = request.body.into_data_stream();
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| {
            OciError::Node(Error::IncompleteBody {
                reason: e.to_string(),
            })
        })?;
        if (bytes.len() + frame.len()) as u64 > limit {
            return Err(OciError::TooLarge { limit });
        }
        bytes.extend_from_slice(&frame);
    }
    Ok(bytes.freeze())
}

/// Stores a manifest under a tag or its digest: `201` with its digest, and `OCI-Subject` when
/// it has a subject (the referrers API will list it).
pub async fn put(
    registry: &Registry,
    name: &str,
    reference: &str,
    request: Request,
) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let reference = Reference::parse(reference)?;
    registry.repo(&name).await?;
    let content_type = request.header(header::CONTENT_TYPE).map(str::to_string);
    let bytes = read_manifest(request, registry.max_manifest_bytes()).await?;
    let stored = registry
        .put_manifest(&name, &reference, content_type.as_deref(), bytes)
        .await?;
    let digest = digest_string(&stored.digest);
    let mut headers = HeaderMap::new();
    set(
        &mut headers,
        header::LOCATION,
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set(&mut headers, CONTENT_DIGEST, &digest);
    if let Some(subject) = &stored.subject {
        set(&mut headers, OCI_SUBJECT, &digest_string(subject));
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    Ok((StatusCode::CREATED, headers).into_response())
}

/// Deletes a tag, or a manifest and its tags (`202`).
pub async fn delete(registry: &Registry, name: &str, reference: &str) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let reference = Reference::parse(reference)?;
    registry.delete_manifest(&name, &reference).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
