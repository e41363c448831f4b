//! The PyPI format's routes, under `/pypi/{repo}/`:
//!
//! | route | what |
//! |---|---|
//! | `GET simple/` | the project list (PEP 503 HTML or PEP 691 JSON) |
//! | `GET simple/{project}/` | a project page; a name not in normal form gets `301` to it |
//! | `GET, HEAD files/{project}/{version}/{file}` | a distribution file (`Range`, `ETag`) |
//! | `GET, HEAD files/{project}/{version}/{file}.metadata` | its core metadata (PEP 658) |
//! | `POST` (the repository URL, with or without `/`) | twine's legacy upload |
//! | `POST -/yank` | yank or un-yank a version (PEP 592), JSON `{project, version, reason, yanked}` |
//!
//! Errors are `text/plain` with the message also in the status line's reason phrase (what
//! twine and pip print). Writes are never redirected: twine aborts on any `3xx`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::index::Index;
use super::names::{normalize, same_version};
use super::simple::{self, Form};
use crate::error::Error;
use crate::formats::file_response::{serve_file, FileResponse};
use crate::formats::routes::{status_and_message, text_response, ErrorBody, RouteError};
use crate::http_common::{client_base_url, etag_matches, LocalFirst};
use crate::names::RepoName;

/// The format's error body: the message as text, and as the reason phrase.
pub fn error_response(error: Error) -> Response {
    let (status, message) = status_and_message("pypi", error);
    text_response(status, &message)
}

/// An error of a PyPI route, answered in the format's body.
pub type PypiError = RouteError<super::Pypi>;

impl ErrorBody for super::Pypi {
    fn error_response(error: Error) -> Response {
        error_response(error)
    }
}

type Result<T> = std::result::Result<T, PypiError>;

fn repo_name(raw: &str) -> Result<RepoName> {
    Ok(RepoName::parse(raw)?)
}

/// Counts every answered request of the format (`arca_pypi_requests_total`, latency).
pub async fn track(request: Request, next: Next) -> Response {
    let label = |method: &Method, path: &str| route_of(method, path);
    super::metrics::METRICS.track(label, request, next).await
}

/// The metric label of a request: its route, never its names.
fn route_of(method: &Method, path: &str) -> &'static str {
    let rest = path.strip_prefix("/pypi/").unwrap_or_default();
    let below = rest.split_once('/').map_or("", |(_, below)| below);
    match (method, below) {
        (&Method::POST, "" | "legacy/" | "legacy") => "upload",
        (&Method::POST, "-/yank") => "yank",
        (_, "simple" | "simple/") => "project_list",
        (_, below) if below.starts_with("simple/") => "project_page",
        (_, below) if below.starts_with("files/") && below.ends_with(".metadata") => "metadata",
        (_, below) if below.starts_with("files/") => "file",
        _ => "other",
    }
}

/// `POST /pypi/{repo}/`: twine's upload. `200` for a new file and for a retried identical
/// one; `409` "File already exists" for different bytes under a released file name.
pub async fn upload(
    State(index): State<Arc<Index>>,
    Path(repo): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let repo = repo_name(&repo)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let uploaded = index.upload(&repo, content_type, body).await?;
    let message = if uploaded.created {
        format!("stored {}", uploaded.filename)
    } else {
        format!("{} was already stored with these bytes", uploaded.filename)
    };
    let mut response = text_response(StatusCode::OK, &message);
    response
        .extensions_mut()
        .insert(crate::http_common::AuditAction("pypi.upload"));
    Ok(response)
}

/// The body of `POST /pypi/{repo}/-/yank`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YankRequest {
    project: String,
    version: String,
    #[serde(default)]
    reason: Option<String>,
    /// `false` un-yanks.
    #[serde(default = "yes")]
    yanked: bool,
}

fn yes() -> bool {
    true
}

pub async fn yank(
    State(index): State<Arc<Index>>,
    Path(repo): Path<String>,
    body: std::result::Result<Json<YankRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response> {
    let repo = repo_name(&repo)?;
    let Json(request) = body.map_err(|e| Error::InvalidRequest {
        message: e.body_text(),
    })?;
    if request.reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(Error::InvalidRequest {
            message: "a yank reason has at most 1000 characters".into(),
        }
        .into());
    }
    let reason = request.yanked.then(|| request.reason.unwrap_or_default());
    let files = index
        .yank(&repo, &request.project, &request.version, reason)
        .await?;
    let mut response = Json(serde_json::json!({
        "project": normalize(&request.project),
        "version": request.version,
        "yanked": request.yanked,
        "files_changed": files,
    }))
    .into_response();
    response
        .extensions_mut()
        .insert(crate::http_common::AuditAction("pypi.yank"));
    Ok(response)
}

#[derive(Deserialize)]
pub struct PageQuery {
    format: Option<String>,
}

/// The form a request asked for (`None`: it accepts none of them).
fn form_of(headers: &HeaderMap, query: &PageQuery) -> Option<Form> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    simple::negotiate(accept, query.format.as_deref())
}

/// The `406` for a client that accepts no form this index serves.
fn not_acceptable() -> Response {
    text_response(
        StatusCode::NOT_ACCEPTABLE,
        &format!(
            "this index serves {}, {} and {}",
            simple::JSON,
            simple::HTML_V1,
            simple::HTML
        ),
    )
}

