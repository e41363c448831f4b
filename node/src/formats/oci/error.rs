//! The registry's errors and the one place where they become HTTP responses on `/v2/`.
//!
//! Client errors carry the distribution spec's codes (`BLOB_UNKNOWN`, `MANIFEST_INVALID`, …)
//! in the spec's body, `{"errors":[{"code","message","detail"}]}`; server errors use the same
//! body with `UNKNOWN` or `UNAVAILABLE`, codes the spec leaves to registries. Errors of the
//! shared node operations ([`crate::Error`]) are mapped here too, with their Arca code in
//! `detail`, so a `/v2/` client never sees the `{"code","message"}` body of the other APIs.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oci_spec::distribution::ErrorCode;
use serde_json::{json, Value};

use crate::error::Error;

/// A failure of a registry operation.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("blob {digest} is unknown to {name}")]
    BlobUnknown { name: String, digest: String },
    #[error("blob upload invalid: {reason}")]
    BlobUploadInvalid { reason: String },
    #[error(
        "chunk out of order: the upload holds {received} bytes, so the next chunk must start at \
         byte {received}, not {start}"
    )]
    ChunkOutOfOrder {
        location: String,
        received: u64,
        start: u64,
    },
    #[error(
        "upload {id} is unknown to {name}: it completed, was cancelled or expired, or was started \
         on another node; start a new upload"
    )]
    BlobUploadUnknown { name: String, id: String },
    #[error("digest invalid: {reason}")]
    DigestInvalid { reason: String },
    #[error("the manifest references {} unknown to {name}: {}", plural(digests.len(), "a blob or manifest", "blobs or manifests"), digests.join(", "))]
    ManifestBlobUnknown { name: String, digests: Vec<String> },
    #[error("manifest invalid: {reason}")]
    ManifestInvalid { reason: String },
    #[error("manifest {reference} is unknown to {name}")]
    ManifestUnknown { name: String, reference: String },
    #[error(
        "manifest {reference} of {name} is a {media_type}, which the request's Accept header \
         does not allow"
    )]
    ManifestNotAcceptable {
        name: String,
        reference: String,
        media_type: String,
    },
    #[error("invalid name {name:?}: {reason}")]
    NameInvalid { name: String, reason: String },
    #[error("{name} is unknown: {reason}")]
    NameUnknown { name: String, reason: String },
    #[error("size invalid: {reason}")]
    SizeInvalid { reason: String },
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("denied: {reason}")]
    Denied { reason: String },
    #[error("too many requests: {reason}")]
    TooManyRequests { reason: String },
    #[error("unsupported: {reason}")]
    Unsupported { reason: String },
    #[error("no such endpoint of the OCI distribution API")]
    RouteNotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error(transparent)]
    Node(#[from] Error),
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        one.to_string()
    } else {
        format!("{n} {many}")
    }
}

