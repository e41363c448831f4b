//! The npm format's routes, under `/npm/{repo}/` (the registry URL npm is given):
//!
//! | route | what |
//! |---|---|
//! | `GET /{package}` | the packument: abbreviated when asked for, full otherwise and with `?write=true` |
//! | `PUT /{package}` | publish (a tarball in `_attachments`) or deprecate (none) |
//! | `GET, HEAD /{package}/-/{name}-{version}.tgz` | a tarball (`Range`, `ETag`) |
//! | `PUT /{package}/-rev/{rev}`, `DELETE …/-/{file}/-rev/{rev}`, `DELETE /{package}[/-rev/{rev}]` | unpublish |
//! | `GET, PUT, DELETE /-/package/{package}/dist-tags[/{tag}]` | dist-tags |
//! | `POST /-/v1/login`, `GET|POST /-/v1/login/{id}`, `GET /-/v1/done/{id}` | web login |
//! | `PUT /-/user/org.couchdb.user:{name}` | legacy login; `DELETE /-/user/token/{token}` logs out |
//! | `GET /-/whoami`, `GET /-/ping`, `GET /-/v1/search` | |
//! | `POST /-/npm/v1/security/advisories/bulk` | `npm audit`: no advisories are known here |
//!
//! Errors are JSON `{"error": "…"}`, which npm prints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::names::PackageName;
use super::packument::{self, Form};
use super::publish::invalid;
use super::registry::{Registry, Written};
use super::route::Route;
use crate::auth::Identity;
use crate::error::Error;
use crate::formats::file_response::{serve_file, FileResponse};
use crate::formats::routes::{status_and_message, ErrorBody, RouteError};
use crate::http_common::{client_base_url, document_response, AuditAction, LocalFirst};
use crate::metadata::model::{format_ms, now_ms};
use crate::names::RepoName;

/// The format's error body.
pub fn error_response(error: Error) -> Response {
    let (status, message) = status_and_message("npm", error);
    (status, Json(json!({ "error": message }))).into_response()
}

/// An error of a npm route, answered in the format's body.
pub type NpmError = RouteError<super::Npm>;

impl ErrorBody for super::Npm {
    fn error_response(error: Error) -> Response {
        error_response(error)
    }
}

pub(super) type Result<T> = std::result::Result<T, NpmError>;

/// Splits `/npm/{repo}/{rest}` into the repository and the raw rest.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    crate::formats::routes::split_path("/npm/", path)
}

/// Counts every answered request of the format (`arca_npm_requests_total`, latency).
pub async fn track(request: Request, next: Next) -> Response {
    let label = |method: &Method, path: &str| {
        split_path(path)
            .map(|(_, rest)| Route::parse(rest))
            .unwrap_or(Route::Unknown)
            .label(method)
    };
    super::metrics::METRICS.track(label, request, next).await
}

fn package_name(raw: &str) -> Result<PackageName> {
    PackageName::parse(raw).map_err(|reason| Error::InvalidPath { reason }.into())
}

pub(super) fn ok(status: StatusCode, value: Value, action: &'static str) -> Response {
    let mut response = (status, Json(value)).into_response();
    response.extensions_mut().insert(AuditAction(action));
    response
}

