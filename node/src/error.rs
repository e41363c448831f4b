//! The node's error type: every failure a client can see, with its stable code and HTTP status.
//!
//! This is the one place where errors become HTTP responses (`{"code","message"}` JSON).
//! Internal details (storage errors) are logged here and replaced by a generic message.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use arca_raft::ConsensusError;

/// A failure of a node operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid repository name {name:?}: {reason}")]
    InvalidRepoName { name: String, reason: String },
    #[error("invalid path: {reason}")]
    InvalidPath { reason: String },
    #[error("invalid request: {message}")]
    InvalidRequest { message: String },
    #[error("unsupported repository format {format:?} (supported: {supported})")]
    UnsupportedFormat { format: String, supported: String },
    #[error("repository {repo} does not exist")]
    RepoNotFound { repo: String },
    #[error("repository {repo} already exists")]
    RepoExists { repo: String },
    #[error("repository {repo} has format {format}; this API serves {expected} repositories")]
    WrongFormat {
        repo: String,
        format: String,
        expected: String,
    },
    #[error("{repo}/{path} does not exist")]
    ArtifactNotFound { repo: String, path: String },
    #[error("{repo}/{path} is immutable: {reason}")]
    Immutable {
        repo: String,
        path: String,
        reason: String,
    },
    #[error("invalid {header} header: {reason}")]
    InvalidDigest {
        header: &'static str,
        reason: String,
    },
    #[error("content digest mismatch: expected sha256 {expected}, received {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the request body ended early or could not be read: {reason}")]
    IncompleteBody { reason: String },
    #[error("range not satisfiable for a {size}-byte artifact")]
    RangeNotSatisfiable { size: u64 },
    #[error("chunk {chunk} is corrupt on this node and was not served")]
    CorruptChunk { chunk: String },
    #[error("chunk {chunk} is missing on this node")]
    MissingChunk { chunk: String },
    #[error("the region cannot commit writes right now: {reason}")]
    NoQuorum { reason: String },
    #[error("this node is not ready: {reason}")]
    NotReady { reason: String },
    #[error("region {region} is a read-only mirror of {primary}; send writes to the primary region{}", primary_http.as_ref().map(|h| format!(" at http://{h}")).unwrap_or_default())]
    ReadOnlyMirror {
        region: String,
        primary: String,
        primary_http: Option<String>,
    },
    #[error("applied on the primary (seq {seq}) but no mirror region confirmed it within {timeout:?}; retrying the same upload is safe")]
    SyncReplicationTimeout {
        seq: u64,
        timeout: std::time::Duration,
    },
    #[error("node {node} of this region applies commands up to version {version}, and this write needs version {required}: finish upgrading every node of the region first")]
    MixedVersions {
        node: u64,
        version: u32,
        required: u32,
    },
    #[error(
        "node {node} of this region does not apply format {format} version {version} yet; \
         upgrade it first"
    )]
    FormatNotEverywhere {
        node: u64,
        format: String,
        version: u32,
    },
    #[error(
        "{limit} uploads are in progress {scope}, the most this node takes at once; retry shortly"
    )]
    TooManyUploads { scope: &'static str, limit: usize },
    #[error("the node's disk has {free} bytes free, under the reserve of {reserve}: uploads are refused until space is freed")]
    InsufficientStorage { free: u64, reserve: u64 },
    #[error("not in the cache, and the upstream does not have it: {reason}")]
    RemoteNotFound { reason: String },
    #[error("not in the cache, and the upstream could not supply it: {reason}")]
    UpstreamFailed { reason: String },
    #[error("repository {repo} is a remote (pull-through) repository: it takes no uploads or deletes (purge its cache with `arca cache purge`)")]
    RemoteReadOnly { repo: String },
    #[error("not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} does not exist")]
    NoSuch { what: String },
    #[error("authentication required: {reason}")]
    Unauthorized { reason: String },
    #[error("access denied: {reason}")]
    Forbidden { reason: String },
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRepoName { .. } => "INVALID_REPO_NAME",
            Error::InvalidPath { .. } => "INVALID_PATH",
            Error::InvalidRequest { .. } => "INVALID_REQUEST",
            Error::UnsupportedFormat { .. } => "UNSUPPORTED_FORMAT",
            Error::RepoNotFound { .. } => "REPO_NOT_FOUND",
            Error::RepoExists { .. } => "REPO_EXISTS",
            Error::WrongFormat { .. } => "WRONG_FORMAT",
            Error::ArtifactNotFound { .. } => "ARTIFACT_NOT_FOUND",
            Error::Immutable { .. } => "IMMUTABLE",
            Error::InvalidDigest { .. } => "INVALID_DIGEST",
            Error::DigestMismatch { .. } => "DIGEST_MISMATCH",
            Error::TooLarge { .. } => "TOO_LARGE",
            Error::IncompleteBody { .. } => "INCOMPLETE_BODY",
            Error::RangeNotSatisfiable { .. } => "RANGE_NOT_SATISFIABLE",
            Error::CorruptChunk { .. } => "CORRUPT_CHUNK",
            Error::MissingChunk { .. } => "MISSING_CHUNK",
            Error::NoQuorum { .. } => "NO_QUORUM",
            Error::NotReady { .. } => "NOT_READY",
            Error::ReadOnlyMirror { .. } => "READ_ONLY_MIRROR",
            Error::SyncReplicationTimeout { .. } => "SYNC_REPLICATION_TIMEOUT",
            Error::MixedVersions { .. } | Error::FormatNotEverywhere { .. } => "MIXED_VERSIONS",
            Error::TooManyUploads { .. } => "TOO_MANY_UPLOADS",
            Error::InsufficientStorage { .. } => "INSUFFICIENT_STORAGE",
            Error::RemoteNotFound { .. } => "UPSTREAM_NOT_FOUND",
            Error::UpstreamFailed { .. } => "UPSTREAM_UNAVAILABLE",
            Error::RemoteReadOnly { .. } => "REMOTE_READ_ONLY",
            Error::RouteNotFound => "NOT_FOUND",
            Error::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Error::AlreadyExists { .. } => "ALREADY_EXISTS",
            Error::NoSuch { .. } => "NOT_FOUND",
            Error::Unauthorized { .. } => "UNAUTHORIZED",
            Error::Forbidden { .. } => "DENIED",
            Error::TooManyAttempts { .. } => "TOO_MANY_REQUESTS",
            Error::Internal(_) => "INTERNAL",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRepoName { .. }
            | Error::InvalidPath { .. }
            | Error::InvalidRequest { .. }
            | Error::UnsupportedFormat { .. }
            | Error::WrongFormat { .. }
            | Error::InvalidDigest { .. }
            | Error::DigestMismatch { .. }
            | Error::IncompleteBody { .. } => StatusCode::BAD_REQUEST,
            Error::RepoNotFound { .. } | Error::ArtifactNotFound { .. } | Error::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            Error::RepoExists { .. } | Error::Immutable { .. } => StatusCode::CONFLICT,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::MethodNotAllowed | Error::RemoteReadOnly { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            Error::RemoteNotFound { .. } => StatusCode::NOT_FOUND,
            Error::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Error::AlreadyExists { .. } => StatusCode::CONFLICT,
            Error::NoSuch { .. } => StatusCode::NOT_FOUND,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NoQuorum { .. }
            | Error::NotReady { .. }
            | Error::MixedVersions { .. }
            | Error::FormatNotEverywhere { .. }
            | Error::TooManyUploads { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            // A redirect: clients that follow it send the write to the primary.
            Error::ReadOnlyMirror { .. } => StatusCode::TEMPORARY_REDIRECT,
            Error::SyncReplicationTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::CorruptChunk { .. } | Error::MissingChunk { .. } | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Wraps a storage or other unexpected failure; the detail is logged, not sent.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{context}: {err}"))
    }
}

impl From<ConsensusError> for Error {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::NoQuorum { .. } => Error::NoQuorum {
                reason: e.to_string(),
            },
            ConsensusError::NotLeader { .. } => Error::NoQuorum {
                reason: "no reachable raft leader".into(),
            },
            ConsensusError::Stopped { .. } => Error::NotReady {
                reason: e.to_string(),
            },
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::internal("rocksdb", e)
    }
}

/// The JSON body of every error response outside `/v2/`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            code: self.code(),
            message,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, Error::TooManyUploads { .. }) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
        }
        if let Error::TooManyAttempts { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        if let Error::RangeNotSatisfiable { size } = self {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONTENT_RANGE, value);
            }
        }
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
