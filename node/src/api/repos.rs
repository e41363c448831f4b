//! `/api/v1/repos`: create, list and inspect repositories (a generic repository's files are
//! listed by its format's routes).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::auth::model::{Action, AuthCommand, AuthOp};
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http_common::RepoParam;
use crate::metadata::model::{format_ms, now_ms, RepoStats, Repository};
use crate::metadata::remote_spec::{RemoteSpec, Secret};
use crate::names::RepoName;

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
    /// Pulls without a credential (repositories are private by default).
    #[serde(default)]
    anonymous_read: bool,
    /// A remote (pull-through) repository of this upstream URL.
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    upstream_username: Option<String>,
    #[serde(default)]
    upstream_password: Option<String>,
    /// How long cached metadata (tags, index documents) is served before it is revalidated.
    #[serde(default)]
    metadata_ttl_secs: Option<u64>,
    /// How long "the upstream does not have it" is remembered.
    #[serde(default)]
    negative_ttl_secs: Option<u64>,
    /// Requests in flight to the upstream at once, per node.
    #[serde(default)]
    upstream_concurrency: Option<u32>,
    /// Deadline for the upstream's answer, and for each piece of its body.
    #[serde(default)]
    upstream_timeout_secs: Option<u64>,
}

impl CreateRepoRequest {
    /// The remote spec the request describes (`None` for a local repository).
    fn remote(&self) -> Result<Option<RemoteSpec>> {
        let Some(url) = &self.remote else {
            if self.upstream_username.is_some() || self.upstream_password.is_some() {
                return Err(Error::InvalidRequest {
                    message: "upstream credentials need a remote URL".into(),
                });
            }
            return Ok(None);
        };
        let mut spec = RemoteSpec::new(url.clone());
        spec.username = self.upstream_username.clone();
        spec.password = self.upstream_password.clone().map(Secret::new);
        if let Some(ttl) = self.metadata_ttl_secs {
            spec.metadata_ttl_secs = ttl;
        }
        if let Some(ttl) = self.negative_ttl_secs {
            spec.negative_ttl_secs = ttl;
        }
        if let Some(n) = self.upstream_concurrency {
            spec.max_concurrency = n;
        }
        if let Some(t) = self.upstream_timeout_secs {
            spec.timeout_secs = t;
        }
        Ok(Some(spec))
    }
}

/// A remote repository's upstream, as the API shows it (never the password).
#[derive(Serialize)]
pub struct RemoteView {
    url: String,
    username: Option<String>,
    password_set: bool,
    metadata_ttl_secs: u64,
    negative_ttl_secs: u64,
    upstream_concurrency: u32,
    upstream_timeout_secs: u64,
}

impl RemoteView {
    fn new(spec: &RemoteSpec) -> Self {
        Self {
            url: spec.url.clone(),
            username: spec.username.clone(),
            password_set: spec.password.is_some(),
            metadata_ttl_secs: spec.metadata_ttl_secs,
            negative_ttl_secs: spec.negative_ttl_secs,
            upstream_concurrency: spec.max_concurrency,
            upstream_timeout_secs: spec.timeout_secs,
        }
    }
}

fn default_format() -> String {
    crate::formats::generic::NAME.to_string()
}

#[derive(Serialize)]
pub struct RepoView {
    name: String,
    format: String,
    immutable: bool,
    replication: &'static str,
    created_at: String,
    artifacts: u64,
    logical_bytes: u64,
    physical_bytes: u64,
    anonymous_read: bool,
    /// `local` or `remote`.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<RemoteView>,
}