/// An error code: one of the spec's, or a code written out (`UNKNOWN`, `UNAVAILABLE`, and `TOOMANYREQUESTS`, whose oci-spec `Display` is not its wire form).
enum Code {
    Spec(ErrorCode),
    Server(&'static str),
}

impl Code {
    fn as_string(&self) -> String {
        match self {
            Code::Spec(code) => code.to_string(),
            Code::Server(code) => (*code).to_string(),
        }
    }
}

impl OciError {
    fn code_and_status(&self) -> (Code, StatusCode) {
        use Code::{Server, Spec};
        match self {
            OciError::BlobUnknown { .. } => (Spec(ErrorCode::BlobUnknown), StatusCode::NOT_FOUND),
            OciError::BlobUploadInvalid { .. } => {
                (Spec(ErrorCode::BlobUploadInvalid), StatusCode::BAD_REQUEST)
            }
            OciError::ChunkOutOfOrder { .. } => (
                Spec(ErrorCode::BlobUploadInvalid),
                StatusCode::RANGE_NOT_SATISFIABLE,
            ),
            OciError::BlobUploadUnknown { .. } => {
                (Spec(ErrorCode::BlobUploadUnknown), StatusCode::NOT_FOUND)
            }
            OciError::DigestInvalid { .. } => {
                (Spec(ErrorCode::DigestInvalid), StatusCode::BAD_REQUEST)
            }
            OciError::ManifestBlobUnknown { .. } => (
                Spec(ErrorCode::ManifestBlobUnknown),
                StatusCode::BAD_REQUEST,
            ),
            OciError::ManifestInvalid { .. } => {
                (Spec(ErrorCode::ManifestInvalid), StatusCode::BAD_REQUEST)
            }
            OciError::ManifestUnknown { .. } | OciError::ManifestNotAcceptable { .. } => {
                (Spec(ErrorCode::ManifestUnknown), StatusCode::NOT_FOUND)
            }
            OciError::NameInvalid { .. } => (Spec(ErrorCode::NameInvalid), StatusCode::BAD_REQUEST),
            OciError::NameUnknown { .. } => (Spec(ErrorCode::NameUnknown), StatusCode::NOT_FOUND),
            OciError::SizeInvalid { .. } => (Spec(ErrorCode::SizeInvalid), StatusCode::BAD_REQUEST),
            OciError::TooLarge { .. } => {
                (Spec(ErrorCode::SizeInvalid), StatusCode::PAYLOAD_TOO_LARGE)
            }
            OciError::Denied { .. } => (Spec(ErrorCode::Denied), StatusCode::FORBIDDEN),
            OciError::TooManyRequests { .. } => {
                (Server("TOOMANYREQUESTS"), StatusCode::TOO_MANY_REQUESTS)
            }
            OciError::Unsupported { .. } => (Spec(ErrorCode::Unsupported), StatusCode::BAD_REQUEST),
            OciError::RouteNotFound => (Spec(ErrorCode::Unsupported), StatusCode::NOT_FOUND),
            OciError::MethodNotAllowed => {
                (Spec(ErrorCode::Unsupported), StatusCode::METHOD_NOT_ALLOWED)
            }
            OciError::Node(error) => match error {
                Error::InvalidRepoName { .. } | Error::InvalidPath { .. } => {
                    (Spec(ErrorCode::NameInvalid), StatusCode::BAD_REQUEST)
                }
                Error::InvalidRequest { .. } | Error::UnsupportedFormat { .. } => {
                    (Spec(ErrorCode::Unsupported), StatusCode::BAD_REQUEST)
                }
                Error::RepoNotFound { .. } | Error::WrongFormat { .. } => {
                    (Spec(ErrorCode::NameUnknown), StatusCode::NOT_FOUND)
                }
                Error::RepoExists { .. } => (Spec(ErrorCode::Denied), StatusCode::CONFLICT),
                Error::ArtifactNotFound { .. } => {
                    (Spec(ErrorCode::ManifestUnknown), StatusCode::NOT_FOUND)
                }
                Error::Immutable { .. } => (Spec(ErrorCode::Denied), StatusCode::FORBIDDEN),
                Error::InvalidDigest { .. } | Error::DigestMismatch { .. } => {
                    (Spec(ErrorCode::DigestInvalid), StatusCode::BAD_REQUEST)
                }
                Error::TooLarge { .. } => {
                    (Spec(ErrorCode::SizeInvalid), StatusCode::PAYLOAD_TOO_LARGE)
                }
                Error::IncompleteBody { .. } => {
                    (Spec(ErrorCode::BlobUploadInvalid), StatusCode::BAD_REQUEST)
                }
                Error::RangeNotSatisfiable { .. } => (
                    Spec(ErrorCode::SizeInvalid),
                    StatusCode::RANGE_NOT_SATISFIABLE,
                ),
                Error::RouteNotFound => (Spec(ErrorCode::Unsupported), StatusCode::NOT_FOUND),
                Error::RemoteNotFound { .. } => {
                    (Spec(ErrorCode::ManifestUnknown), StatusCode::NOT_FOUND)
                }
                Error::UpstreamFailed { .. } => (Server("UNAVAILABLE"), StatusCode::BAD_GATEWAY),
                Error::RemoteReadOnly { .. } => {
                    (Spec(ErrorCode::Denied), StatusCode::METHOD_NOT_ALLOWED)
                }
                Error::MethodNotAllowed => {
                    (Spec(ErrorCode::Unsupported), StatusCode::METHOD_NOT_ALLOWED)
                }
                Error::NoQuorum { .. }
                | Error::NotReady { .. }
                | Error::MixedVersions { .. }
                | Error::FormatNotEverywhere { .. } => {
                    (Server("UNAVAILABLE"), StatusCode::SERVICE_UNAVAILABLE)
                }
                Error::TooManyUploads { .. } => {
                    (Server("TOOMANYREQUESTS"), StatusCode::TOO_MANY_REQUESTS)
                }
                Error::InsufficientStorage { .. } => {
                    (Server("UNAVAILABLE"), StatusCode::INSUFFICIENT_STORAGE)
                }
                // Registry clients do not follow redirects on writes: refuse, naming the primary.
                Error::ReadOnlyMirror { .. } => (Spec(ErrorCode::Denied), StatusCode::FORBIDDEN),
                Error::SyncReplicationTimeout { .. } => {
                    (Server("UNAVAILABLE"), StatusCode::GATEWAY_TIMEOUT)
                }
                Error::AlreadyExists { .. } => (Spec(ErrorCode::Denied), StatusCode::CONFLICT),
                Error::NoSuch { .. } => (Spec(ErrorCode::NameUnknown), StatusCode::NOT_FOUND),
                Error::Unauthorized { .. } => {
                    (Spec(ErrorCode::Unauthorized), StatusCode::UNAUTHORIZED)
                }
                Error::Forbidden { .. } => (Spec(ErrorCode::Denied), StatusCode::FORBIDDEN),
                Error::TooManyAttempts { .. } => {
                    (Server("TOOMANYREQUESTS"), StatusCode::TOO_MANY_REQUESTS)
                }
                Error::CorruptChunk { .. } | Error::MissingChunk { .. } | Error::Internal(_) => {
                    (Server("UNKNOWN"), StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.code_and_status().1
    }

    /// The spec code (or `UNKNOWN`/`UNAVAILABLE`) this error is answered with.
    pub fn code(&self) -> String {
        self.code_and_status().0.as_string()
    }

    /// The `detail` member: structured facts a client can act on.
    fn detail(&self) -> Option<Value> {
        match self {
            OciError::BlobUnknown { digest, .. } => Some(json!({ "digest": digest })),
            OciError::ChunkOutOfOrder {
                received, start, ..
            } => Some(json!({ "received": received, "start": start })),
            OciError::ManifestUnknown { reference, .. } => Some(json!({ "reference": reference })),
            OciError::ManifestNotAcceptable {
                reference,
                media_type,
                ..
            } => Some(json!({ "reference": reference, "media_type": media_type })),
            OciError::TooLarge { limit } => Some(json!({ "limit": limit })),
            OciError::Node(error) => Some(json!({ "arca_code": error.code() })),
            _ => None,
        }
    }

    /// The entries of the `errors` array.
    fn entries(&self, code: &str, message: &str) -> Vec<Value> {
        let entry = |message: String, detail: Option<Value>| {
            let mut entry = json!({ "code": code, "message": message });
            if let Some(detail) = detail {
                entry["detail"] = detail;
            }
            entry
        };
        match self {
            // One entry per missing digest, as the spec asks.
            OciError::ManifestBlobUnknown { name, digests } if !digests.is_empty() => digests
                .iter()
                .map(|digest| {
                    entry(
                        format!("the manifest references {digest}, which {name} does not have"),
                        Some(json!({ "digest": digest })),
                    )
                })
                .collect(),
            _ => vec![entry(message.to_string(), self.detail())],
        }
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        let message = match &self {
            OciError::Node(Error::Internal(detail)) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let body = json!({ "errors": self.entries(&code.as_string(), &message) });
        let mut headers = HeaderMap::new();
        match &self {
            OciError::ChunkOutOfOrder {
                location, received, ..
            } => {
                // Tell the client where to resume, as the status request would.
                if let Ok(value) = HeaderValue::from_str(location) {
                    headers.insert(header::LOCATION, value);
                }
                headers.insert(header::RANGE, range_end(*received));
            }
            OciError::Node(Error::RangeNotSatisfiable { size }) => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            _ => {}
        }
        (status, headers, axum::Json(body)).into_response()
    }
}

/// The `Range` header of an upload holding `received` bytes: `0-<last byte>`, and `0-0` for an
/// empty upload (what clients of distribution expect).
pub fn range_end(received: u64) -> HeaderValue {
    let value = format!("0-{}", received.saturating_sub(1));
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("0-0"))
}

pub type OciResult<T> = std::result::Result<T, OciError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: OciError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn bodies_follow_the_spec_and_parse_with_oci_spec() {
        let (status, value) = body(OciError::BlobUnknown {
            name: "r/i".into(),
            digest: "sha256:00".into(),
        })
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let parsed: oci_spec::distribution::ErrorResponse =
            serde_json::from_value(value).expect("oci-spec parses the body");
        assert_eq!(parsed.errors()[0].code(), &ErrorCode::BlobUnknown);

        let (status, value) = body(OciError::ManifestBlobUnknown {
            name: "r/i".into(),
            digests: vec!["sha256:aa".into(), "sha256:bb".into()],
        })
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let parsed: oci_spec::distribution::ErrorResponse =
            serde_json::from_value(value).expect("parses");
        assert_eq!(parsed.errors().len(), 2);
        assert!(parsed
            .errors()
            .iter()
            .all(|e| e.code() == &ErrorCode::ManifestBlobUnknown));

        let (status, value) = body(OciError::Node(Error::Immutable {
            repo: "r".into(),
            path: "i:t".into(),
            reason: "x".into(),
        }))
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(value["errors"][0]["code"], "DENIED");
        assert_eq!(value["errors"][0]["detail"]["arca_code"], "IMMUTABLE");

        let (status, value) = body(OciError::Node(Error::Internal("disk on fire".into()))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(value["errors"][0]["code"], "UNKNOWN");
        assert!(!value.to_string().contains("disk on fire"));
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(range_end(0), "0-0");
        assert_eq!(range_end(1), "0-0");
        assert_eq!(range_end(10), "0-9");
    }
}