/// Every npm request: the route is parsed from the raw path (see [`Route`]).
pub async fn dispatch(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    match handle(&registry, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(registry: &Arc<Registry>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (repo, rest) = split_path(path).ok_or(Error::RouteNotFound)?;
    let repo = RepoName::parse(repo)?;
    registry.npm_repo(&repo)?;
    let route = Route::parse(rest);
    let method = &parts.method;
    let headers = &parts.headers;
    let base = client_base_url(&registry.service.config, headers);
    let identity = parts.extensions.get::<Identity>().cloned();
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let session = Session {
        registry,
        repo: &repo,
        base: &base,
        source,
        path,
    };
    let limit = registry.max_publish_body();
    let read_body = |body: Body, limit: usize| async move {
        axum::body::to_bytes(body, limit).await.map_err(|_| {
            NpmError::from(Error::TooLarge {
                limit: limit as u64,
            })
        })
    };
    match (method.clone(), route) {
        (Method::GET | Method::HEAD, Route::Ping) => Ok(Json(json!({})).into_response()),
        (Method::GET, Route::Whoami) => {
            let name = identity.as_ref().and_then(Identity::account).unwrap_or("");
            Ok(Json(json!({ "username": name })).into_response())
        }
        (Method::POST, Route::LoginStart) => session.start_web_login(),
        (Method::GET, Route::LoginPage(id)) => Ok(session.login_page(&id)),
        (Method::POST, Route::LoginPage(id)) => {
            let form = read_body(body, 64 << 10).await?;
            session.approve_web_login(&id, headers, &form).await
        }
        (Method::GET, Route::LoginDone(id)) => Ok(session.poll_web_login(&id)),
        (Method::PUT, Route::LegacyUser(name)) => {
            let body = read_body(body, 64 << 10).await?;
            session.legacy_login(&name, &body).await
        }
        (Method::DELETE, Route::Logout(token)) => session.logout(identity.as_ref(), &token).await,
        (Method::POST, Route::Audit) => {
            // Read (and drop) what npm sends so the connection stays usable.
            let _ = axum::body::to_bytes(body, 16 << 20).await;
            Ok(Json(json!({})).into_response())
        }
        (Method::GET, Route::Search) => session.search(parts.uri.query().unwrap_or_default()),
        (Method::GET, Route::DistTags(name)) => {
            let name = package_name(&name)?;
            let (record, _) = session.must_package(&name)?;
            Ok(Json(json!(record.dist_tags)).into_response())
        }
        (Method::PUT, Route::DistTag(name, tag)) => {
            let name = package_name(&name)?;
            let body = read_body(body, 4 << 10).await?;
            let version: String = serde_json::from_slice(&body).map_err(|_| {
                invalid("a dist-tag PUT carries the version as a JSON string (\"1.0.0\")")
            })?;
            registry.set_tag(&repo, &name, &tag, Some(version)).await?;
            Ok(ok(StatusCode::OK, json!({ "ok": true }), "npm.dist-tag"))
        }
        (Method::DELETE, Route::DistTag(name, tag)) => {
            let name = package_name(&name)?;
            registry.set_tag(&repo, &name, &tag, None).await?;
            Ok(ok(StatusCode::OK, json!({ "ok": true }), "npm.dist-tag"))
        }
        (Method::GET | Method::HEAD, Route::Package(name)) => {
            let name = package_name(&name)?;
            session.packument(&name, headers, parts.uri.query().unwrap_or_default())
        }
        (Method::PUT, Route::Package(name)) => {
            let name = package_name(&name)?;
            let body = read_body(body, limit).await?;
            let written = registry.put_document(&repo, &name, body).await?;
            Ok(session.written(&name, written, "npm.publish"))
        }
        (Method::PUT, Route::PackageRev(name, rev)) => {
            let name = package_name(&name)?;
            let body = read_body(body, limit).await?;
            let rev = packument::parse_rev(&rev);
            let written = registry.unpublish_missing(&repo, &name, rev, body).await?;
            Ok(session.written(&name, written, "npm.unpublish"))
        }
        (Method::DELETE, Route::Package(name)) => {
            let name = package_name(&name)?;
            let written = registry.unpublish(&repo, &name, Vec::new(), None).await?;
            Ok(session.written(&name, written, "npm.unpublish"))
        }
        (Method::DELETE, Route::PackageRev(name, rev)) => {
            let name = package_name(&name)?;
            let rev = packument::parse_rev(&rev);
            let written = registry.unpublish(&repo, &name, Vec::new(), rev).await?;
            Ok(session.written(&name, written, "npm.unpublish"))
        }
        (Method::DELETE, Route::TarballRev(name, file, _)) => {
            let name = package_name(&name)?;
            session.delete_tarball(&name, &file).await
        }
        (Method::GET | Method::HEAD, Route::Tarball(name, file)) => {
            let name = package_name(&name)?;
            let local_first = parts.extensions.get::<LocalFirst>().is_some();
            session
                .tarball(&name, &file, method, headers, local_first)
                .await
        }
        (_, Route::Unknown) => Err(Error::RouteNotFound.into()),
        _ => Err(Error::MethodNotAllowed.into()),
    }
}

/// One request's context.
pub(super) struct Session<'a> {
    pub(super) registry: &'a Arc<Registry>,
    pub(super) repo: &'a RepoName,
    pub(super) base: &'a str,
    pub(super) source: Option<SocketAddr>,
    pub(super) path: &'a str,
}

impl Session<'_> {
    pub(super) fn registry_url(&self) -> String {
        format!("{}/npm/{}", self.base, self.repo)
    }

    fn must_package(
        &self,
        name: &PackageName,
    ) -> Result<(
        super::model::PackageRecord,
        Vec<super::model::VersionRecord>,
    )> {
        self.registry
            .package(self.repo, name)?
            .filter(|(record, _)| record.versions > 0)
            .ok_or_else(|| {
                Error::ArtifactNotFound {
                    repo: self.repo.to_string(),
                    path: name.to_string(),
                }
                .into()
            })
    }

    fn written(&self, name: &PackageName, written: Written, action: &'static str) -> Response {
        let (status, rev) = match written {
            Written::Changed { rev } => (StatusCode::CREATED, Some(rev)),
            Written::Unchanged => (StatusCode::OK, None),
        };
        let rev = rev
            .or_else(|| {
                self.registry
                    .package(self.repo, name)
                    .ok()
                    .flatten()
                    .map(|(r, _)| r.rev)
            })
            .map(|rev| packument::rev_string(name.as_str(), rev));
        ok(
            status,
            json!({ "ok": true, "id": name.as_str(), "rev": rev }),
            action,
        )
    }

    fn packument(&self, name: &PackageName, headers: &HeaderMap, query: &str) -> Result<Response> {
        let (record, versions) = self.must_package(name)?;
        let write = query.split('&').any(|kv| kv == "write=true");
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let form = Form::negotiate(accept, write);
        let tarballs = format!("{}/{}/-/", self.registry_url(), name);
        let body = packument::render(form, &record, versions, &tarballs, name.basename());
        let mut out = HeaderMap::new();
        out.insert(header::VARY, HeaderValue::from_static("Accept"));
        Ok(document_response(
            headers,
            form.content_type(),
            record.modified_at_ms,
            out,
            body,
        ))
    }

    async fn tarball(
        &self,
        name: &PackageName,
        file: &str,
        method: &Method,
        headers: &HeaderMap,
        local_first: bool,
    ) -> Result<Response> {
        let not_found = || Error::ArtifactNotFound {
            repo: self.repo.to_string(),
            path: format!("{name}/-/{file}"),
        };
        let version = name.version_of_tarball(file).ok_or_else(not_found)?;
        let service = &self.registry.service;
        let catalog = &service.catalog;
        let mut found = catalog.npm_version(self.repo, name.as_str(), version)?;
        if found.is_none() && local_first {
            // Served without a barrier because tarballs never change: a miss may be a
            // version published through another node a moment ago.
            service.read_barrier().await?;
            found = catalog.npm_version(self.repo, name.as_str(), version)?;
        }
        let record = found
            .filter(super::model::VersionRecord::live)
            .ok_or_else(not_found)?;
        let blob = catalog.blob(&record.blob)?.ok_or_else(|| {
            Error::Internal(format!("{name}@{version} references a missing blob"))
        })?;
        let mut extra = HeaderMap::new();
        for (header, value) in [
            ("x-checksum-sha1", record.shasum.clone()),
            ("x-checksum-sha256", record.sha256.to_hex()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                extra.insert(header::HeaderName::from_static(header), value);
            }
        }
        let response = FileResponse {
            blob: &blob.descriptor,
            modified_ms: record.published_at_ms,
            immutable: true,
            content_type: "application/octet-stream",
            headers: extra,
        };
        Ok(serve_file(service, method, headers, response).await?)
    }

    async fn delete_tarball(&self, name: &PackageName, file: &str) -> Result<Response> {
        let version = name
            .version_of_tarball(file)
            .ok_or_else(|| invalid(format!("{file:?} is not a tarball name of {name}")))?;
        let live = self
            .registry
            .service
            .catalog
            .npm_version(self.repo, name.as_str(), version)?
            .is_some_and(|v| v.live());
        // npm deletes the tarball after the PUT that unpublished its version: done already.
        let written = if live {
            self.registry
                .unpublish(self.repo, name, vec![version.to_string()], None)
                .await?
        } else {
            Written::Unchanged
        };
        Ok(self.written(name, written, "npm.unpublish"))
    }

    fn search(&self, query: &str) -> Result<Response> {
        #[derive(serde::Deserialize, Default)]
        struct Query {
            #[serde(default)]
            text: String,
            size: Option<usize>,
            from: Option<usize>,
        }
        let query: Query = serde_urlencoded::from_str(query).unwrap_or_default();
        let size = query.size.unwrap_or(20).clamp(1, 250);
        let from = query.from.unwrap_or(0);
        let text = query.text.to_lowercase();
        let (packages, _) = self
            .registry
            .service
            .catalog
            .npm_packages(self.repo, None, 10_000)?;
        let matches: Vec<_> = packages
            .into_iter()
            .filter(|p| p.versions > 0)
            .filter(|p| {
                text.is_empty()
                    || p.name.contains(&text)
                    || p.description.to_lowercase().contains(&text)
            })
            .collect();
        let objects: Vec<Value> = matches
            .iter()
            .skip(from)
            .take(size)
            .map(|p| {
                json!({
                    "package": {
                        "name": p.name,
                        "version": p.dist_tags.get("latest"),
                        "description": p.description,
                        "date": format_ms(p.modified_at_ms),
                        "links": {},
                    },
                    "score": {"final": 1.0, "detail": {"quality": 1.0, "popularity": 1.0, "maintenance": 1.0}},
                    "searchScore": 1.0,
                })
            })
            .collect();
        Ok(Json(json!({
            "objects": objects,
            "total": matches.len(),
            "time": format_ms(now_ms()),
        }))
        .into_response())
    }
}
