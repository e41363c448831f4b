//! The generic format's routes: `/files/{repo}/{path...}` (PUT, GET, HEAD, DELETE) and the
//! file listing of the admin API, `/api/v1/repos/{repo}/files[/{path...}]`.

use axum::body::Body;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::http_common::RepoParam;
use crate::metadata::model::Artifact;

use super::files::Files;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::formats::file_response::{serve_file, FileResponse};
use crate::metadata::model::format_ms;
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
    State(files): State<Arc<Files>>,
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
    let result = files
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

pub async fn delete(State(files): State<Arc<Files>>, uri: Uri) -> Result<StatusCode> {
    let (repo, path) = target(&uri)?;
    files.delete_file(&repo, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get(
    State(files): State<Arc<Files>>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
    local_first: Option<axum::Extension<crate::http_common::LocalFirst>>,
) -> Result<Response> {
    let (repo_name, path) = target(&uri)?;
    let mut found = files.file(&repo_name, &path);
    if local_first.is_some() && found.is_err() {
        // Served without a barrier because the repository is immutable: a miss may be a file
        // written through another node a moment ago.
        files.service.read_barrier().await?;
        found = files.file(&repo_name, &path);
    }
    let mut cache = None;
    let remote_repo = files
        .service
        .catalog
        .repo(&repo_name)?
        .filter(|r| r.remote.is_some() && r.format == super::NAME);
    if let Some(repo) = remote_repo {
        let cached = found.as_ref().ok().map(|(_, artifact, _)| artifact);
        match super::remote::decide(&files, &repo, &path, &method, cached).await? {
            Some(super::remote::Decision::Answer(response)) => return Ok(response),
            Some(super::remote::Decision::Local(result)) => cache = Some(result),
            None => {}
        }
    }
    let (immutable, artifact, blob, read_through) = match found {
        Ok((repo, artifact, blob)) => (repo.immutable, artifact, blob.descriptor, false),
        Err(error @ (Error::ArtifactNotFound { .. } | Error::RepoNotFound { .. })) => {
            match files.service.geo.read_through(&repo_name, &path).await? {
                Some(found) => (found.immutable, found.artifact, found.blob, true),
                None => return Err(error),
            }
        }
        Err(error) => return Err(error),
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(header::HeaderName::from_static(name), value);
        }
    };
    set(CHECKSUM_SHA256, &artifact.sha256.to_hex());
    set(CHECKSUM_BLAKE3, &artifact.blob.to_hex());
    if read_through {
        set(READ_THROUGH, "primary");
    }
    if let Some(result) = cache {
        result.mark(&mut headers);
    }
    let file = FileResponse {
        blob: &blob,
        modified_ms: artifact.updated_at_ms,
        immutable,
        content_type: "application/octet-stream",
        headers,
    };
    serve_file(&files.service, &method, &request_headers, file).await
}

#[derive(Deserialize)]
pub struct FilesQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct FileView {
    path: String,
    size: u64,
    sha256: String,
    blake3: String,
    created_at: String,
    updated_at: String,
}

impl FileView {
    fn new(a: &Artifact) -> Self {
        Self {
            path: a.path.to_string(),
            size: a.size,
            sha256: a.sha256.to_hex(),
            blake3: a.blob.to_hex(),
            created_at: format_ms(a.created_at_ms),
            updated_at: format_ms(a.updated_at_ms),
        }
    }
}

#[derive(Serialize)]
pub struct FileList {
    repo: String,
    prefix: String,
    files: Vec<FileView>,
    /// Pass as `after` to get the next page; null on the last page.
    next: Option<String>,
}

/// `GET /api/v1/repos/{repo}/files/{path...}`: one file's metadata.
pub async fn file(State(files): State<Arc<Files>>, uri: Uri) -> Result<Json<FileView>> {
    let rest = uri
        .path()
        .strip_prefix("/api/v1/repos/")
        .unwrap_or_default();
    let (repo, path) = rest.split_once("/files/").unwrap_or((rest, ""));
    let (repo, path) = parse_target(repo, path)?;
    let (_, artifact, _) = files.file(&repo, &path)?;
    Ok(Json(FileView::new(&artifact)))
}

pub async fn files(
    State(files): State<Arc<Files>>,
    RepoParam(name): RepoParam,
    query: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FileList>> {
    let Query(query) = query.map_err(|e| Error::InvalidRequest {
        message: e.body_text(),
    })?;
    let limit = query.limit.unwrap_or(1000);
    let page = files.list_files(&name, &query.prefix, query.after.as_deref(), limit)?;
    let files = page.items.into_iter().map(|a| FileView::new(&a)).collect();
    Ok(Json(FileList {
        repo: name.to_string(),
        prefix: query.prefix,
        files,
        next: page.next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
