//! The NuGet format's routes, under `/nuget/{repo}/` (the feed URL is
//! `/nuget/{repo}/v3/index.json`):
//!
//! | route | what |
//! |---|---|
//! | `GET v3/index.json` | the service index, URLs from the client-facing host |
//! | `PUT api/v2/package[/]` | push (multipart, the first part; or the raw `.nupkg`) |
//! | `DELETE api/v2/package/{id}/{version}`, `POST …` | unlist, relist |
//! | `GET v3/package/{id}/index.json`, `…/{version}/{id}.{version}.nupkg`, `…/{id}.nuspec` | the flat container |
//! | `GET v3/registration/{id}/index.json`, `…/page/{lower}/{upper}.json`, `…/{version}.json` | registrations (inline up to 64 versions, paged beyond) |
//! | `GET v3/search`, `GET v3/autocomplete` | search and autocomplete (`prerelease`, `semVerLevel`) |
//!
//! Errors are `text/plain` with the message also in the status line's reason phrase, which
//! nuget.exe prints.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::model::VersionRecord;
use super::registry::{invalid, Registry};
use super::route::Route;
use crate::error::Error;
use crate::formats::file_response::{serve_file, FileResponse};
use crate::formats::routes::{status_and_message, text_response, ErrorBody, RouteError};
use crate::http_common::{client_base_url, AuditAction, LocalFirst};
use crate::names::RepoName;

/// Most versions a registration index holds inline; beyond, it is paged by this many.
const PAGE: usize = 64;

/// The format's error body: the message as text, and as the reason phrase.
pub fn error_response(error: Error) -> Response {
    let (status, message) = status_and_message("nuget", error);
    text_response(status, &message)
}

/// An error of a NuGet route, answered in the format's body.
pub type NugetError = RouteError<super::Nuget>;

impl ErrorBody for super::Nuget {
    fn error_response(error: Error) -> Response {
        error_response(error)
    }
}

type Result<T> = std::result::Result<T, NugetError>;

/// Splits `/nuget/{repo}/{rest}` into the repository and the rest.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    crate::formats::routes::split_path("/nuget/", path)
}

/// Counts every answered request of the format (`arca_nuget_requests_total`, latency).
pub async fn track(request: Request, next: Next) -> Response {
    let label = |method: &Method, path: &str| {
        split_path(path)
            .map(|(_, rest)| Route::parse(rest))
            .unwrap_or(Route::Unknown)
            .label(method)
    };
    super::metrics::METRICS.track(label, request, next).await
}

fn done(status: StatusCode, action: &'static str) -> Response {
    let mut response = status.into_response();
    response.extensions_mut().insert(AuditAction(action));
    response
}

/// Every NuGet request.
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
    registry.nuget_repo(&repo)?;
    let route = Route::parse(rest);
    let method = &parts.method;
    let headers = &parts.headers;
    let feed = Feed {
        registry,
        repo: &repo,
        base: format!(
            "{}/nuget/{repo}",
            client_base_url(&registry.service.config, headers)
        ),
    };
    match (method.clone(), route) {
        (Method::GET | Method::HEAD, Route::ServiceIndex) => {
            Ok(Json(feed.service_index()).into_response())
        }
        (Method::PUT, Route::Publish) => {
            let limit = registry.max_package().saturating_add(64 << 10);
            let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
                NugetError::from(Error::TooLarge {
                    limit: limit as u64,
                })
            })?;
            let nupkg = first_part(headers, body).await?;
            registry.push(&repo, nupkg).await?;
            Ok(done(StatusCode::CREATED, "nuget.push"))
        }
        (Method::DELETE, Route::Listing(id, version)) => {
            registry.set_listed(&repo, &id, &version, false).await?;
            Ok(done(StatusCode::NO_CONTENT, "nuget.unlist"))
        }
        (Method::POST, Route::Listing(id, version)) => {
            registry.set_listed(&repo, &id, &version, true).await?;
            Ok(done(StatusCode::OK, "nuget.relist"))
        }
        (Method::GET | Method::HEAD, Route::Versions(id)) => {
            let versions = feed.versions(&id)?;
            let listed: Vec<String> = versions
                .iter()
                .map(|v| v.version.to_ascii_lowercase())
                .collect();
            Ok(Json(json!({ "versions": listed })).into_response())
        }
        (Method::GET | Method::HEAD, Route::Content(id, version, file)) => {
            let local_first = parts.extensions.get::<LocalFirst>().is_some();
            feed.content(&id, &version, &file, method, headers, local_first)
                .await
        }
        (Method::GET | Method::HEAD, Route::Registration(id)) => feed.registration(&id),
        (Method::GET | Method::HEAD, Route::RegistrationPage(id, lower, upper)) => {
            feed.registration_page(&id, &lower, &upper)
        }
        (Method::GET | Method::HEAD, Route::RegistrationLeaf(id, version)) => {
            let versions = feed.versions(&id)?;
            let record = versions
                .iter()
                .find(|v| v.version.eq_ignore_ascii_case(&version))
                .ok_or_else(|| feed.not_found(&format!("{id} {version}")))?;
            Ok(Json(feed.leaf(&id, record)).into_response())
        }
        (Method::GET, Route::Search) => feed.search(parts.uri.query().unwrap_or_default()),
        (Method::GET, Route::Autocomplete) => {
            feed.autocomplete(parts.uri.query().unwrap_or_default())
        }
        (_, Route::Unknown) => Err(Error::RouteNotFound.into()),
        _ => Err(Error::MethodNotAllowed.into()),
    }
}

