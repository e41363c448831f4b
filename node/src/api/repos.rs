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
        .create_repo(name, format, request.immutable, sync_replication)
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
