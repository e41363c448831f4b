//! `/v2/<name>/blobs/uploads/`: starting (or mounting, or uploading in one request),
//! continuing, inspecting, finishing and cancelling blob uploads.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::digest::Sha256;
use crate::error::Error;
use crate::formats::oci::api::{
    exact_length, set, upload_digest, Request, CONTENT_DIGEST, UPLOAD_UUID,
};
use crate::formats::oci::error::{range_end, OciError, OciResult};
use crate::formats::oci::names::{digest_string, OciName};
use crate::formats::oci::registry::Registry;

fn session_location(name: &OciName, id: Uuid) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The answer that tells a client where a session stands.
fn session_response(status: StatusCode, name: &OciName, id: Uuid, received: u64) -> Response {
    let mut headers = HeaderMap::new();
    set(&mut headers, header::LOCATION, &session_location(name, id));
    headers.insert(header::RANGE, range_end(received));
    set(&mut headers, UPLOAD_UUID, &id.to_string());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    (status, headers).into_response()
}

/// `201 Created` for a blob now in the image.
fn created(name: &OciName, digest: &Sha256) -> Response {
    let digest = digest_string(digest);
    let mut headers = HeaderMap::new();
    set(
        &mut headers,
        header::LOCATION,
        &format!("/v2/{name}/blobs/{digest}"),
    );
    set(&mut headers, CONTENT_DIGEST, &digest);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    (StatusCode::CREATED, headers).into_response()
}

/// Parses `Content-Range: <start>-<end>` (inclusive). `bytes ` / `bytes=` prefixes and a
/// `/<total>` suffix, which some clients send, are tolerated.
fn content_range(value: &str) -> OciResult<(u64, u64)> {
    let invalid = || OciError::BlobUploadInvalid {
        reason: format!(
            "Content-Range {:?} is not <start>-<end>",
            value.chars().take(80).collect::<String>()
        ),
    };
    let text = value.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or_default();
    let (start, end) = text.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok((start, end))
}

/// The byte count a request's `Content-Range` promises, after checking that it continues the
/// upload where it stands (`416` otherwise) and agrees with `Content-Length`.
fn expected_chunk(
    request: &Request,
    name: &OciName,
    id: Uuid,
    received: u64,
) -> OciResult<Option<u64>> {
    let Some(value) = request.header(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = content_range(value)?;
    if start != received {
        return Err(OciError::ChunkOutOfOrder {
            location: session_location(name, id),
            received,
            start,
        });
    }
    let length = end - start + 1;
    if let Some(declared) = request.header(header::CONTENT_LENGTH) {
        if declared.trim().parse::<u64>().ok() != Some(length) {
            return Err(OciError::SizeInvalid {
                reason: format!(
                    "Content-Length {declared} differs from the {length} bytes of Content-Range {value}"
                ),
            });
        }
    }
    Ok(Some(length))
}

/// `POST /v2/<name>/blobs/uploads/`: `?mount=&from=` links a blob of another image (`201`,
/// or a new session if it cannot); `?digest=` uploads the body as the whole blob (`201`);
/// otherwise a session starts (`202`).
pub async fn start(registry: &Registry, name: &str, request: Request) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    registry.repo(&name).await?;
    if let Some(mount) = request.query("mount") {
        let digest = upload_digest(mount)?;
        if let Some(from) = request.query("from") {
            // A `from` that names nothing mountable is no reason to fail the push: the client
            // uploads through the session started below instead.
            // Mounting needs `pull` on the source too; without it the client just uploads.
            let may_pull = crate::auth::enforce(
                &registry.auth,
                &crate::auth::Access::Repo {
                    repo: from.split('/').next().unwrap_or_default().to_string(),
                    image: Some(from.to_string()),
                    action: crate::auth::model::Action::Read,
                },
                Ok(request.identity.clone()),
            )
            .is_ok();
            if let (true, Ok(from)) = (may_pull, OciName::parse(from)) {
                if registry.mount_blob(&name, &digest, &from).await? {
                    return Ok(created(&name, &digest));
                }
            }
        }
    } else if let Some(digest) = request.query("digest") {
        let digest = upload_digest(digest)?;
        registry
            .put_blob(&name, digest, None, request.body.into_data_stream())
            .await?;
        return Ok(created(&name, &digest));
    }
    let id = registry.uploads.create(&name).await?;
    Ok(session_response(StatusCode::ACCEPTED, &name, id, 0))
}

/// `GET <location>`: where the session stands (`204`, `Range: 0-<last byte>`).
pub async fn status(registry: &Registry, name: &str, id: &str) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let session = registry.uploads.lock(id, &name).await?;
    Ok(session_response(
        StatusCode::NO_CONTENT,
        &name,
        session.id(),
        session.received(),
    ))
}

/// `PATCH <location>`: appends a chunk (`202`), which must start where the upload stands
/// (`416` otherwise). Without `Content-Range` the body is appended as it streams.
pub async fn chunk(
    registry: &Registry,
    name: &str,
    id: &str,
    request: Request,
) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let mut session = registry.uploads.lock(id, &name).await?;
    registry.repo(&name).await?;
    let expected = expected_chunk(&request, &name, session.id(), session.received())?;
    let body = Box::pin(exact_length(request.body.into_data_stream(), expected));
    let received = session.append(body, registry.max_upload_bytes()).await?;
    Ok(session_response(
        StatusCode::ACCEPTED,
        &name,
        session.id(),
        received,
    ))
}

/// `PUT <location>?digest=`: the last chunk (optional) and the end of the session. The whole
/// blob goes through ingest and is checked against the digest; the session ends whether it
/// was stored or refused as wrong, but survives errors a retry may overcome.
pub async fn complete(
    registry: &Registry,
    name: &str,
    id: &str,
    request: Request,
) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let Some(digest) = request.query("digest") else {
        return Err(OciError::DigestInvalid {
            reason: "the closing PUT of an upload needs ?digest=<digest of the whole blob>".into(),
        });
    };
    let digest = upload_digest(digest)?;
    let session = registry.uploads.lock(id, &name).await?;
    let expected = expected_chunk(&request, &name, session.id(), session.received())?;
    let body = exact_length(request.body.into_data_stream(), expected);
    match registry.put_blob(&name, digest, Some(&session), body).await {
        Ok(_) => {
            session.remove().await;
            Ok(created(&name, &digest))
        }
        Err(error) => {
            let final_refusal = matches!(
                error,
                OciError::DigestInvalid { .. }
                    | OciError::TooLarge { .. }
                    | OciError::NameUnknown { .. }
                    | OciError::Node(Error::TooLarge { .. })
            );
            if final_refusal {
                session.remove().await;
            }
            Err(error)
        }
    }
}

/// `DELETE <location>`: cancels the session and deletes what it received (`204`).
pub async fn cancel(registry: &Registry, name: &str, id: &str) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let session = registry.uploads.lock(id, &name).await?;
    session.remove().await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("0-99").ok(), Some((0, 99)));
        assert_eq!(content_range("bytes 100-199/300").ok(), Some((100, 199)));
        assert_eq!(content_range("bytes=5-5").ok(), Some((5, 5)));
        for bad in ["", "5", "9-5", "a-b", "-5", "5-"] {
            assert!(content_range(bad).is_err(), "{bad:?}");
        }
    }
}