/// An index document with `Vary: Accept`, an `ETag` of its bytes, and `no-cache` (publish then
/// install must see the new file at once).
fn document(request: &HeaderMap, form: Form, body: Vec<u8>) -> Response {
    let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
    let mut headers = HeaderMap::new();
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(form.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(candidates) = request.get(header::IF_NONE_MATCH) {
        if etag_matches(candidates.to_str().unwrap_or_default(), &etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
    }
    (StatusCode::OK, headers, body).into_response()
}

/// Most projects the project list shows.
const MAX_PROJECT_LIST: usize = 100_000;

/// `GET /pypi/{repo}/simple/`.
pub async fn project_list(
    State(index): State<Arc<Index>>,
    Path(repo): Path<String>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<PageQuery>,
) -> Result<Response> {
    let repo = repo_name(&repo)?;
    index.pypi_repo(&repo)?;
    let Some(form) = form_of(&headers, &query) else {
        return Ok(not_acceptable());
    };
    let (projects, _) = index
        .service
        .catalog
        .pypi_projects(&repo, None, MAX_PROJECT_LIST)?;
    let projects: Vec<(String, String)> = projects
        .into_iter()
        .map(|(normalized, record)| (normalized, record.name))
        .collect();
    Ok(document(
        &headers,
        form,
        simple::project_list(form, &projects),
    ))
}

/// `GET /pypi/{repo}/simple/{project}/`.
pub async fn project_page(
    State(index): State<Arc<Index>>,
    Path((repo, project)): Path<(String, String)>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<PageQuery>,
) -> Result<Response> {
    let repo = repo_name(&repo)?;
    index.pypi_repo(&repo)?;
    let base = client_base_url(&index.service.config, &headers);
    let normalized = normalize(&project);
    if normalized != project {
        let location = format!("{base}/pypi/{repo}/simple/{normalized}/");
        return Ok((
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, location)],
        )
            .into_response());
    }
    let Some(form) = form_of(&headers, &query) else {
        return Ok(not_acceptable());
    };
    let Some((_, files)) = index.project(&repo, &normalized)? else {
        return Err(Error::ArtifactNotFound {
            repo: repo.to_string(),
            path: format!("project {normalized}"),
        }
        .into());
    };
    let files_base = format!("{base}/pypi/{repo}/files/{normalized}");
    Ok(document(
        &headers,
        form,
        simple::project_page(form, &normalized, &files_base, &files),
    ))
}

/// `GET|HEAD /pypi/{repo}/files/{project}/{version}/{file}[.metadata]`.
pub async fn file(
    State(index): State<Arc<Index>>,
    Path((repo, project, version, filename)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
    local_first: Option<axum::Extension<LocalFirst>>,
) -> Result<Response> {
    let repo = repo_name(&repo)?;
    index.pypi_repo(&repo)?;
    let (filename, metadata) = match filename.strip_suffix(".metadata") {
        Some(stem) => (stem.to_string(), true),
        None => (filename, false),
    };
    let normalized = normalize(&project);
    let catalog = &index.service.catalog;
    let mut found = catalog.pypi_file(&repo, &normalized, &filename)?;
    if found.is_none() && local_first.is_some() {
        // Served without a barrier because files never change: a miss may be a file
        // uploaded through another node a moment ago.
        index.service.read_barrier().await?;
        found = catalog.pypi_file(&repo, &normalized, &filename)?;
    }
    let not_found = || Error::ArtifactNotFound {
        repo: repo.to_string(),
        path: format!("{normalized}/{version}/{filename}"),
    };
    let file = found
        .filter(|file| same_version(&file.version, &version))
        .ok_or_else(not_found)?;
    let (blob, content_type) = if metadata {
        (file.metadata.blob, "text/plain; charset=utf-8")
    } else {
        (file.blob, "application/octet-stream")
    };
    let record = catalog
        .blob(&blob)?
        .ok_or_else(|| Error::Internal(format!("{filename} references a missing blob")))?;
    let mut extra = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&record.descriptor.sha256.to_hex()) {
        extra.insert(header::HeaderName::from_static("x-checksum-sha256"), value);
    }
    let response = FileResponse {
        blob: &record.descriptor,
        modified_ms: file.uploaded_at_ms,
        immutable: true,
        content_type,
        headers: extra,
    };
    Ok(serve_file(&index.service, &method, &headers, response).await?)
}

/// `GET /pypi/{repo}/simple` without the slash: pip and browsers are sent to the canonical
/// URL (a read, so a redirect is safe).
pub async fn to_slash(
    headers: HeaderMap,
    State(index): State<Arc<Index>>,
    uri: axum::http::Uri,
) -> Response {
    let base = client_base_url(&index.service.config, &headers);
    let location = format!("{base}{}/", uri.path());
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_without_names() {
        let cases = [
            (Method::POST, "/pypi/py/", "upload"),
            (Method::POST, "/pypi/py", "upload"),
            (Method::POST, "/pypi/py/-/yank", "yank"),
            (Method::GET, "/pypi/py/simple/", "project_list"),
            (Method::GET, "/pypi/py/simple/arca-hello/", "project_page"),
            (Method::GET, "/pypi/py/files/a/1.0/a-1.0.tar.gz", "file"),
            (
                Method::GET,
                "/pypi/py/files/a/1.0/a-1.0.tar.gz.metadata",
                "metadata",
            ),
        ];
        for (method, path, label) in cases {
            assert_eq!(route_of(&method, path), label, "{method} {path}");
        }
    }
}