/// The package of a push: the first part of a multipart body (nuget.exe quotes the boundary
/// and writes the part's parameters unquoted), or the raw body.
async fn first_part(headers: &HeaderMap, body: Bytes) -> Result<Bytes> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        return Ok(body);
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        invalid(format!(
            "the push's Content-Type has no usable boundary: {e}"
        ))
    })?;
    let stream = futures::stream::iter([Ok::<_, std::convert::Infallible>(body)]);
    let mut form = multer::Multipart::new(stream, boundary);
    let bad = |e: multer::Error| {
        NugetError::from(invalid(format!(
            "the push body is malformed multipart: {e}"
        )))
    };
    let field = form
        .next_field()
        .await
        .map_err(bad)?
        .ok_or_else(|| NugetError::from(invalid("the push body has no part")))?;
    field.bytes().await.map_err(bad)
}

#[derive(serde::Deserialize, Default)]
struct Query {
    #[serde(default)]
    q: String,
    #[serde(default)]
    id: String,
    skip: Option<usize>,
    take: Option<usize>,
    #[serde(default)]
    prerelease: Option<String>,
    #[serde(default, rename = "semVerLevel")]
    semver_level: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Query {
        serde_urlencoded::from_str(query).unwrap_or_default()
    }

    /// Whether a version may be shown: listed, a prerelease only when asked for, SemVer 2 only
    /// to `semVerLevel=2.0.0`.
    fn shows(&self, version: &VersionRecord) -> bool {
        let prerelease = self
            .prerelease
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("true"));
        let semver2 = self
            .semver_level
            .as_deref()
            .is_some_and(|l| l.starts_with('2'));
        version.listed
            && (prerelease || !version.version.contains('-'))
            && (semver2 || !version.semver2)
    }
}

/// One request's view of a feed.
struct Feed<'a> {
    registry: &'a Registry,
    repo: &'a RepoName,
    /// `http(s)://HOST/nuget/REPO`.
    base: String,
}

