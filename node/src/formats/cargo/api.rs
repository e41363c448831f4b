//! The cargo format's routes, under `/cargo/{repo}/` (the registry's index is
//! `sparse+http(s)://HOST/cargo/REPO/index/`):
//!
//! | route | what |
//! |---|---|
//! | `GET index/config.json` | `dl`, `api` (from the client-facing host) and `auth-required` |
//! | `GET index/{prefix}/{name}` | the crate's index file, one JSON line per version (`ETag`, `304`) |
//! | `PUT api/v1/crates/new` | publish |
//! | `GET api/v1/crates/{name}/{version}/download` | the `.crate` (`Range`, `ETag`) |
//! | `DELETE …/{name}/{version}/yank`, `PUT …/unyank` | yank, unyank |
//! | `GET, PUT, DELETE api/v1/crates/{name}/owners` | owners |
//! | `GET api/v1/crates?q=&per_page=` | search |
//! | `GET me` | how to get a token (the challenge's `login_url`) |
//!
//! Errors are JSON `{"errors":[{"detail":"…"}]}`, which cargo prints.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::names::{check_version, name_of_index_path};
use super::publish::invalid;
use super::registry::{Registry, Written};
use super::route::Route;
use crate::auth::Identity;
use crate::error::Error;
use crate::formats::file_response::{serve_file, FileResponse};
use crate::formats::routes::{status_and_message, ErrorBody, RouteError};
use crate::http_common::{
    client_base_url, not_modified, tagged_document_response, AuditAction, LocalFirst,
};
use crate::names::RepoName;

/// The format's error body.
pub fn error_response(error: Error) -> Response {
    // Crate names are unique modulo case and `-`/`_`: taken is a conflict.
    let conflict = matches!(error, Error::AlreadyExists { .. });
    let (status, message) = status_and_message("cargo", error);
    let status = if conflict {
        StatusCode::CONFLICT
    } else {
        status
    };
    (status, Json(json!({ "errors": [{ "detail": message }] }))).into_response()
}

/// An error of a cargo route, answered in the format's body.
pub type CargoError = RouteError<super::Cargo>;

impl ErrorBody for super::Cargo {
    fn error_response(error: Error) -> Response {
        error_response(error)
    }
}

type Result<T> = std::result::Result<T, CargoError>;

/// Splits `/cargo/{repo}/{rest}` into the repository and the rest.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    crate::formats::routes::split_path("/cargo/", path)
}

/// Counts every answered request of the format (`arca_cargo_requests_total`, latency).
pub async fn track(request: Request, next: Next) -> Response {
    let label = |method: &Method, path: &str| {
        split_path(path)
            .map(|(_, rest)| Route::parse(rest))
            .unwrap_or(Route::Unknown)
            .label(method)
    };
    super::metrics::METRICS.track(label, request, next).await
}

fn ok(value: Value, action: &'static str) -> Response {
    let mut response = (StatusCode::OK, Json(value)).into_response();
    response.extensions_mut().insert(AuditAction(action));
    response
}

/// Every cargo request.
pub async fn dispatch(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    match handle(&registry, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(registry: &Arc<Registry>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let (repo, rest) = split_path(parts.uri.path()).ok_or(Error::RouteNotFound)?;
    let repo = RepoName::parse(repo)?;
    registry.cargo_repo(&repo)?;
    let route = Route::parse(rest);
    let method = &parts.method;
    let headers = &parts.headers;
    let identity = parts
        .extensions
        .get::<Identity>()
        .cloned()
        .unwrap_or_else(Identity::anonymous);
    let base = client_base_url(&registry.service.config, headers);
    let read_body = |limit: usize| async move {
        axum::body::to_bytes(body, limit).await.map_err(|_| {
            CargoError::from(Error::TooLarge {
                limit: limit as u64,
            })
        })
    };
    match (method.clone(), route) {
        (Method::GET | Method::HEAD, Route::Config) => {
            let config = json!({
                "dl": format!("{base}/cargo/{repo}/api/v1/crates"),
                "api": format!("{base}/cargo/{repo}"),
                "auth-required": registry.auth_required(&repo),
            });
            let mut response = Json(config).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        (Method::GET | Method::HEAD, Route::Index(path)) => index_file(registry, &repo, &path, headers),
        (Method::PUT, Route::Publish) => {
            let body = read_body(registry.max_publish_body()).await?;
            registry.publish(&repo, &identity, body).await?;
            let warnings = json!({"warnings": {"invalid_categories": [], "invalid_badges": [], "other": []}});
            Ok(ok(warnings, "cargo.publish"))
        }
        (Method::GET | Method::HEAD, Route::Download(name, vers)) => {
            let local_first = parts.extensions.get::<LocalFirst>().is_some();
            download(registry, &repo, &name, &vers, method, headers, local_first).await
        }
        (Method::DELETE, Route::Yank(name, vers)) => {
            registry.yank(&repo, &identity, &name, &vers, true).await?;
            Ok(ok(json!({"ok": true}), "cargo.yank"))
        }
        (Method::PUT, Route::Unyank(name, vers)) => {
            registry.yank(&repo, &identity, &name, &vers, false).await?;
            Ok(ok(json!({"ok": true}), "cargo.unyank"))
        }
        (Method::GET, Route::Owners(name)) => {
            let record = registry.must_crate(&repo, &name)?;
            let users: Vec<Value> = record
                .owners
                .iter()
                .enumerate()
                .map(|(i, login)| json!({"id": i + 1, "login": login, "name": null}))
                .collect();
            Ok(Json(json!({ "users": users })).into_response())
        }
        (Method::PUT | Method::DELETE, Route::Owners(name)) => {
            #[derive(serde::Deserialize)]
            struct Users {
                users: Vec<String>,
            }
            let body = read_body(64 << 10).await?;
            let users: Users = serde_json::from_slice(&body)
                .map_err(|e| invalid(format!("an owners body is {{\"users\": [\"login\"]}}: {e}")))?;
            let add = *method == Method::PUT;
            let written = registry
                .change_owners(&repo, &identity, &name, users.users.clone(), add)
                .await?;
            let verb = if add { "added" } else { "removed" };
            let msg = match written {
                Written::Changed => format!("{verb} {} as owners of {name}", users.users.join(", ")),
                Written::Unchanged => format!("the owners of {name} were already so"),
            };
            Ok(ok(json!({"ok": true, "msg": msg}), "cargo.owners"))
        }
        (Method::GET, Route::Search) => search(registry, &repo, parts.uri.query().unwrap_or_default()),
        (Method::GET, Route::Me) => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "To use this registry, create a token:\n\n    arca token create --scope '{repo}:write' --expires 90d\n\nthen give it to cargo:\n\n    cargo login --registry <name>\n\n(reads need only '{repo}:read').\n"
            ),
        )
            .into_response()),
        (_, Route::Unknown) => Err(Error::RouteNotFound.into()),
        _ => Err(Error::MethodNotAllowed.into()),
    }
}