impl RepoView {
    fn new(repo: &Repository, stats: &RepoStats, anonymous_read: bool) -> Self {
        Self {
            name: repo.name.to_string(),
            format: repo.format.to_string(),
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
            anonymous_read,
            kind: if repo.remote.is_some() {
                "remote"
            } else {
                "local"
            },
            remote: repo.remote.as_ref().map(RemoteView::new),
        }
    }
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response> {
    let request: CreateRepoRequest =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest {
            message: format!(
                "expected {{\"name\", \"format\", \"immutable\", \"replication\", \"remote\", …}}: {e}"
            ),
        })?;
    let name = RepoName::parse(&request.name)?;
    let remote = request.remote()?;
    let format = request.format.as_str();
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
        .create_repo(name, format, request.immutable, sync_replication, remote)
        .await?;
    if request.anonymous_read {
        let command = AuthCommand {
            at_ms: now_ms(),
            op: AuthOp::SetAnonymousRead {
                repo: repo.name.to_string(),
                anonymous_read: true,
            },
        };
        state.service.propose_format(&command, None).await?;
    }
    let mut response = (
        StatusCode::CREATED,
        Json(RepoView::new(
            &repo,
            &RepoStats::default(),
            request.anonymous_read,
        )),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(crate::api::AuditAction("repo.create"));
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/repos/{}", repo.name)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Serialize)]
pub struct RepoList {
    repositories: Vec<RepoView>,
}

/// The repositories the caller may read.
pub async fn list(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Json<RepoList>> {
    let catalog = &state.service.catalog;
    let auth = state.auth.state()?;
    let mut repositories = Vec::new();
    for repo in catalog.repos()? {
        if !state
            .auth
            .allows(&identity, repo.name.as_str(), Action::Read)
        {
            continue;
        }
        let stats = catalog.repo_stats(&repo.name)?;
        let public = auth.policy.anonymous_read(repo.name.as_str());
        repositories.push(RepoView::new(&repo, &stats, public));
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
    let public = state.auth.state()?.policy.anonymous_read(name.as_str());
    Ok(Json(RepoView::new(&repo, &stats, public)))
}

#[derive(Deserialize)]
pub struct PurgeQuery {
    #[serde(default)]
    path: String,
}

#[derive(Serialize)]
pub struct PurgeAnswer {
    repo: String,
    path: String,
    removed: u64,
    /// True when the limit per call was reached: purge again for the rest.
    more: bool,
}

/// `DELETE /api/v1/repos/{repo}/cache?path=PREFIX`: removes what a remote repository cached
/// under the prefix (everything without one); the next request fetches it again.
pub async fn purge_cache(
    State(state): State<AppState>,
    RepoParam(name): RepoParam,
    query: std::result::Result<
        axum::extract::Query<PurgeQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response> {
    let axum::extract::Query(query) = query.map_err(|e| Error::InvalidRequest {
        message: e.body_text(),
    })?;
    if query.path.len() > 1024 || query.path.contains("..") {
        return Err(Error::InvalidPath {
            reason: "a purge prefix is at most 1024 characters, without \"..\"".into(),
        });
    }
    let repo = state.service.repo_for_write(&name).await?;
    if repo.remote.is_none() {
        return Err(Error::InvalidRequest {
            message: format!("repository {name} is not a remote repository: it keeps no cache"),
        });
    }
    let format = state
        .formats
        .iter()
        .find(|format| format.name() == repo.format)
        .ok_or_else(|| Error::Internal(format!("no format {} on this node", repo.format)))?;
    let removed = format.purge(&state.service, &repo, &query.path).await?;
    let mut response = Json(PurgeAnswer {
        repo: name.to_string(),
        path: query.path,
        removed,
        more: removed as usize >= crate::remote::MAX_PURGE,
    })
    .into_response();
    response
        .extensions_mut()
        .insert(crate::api::AuditAction("cache.purge"));
    Ok(response)
}

#[derive(Deserialize)]
pub struct PackagesQuery {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct PackageList {
    repo: String,
    format: String,
    packages: Vec<crate::formats::listing::PackageSummary>,
    /// Pass as `after` to get the next page; null on the last page.
    next: Option<String>,
}

/// The package listing of the repository's format (`WRONG_FORMAT` for a format that holds
/// no packages: generic files are listed at `/files`, images at `/v2/`).
fn packages_of(
    state: &AppState,
    repo: &Repository,
) -> Result<&'static dyn crate::formats::listing::Packages> {
    state
        .formats
        .iter()
        .find(|format| format.name() == repo.format)
        .and_then(|format| format.packages())
        .ok_or_else(|| Error::WrongFormat {
            repo: repo.name.to_string(),
            format: repo.format.to_string(),
            expected: "a package format".into(),
        })
}

/// `GET /api/v1/repos/{repo}/packages`: the packages of a package repository.
pub async fn packages(
    State(state): State<AppState>,
    RepoParam(name): RepoParam,
    query: std::result::Result<
        axum::extract::Query<PackagesQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<PackageList>> {
    let axum::extract::Query(query) = query.map_err(|e| Error::InvalidRequest {
        message: e.body_text(),
    })?;
    let repo = state.service.catalog.must_repo(&name)?;
    let listing = packages_of(&state, &repo)?;
    let limit = query
        .limit
        .unwrap_or(1000)
        .clamp(1, state.service.config.limits.max_list_page);
    let page = listing.list(&state.service, &name, query.after.as_deref(), limit)?;
    Ok(Json(PackageList {
        repo: name.to_string(),
        format: repo.format.to_string(),
        packages: page.items,
        next: page.next,
    }))
}

/// `GET /api/v1/repos/{repo}/packages/{name}`: one package, its versions and their files.
pub async fn package(
    State(state): State<AppState>,
    axum::extract::Path((repo, package)): axum::extract::Path<(String, String)>,
) -> Result<Json<crate::formats::listing::PackageDetail>> {
    let name = RepoName::parse(&repo)?;
    let repo = state.service.catalog.must_repo(&name)?;
    let listing = packages_of(&state, &repo)?;
    Ok(Json(listing.package(&state.service, &name, &package)?))
}