impl Feed<'_> {
    fn not_found(&self, what: &str) -> NugetError {
        Error::ArtifactNotFound {
            repo: self.repo.to_string(),
            path: what.to_string(),
        }
        .into()
    }

    fn service_index(&self) -> Value {
        let base = &self.base;
        let resource = |id: String, kind: &str| json!({"@id": id, "@type": kind});
        json!({
            "version": "3.0.0",
            "resources": [
                resource(format!("{base}/v3/package/"), "PackageBaseAddress/3.0.0"),
                resource(format!("{base}/api/v2/package"), "PackagePublish/2.0.0"),
                resource(format!("{base}/v3/registration/"), "RegistrationsBaseUrl"),
                resource(format!("{base}/v3/registration/"), "RegistrationsBaseUrl/3.0.0-rc"),
                resource(format!("{base}/v3/registration/"), "RegistrationsBaseUrl/3.0.0-beta"),
                resource(format!("{base}/v3/registration/"), "RegistrationsBaseUrl/3.4.0"),
                resource(format!("{base}/v3/registration/"), "RegistrationsBaseUrl/3.6.0"),
                resource(format!("{base}/v3/search"), "SearchQueryService"),
                resource(format!("{base}/v3/search"), "SearchQueryService/3.0.0-rc"),
                resource(format!("{base}/v3/search"), "SearchQueryService/3.0.0-beta"),
                resource(format!("{base}/v3/search"), "SearchQueryService/3.5.0"),
                resource(format!("{base}/v3/autocomplete"), "SearchAutocompleteService"),
                resource(format!("{base}/v3/autocomplete"), "SearchAutocompleteService/3.5.0"),
            ]
        })
    }

    /// Every version of a package id (404 for an id that is not here: restore needs it).
    fn versions(&self, id: &str) -> Result<Vec<VersionRecord>> {
        let versions = self
            .registry
            .service
            .catalog
            .nuget_versions(self.repo, id)?;
        if versions.is_empty() {
            return Err(self.not_found(id));
        }
        Ok(versions)
    }

    fn nupkg_url(&self, id: &str, version: &str) -> String {
        let (id, version) = (id.to_ascii_lowercase(), version.to_ascii_lowercase());
        format!(
            "{}/v3/package/{id}/{version}/{id}.{version}.nupkg",
            self.base
        )
    }

    fn registration_url(&self, id: &str) -> String {
        format!(
            "{}/v3/registration/{}/index.json",
            self.base,
            id.to_ascii_lowercase()
        )
    }

    fn leaf_url(&self, id: &str, version: &str) -> String {
        format!(
            "{}/v3/registration/{}/{}.json",
            self.base,
            id.to_ascii_lowercase(),
            version.to_ascii_lowercase()
        )
    }

    /// A registration leaf, as it is inlined in pages.
    fn leaf(&self, id: &str, version: &VersionRecord) -> Value {
        let mut entry: Value = serde_json::from_str(&version.entry).unwrap_or_else(|_| json!({}));
        let leaf = self.leaf_url(id, &version.version);
        let content = self.nupkg_url(id, &version.version);
        if let Some(map) = entry.as_object_mut() {
            map.insert("@id".into(), Value::String(leaf.clone()));
            map.insert("@type".into(), Value::String("PackageDetails".into()));
            map.insert("listed".into(), Value::Bool(version.listed));
            map.insert("packageContent".into(), Value::String(content.clone()));
        }
        json!({
            "@id": leaf,
            "@type": "Package",
            "catalogEntry": entry,
            "packageContent": content,
            "registration": self.registration_url(id),
        })
    }

    fn page(&self, id: &str, versions: &[VersionRecord], inline: bool) -> Value {
        let (lower, upper) = (
            versions
                .first()
                .map_or("", |v| v.version.as_str())
                .to_ascii_lowercase(),
            versions
                .last()
                .map_or("", |v| v.version.as_str())
                .to_ascii_lowercase(),
        );
        let url = format!(
            "{}/v3/registration/{}/page/{lower}/{upper}.json",
            self.base,
            id.to_ascii_lowercase()
        );
        let mut page = json!({
            "@id": url,
            "@type": "catalog:CatalogPage",
            "count": versions.len(),
            "lower": lower,
            "upper": upper,
            "parent": self.registration_url(id),
        });
        if inline {
            let items: Vec<Value> = versions.iter().map(|v| self.leaf(id, v)).collect();
            if let Some(map) = page.as_object_mut() {
                map.insert("items".into(), Value::Array(items));
            }
        }
        page
    }

    fn registration(&self, id: &str) -> Result<Response> {
        let versions = self.versions(id)?;
        let inline = versions.len() <= PAGE;
        let pages: Vec<Value> = versions
            .chunks(PAGE)
            .map(|chunk| self.page(id, chunk, inline))
            .collect();
        Ok(Json(json!({
            "@id": self.registration_url(id),
            "@type": ["catalog:CatalogRoot", "PackageRegistration", "catalog:Permalink"],
            "count": pages.len(),
            "items": pages,
        }))
        .into_response())
    }

    fn registration_page(&self, id: &str, lower: &str, upper: &str) -> Result<Response> {
        let versions = self.versions(id)?;
        let chunk = versions
            .chunks(PAGE)
            .find(|chunk| {
                chunk
                    .first()
                    .is_some_and(|v| v.version.eq_ignore_ascii_case(lower))
                    && chunk
                        .last()
                        .is_some_and(|v| v.version.eq_ignore_ascii_case(upper))
            })
            .ok_or_else(|| self.not_found(&format!("{id} page {lower}..{upper}")))?;
        Ok(Json(self.page(id, chunk, true)).into_response())
    }

    async fn content(
        &self,
        id: &str,
        version: &str,
        file: &str,
        method: &Method,
        headers: &HeaderMap,
        local_first: bool,
    ) -> Result<Response> {
        let service = &self.registry.service;
        let mut found = self.registry.version(self.repo, id, version)?;
        if found.is_none() && local_first {
            // Served without a barrier because packages never change: a miss may be a push
            // through another node a moment ago.
            service.read_barrier().await?;
            found = self.registry.version(self.repo, id, version)?;
        }
        let record = found.ok_or_else(|| self.not_found(&format!("{id} {version}")))?;
        let lower = record.version.to_ascii_lowercase();
        let (stored, content_type) = if file == format!("{id}.{lower}.nupkg") {
            (&record.nupkg, "application/octet-stream")
        } else if file == format!("{id}.nuspec") {
            (&record.nuspec, "application/xml")
        } else {
            return Err(self.not_found(&format!("{id} {version} {file}")));
        };
        let blob = service
            .catalog
            .blob(&stored.blob)?
            .ok_or_else(|| Error::Internal(format!("{id} {version} references a missing blob")))?;
        let response = FileResponse {
            blob: &blob.descriptor,
            modified_ms: record.published_at_ms,
            immutable: true,
            content_type,
            headers: HeaderMap::new(),
        };
        Ok(serve_file(service, method, headers, response).await?)
    }

    fn search(&self, query: &str) -> Result<Response> {
        let query = Query::parse(query);
        let (skip, take) = (
            query.skip.unwrap_or(0),
            query.take.unwrap_or(20).clamp(1, 1000),
        );
        let text = query.q.to_ascii_lowercase();
        let catalog = &self.registry.service.catalog;
        let (packages, _) = catalog.nuget_packages(self.repo, None, 10_000)?;
        let mut hits = Vec::new();
        for package in packages {
            let matches = text.is_empty()
                || package.id.to_ascii_lowercase().contains(&text)
                || package.description.to_ascii_lowercase().contains(&text);
            if !matches {
                continue;
            }
            let versions: Vec<VersionRecord> = catalog
                .nuget_versions(self.repo, &package.id)?
                .into_iter()
                .filter(|v| query.shows(v))
                .collect();
            let Some(latest) = versions.last() else {
                continue;
            };
            hits.push(json!({
                "@id": self.registration_url(&package.id),
                "@type": "Package",
                "registration": self.registration_url(&package.id),
                "id": package.id,
                "version": latest.version,
                "description": package.description,
                "authors": [package.authors],
                "totalDownloads": 0,
                "versions": versions.iter().map(|v| json!({
                    "version": v.version,
                    "downloads": 0,
                    "@id": self.leaf_url(&package.id, &v.version),
                })).collect::<Vec<_>>(),
            }));
        }
        let total = hits.len();
        let data: Vec<Value> = hits.into_iter().skip(skip).take(take).collect();
        Ok(Json(json!({ "totalHits": total, "data": data })).into_response())
    }

    fn autocomplete(&self, query: &str) -> Result<Response> {
        let query = Query::parse(query);
        let catalog = &self.registry.service.catalog;
        let data: Vec<String> = if query.id.is_empty() {
            let (skip, take) = (
                query.skip.unwrap_or(0),
                query.take.unwrap_or(20).clamp(1, 1000),
            );
            let text = query.q.to_ascii_lowercase();
            let (packages, _) = catalog.nuget_packages(self.repo, None, 10_000)?;
            let mut ids = Vec::new();
            for package in packages {
                if !package.id.to_ascii_lowercase().contains(&text) {
                    continue;
                }
                let shown = catalog
                    .nuget_versions(self.repo, &package.id)?
                    .iter()
                    .any(|v| query.shows(v));
                if shown {
                    ids.push(package.id);
                }
            }
            ids.into_iter().skip(skip).take(take).collect()
        } else {
            catalog
                .nuget_versions(self.repo, &query.id)?
                .into_iter()
                .filter(|v| query.shows(v))
                .map(|v| v.version)
                .collect()
        };
        Ok(Json(json!({ "totalHits": data.len(), "data": data })).into_response())
    }
}