/// A crate's index file: `404` for a crate that is not here (cargo then reports it missing,
/// and probes other spellings of `-`/`_` cheaply), `304` for an unchanged one.
fn index_file(
    registry: &Registry,
    repo: &RepoName,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    let not_found = || Error::ArtifactNotFound {
        repo: repo.to_string(),
        path: format!("index/{path}"),
    };
    let name = name_of_index_path(path).ok_or_else(not_found)?;
    let record = registry.exact_crate(repo, name)?.ok_or_else(not_found)?;
    let etag = Registry::index_etag(&record);
    let content_type = "text/plain; charset=utf-8";
    if not_modified(headers, &etag) {
        // Answered from the crate's record alone: nothing is rendered.
        let empty = bytes::Bytes::new();
        return Ok(tagged_document_response(
            headers,
            content_type,
            record.modified_at_ms,
            HeaderMap::new(),
            &etag,
            empty,
        ));
    }
    let body = registry.index_file(repo, &record)?.ok_or_else(not_found)?;
    Ok(tagged_document_response(
        headers,
        content_type,
        record.modified_at_ms,
        HeaderMap::new(),
        &etag,
        body,
    ))
}

async fn download(
    registry: &Registry,
    repo: &RepoName,
    name: &str,
    vers: &str,
    method: &Method,
    headers: &HeaderMap,
    local_first: bool,
) -> Result<Response> {
    let not_found = || Error::ArtifactNotFound {
        repo: repo.to_string(),
        path: format!("crate {name} version {vers}"),
    };
    check_version(vers).map_err(|reason| Error::InvalidPath { reason })?;
    let service = &registry.service;
    let find = || -> crate::error::Result<Option<super::model::VersionRecord>> {
        Ok(match registry.exact_crate(repo, name)? {
            Some(record) => service.catalog.cargo_version(repo, &record.name, vers)?,
            None => None,
        })
    };
    let mut found = find()?;
    if found.is_none() && local_first {
        // Served without a barrier because files never change: a miss may be a version
        // published through another node a moment ago.
        service.read_barrier().await?;
        found = find()?;
    }
    let record = found.filter(|v| v.vers == vers).ok_or_else(not_found)?;
    let blob = service
        .catalog
        .blob(&record.blob)?
        .ok_or_else(|| Error::Internal(format!("{name} {vers} references a missing blob")))?;
    let mut extra = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&record.sha256.to_hex()) {
        extra.insert(header::HeaderName::from_static("x-checksum-sha256"), value);
    }
    let response = FileResponse {
        blob: &blob.descriptor,
        modified_ms: record.published_at_ms,
        immutable: true,
        content_type: "application/gzip",
        headers: extra,
    };
    Ok(serve_file(service, method, headers, response).await?)
}

fn search(registry: &Registry, repo: &RepoName, query: &str) -> Result<Response> {
    #[derive(serde::Deserialize, Default)]
    struct Query {
        #[serde(default)]
        q: String,
        per_page: Option<usize>,
    }
    let query: Query = serde_urlencoded::from_str(query).unwrap_or_default();
    let per_page = query.per_page.unwrap_or(10).clamp(1, 100);
    let text = query.q.to_lowercase();
    let (crates, _) = registry.service.catalog.cargo_crates(repo, None, 10_000)?;
    let matches: Vec<_> = crates
        .iter()
        .filter(|c| {
            text.is_empty()
                || c.name.to_lowercase().contains(&text)
                || c.description.to_lowercase().contains(&text)
        })
        .collect();
    let found: Vec<Value> = matches
        .iter()
        .take(per_page)
        .map(
            |c| json!({"name": c.name, "max_version": c.max_version, "description": c.description}),
        )
        .collect();
    Ok(Json(json!({"crates": found, "meta": {"total": matches.len()}})).into_response())
}
