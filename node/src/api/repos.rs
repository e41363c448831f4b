//! `/api/v1/repos`: create, list and inspect repositories; list a repository's files.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::error::{Error, Result};
use crate::model::{format_ms, Artifact, Format, RepoStats, Repository};
use crate::names::RepoName;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRepoRequest {
    name: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default)]
    immutable: bool,
    /// `"async"` (default) or `"sync"`: a push is acknowledged once a mirror region applied it.
    #[serde(default)]
    replication: Option<String>,
}

fn default_format() -> String {
    Format::Generic.as_str().to_string()
}

#[derive(Serialize)]
pub struct RepoView {
    name: String,
    format: &'static str,
    immutable: bool,
    replication: &'static str,
    created_at: String,
    artifacts: u64,
    logical_bytes: u64,
    physical_bytes: u64,
}

impl RepoView {
    fn new(repo: &Repository, stats: &RepoStats) -> Self {
        Self {
            name: repo.name.to_string(),
            format: repo.format.as_str(),
            immutable: repo.immutable,
            replication: if repo.sync_replication {
                "sync"
            } else {
                "async"
            },
            created_at: format_ms(repo.created_at_ms),
            artifacts: stats.artifacts,
            logical_bytes: stats.logical_bytes,
            physical_bytes: stats.physical_bytes,
        }
    }
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let request: CreateRepoRequest =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest {
            message: format!(
                "expected {{\"name\", \"format\", \"immutable\", \"replication\"}}: {e}"
            ),
        })?;
    let name = RepoName::parse(&request.name)?;
    let format = Format::parse(&request.format)?;
    let sync_replication = match request.replication.as_deref() {
        None | Some("async") => false,
        Some("sync") => true,
        Some(other) => {
            return Err(Error::InvalidRequest {
                message: format!("replication must be \"sync\" or \"async\", not {other:?}"),
            })
        }
    };
    let repo = state
        .service
        .create_repo(name, format, request.immutable, sync_replication)
        .await?;
    let mut response = (
        StatusCode::CREATED,
        Json(RepoView::new(&repo, &RepoStats::default())),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/repos/{}", repo.name)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Serialize)]
pub struct RepoList {
    repositories: Vec<RepoView>,
}

pub async fn list(State(state): State<AppState>) -> Result<Json<RepoList>> {
    let catalog = &state.service.catalog;
    let mut repositories = Vec::new();
    for repo in catalog.repos()? {
        let stats = catalog.repo_stats(&repo.name)?;
        repositories.push(RepoView::new(&repo, &stats));
    }
    Ok(Json(RepoList { repositories }))
}

pub async fn show(
    State(state): State<AppState>,
    RepoParam(name): RepoParam,
) -> Result<Json<RepoView>> {
    let catalog = &state.service.catalog;
    let repo = catalog.must_repo(&name)?;
    let stats = catalog.repo_stats(&name)?;
    Ok(Json(RepoView::new(&repo, &stats)))
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
pub async fn file(State(state): State<AppState>, uri: Uri) -> Result<Json<FileView>> {
    let rest = uri
        .path()
        .strip_prefix("/api/v1/repos/")
        .unwrap_or_default();
    let (repo, path) = rest.split_once("/files/").unwrap_or((rest, ""));
    let (repo, path) = crate::api::files::parse_target(repo, path)?;
    let (_, artifact, _) = state.service.file(&repo, &path)?;
    Ok(Json(FileView::new(&artifact)))
}

pub async fn files(
    State(state): State<AppState>,
    RepoParam(name): RepoParam,
    query: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FileList>> {
    let Query(query) = query.map_err(|e| Error::InvalidRequest {
        message: e.body_text(),
    })?;
    let limit = query.limit.unwrap_or(1000);
    let page = state
        .service
        .list_files(&name, &query.prefix, query.after.as_deref(), limit)?;
    let files = page.items.into_iter().map(|a| FileView::new(&a)).collect();
    Ok(Json(FileList {
        repo: name.to_string(),
        prefix: query.prefix,
        files,
        next: page.next,
    }))
}
