//! The Helm format's routes, under `/helm/{repo}/` (the URL `helm repo add` is given):
//!
//! | route | what |
//! |---|---|
//! | `GET index.yaml` | the index (`ETag`, `304`), relative chart URLs |
//! | `GET, HEAD charts/{name}-{version}.tgz[.prov]` | an archive or its provenance (`Range`, `ETag`) |
//! | `POST api/charts` | upload (raw body, or multipart `chart` and `prov`): chartmuseum's API |
//! | `POST api/prov` | a provenance upload (raw or multipart `prov`) |
//! | `PUT [charts/]{name}-{version}.tgz[.prov]` | upload, as Nexus and Artifactory clients do |
//! | `GET api/charts[/{name}[/{version}]]` | chartmuseum's listing |
//!
//! Errors are JSON `{"error": "…"}`, chartmuseum's body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::registry::{invalid, Registry, Written, MAX_PROV};
use super::route::Route;
use crate::error::Error;
use crate::formats::file_response::{serve_file, FileResponse};
use crate::formats::routes::{status_and_message, ErrorBody, RouteError};
use crate::http_common::{not_modified, tagged_document_response, AuditAction, LocalFirst};
use crate::names::RepoName;

/// The format's error body.
pub fn error_response(error: Error) -> Response {
    let (status, message) = status_and_message("helm", error);
    (status, Json(json!({ "error": message }))).into_response()
}

/// An error of a Helm route, answered in the format's body.
pub type HelmError = RouteError<super::Helm>;

impl ErrorBody for super::Helm {
    fn error_response(error: Error) -> Response {
        error_response(error)
    }
}

type Result<T> = std::result::Result<T, HelmError>;

/// Splits `/helm/{repo}/{rest}` into the repository and the rest.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    crate::formats::routes::split_path("/helm/", path)
}

/// Counts every answered request of the format (`arca_helm_requests_total`, latency).
pub async fn track(request: Request, next: Next) -> Response {
    let label = |method: &Method, path: &str| {
        split_path(path)
            .map(|(_, rest)| Route::parse(rest))
            .unwrap_or(Route::Unknown)
            .label(method)
    };
    super::metrics::METRICS.track(label, request, next).await
}

fn saved(written: Written, action: &'static str) -> Response {
    let status = match written {
        Written::Changed => StatusCode::CREATED,
        Written::Unchanged => StatusCode::OK,
    };
    let mut response = (status, Json(json!({ "saved": true }))).into_response();
    response.extensions_mut().insert(AuditAction(action));
    response
}

/// Every Helm request.
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
    registry.helm_repo(&repo)?;
    let route = Route::parse(rest);
    let method = &parts.method;
    let headers = &parts.headers;
    let limit = registry.max_chart().saturating_add(MAX_PROV + (64 << 10));
    let read_body = |limit: usize| async move {
        axum::body::to_bytes(body, limit).await.map_err(|_| {
            HelmError::from(Error::TooLarge {
                limit: limit as u64,
            })
        })
    };
    match (method.clone(), route) {
        (Method::GET | Method::HEAD, Route::Index) => index(registry, &repo, headers),
        (Method::GET | Method::HEAD, Route::Archive(file)) => {
            let local_first = parts.extensions.get::<LocalFirst>().is_some();
            serve(registry, &repo, &file, false, method, headers, local_first).await
        }
        (Method::GET | Method::HEAD, Route::Prov(file)) => {
            let local_first = parts.extensions.get::<LocalFirst>().is_some();
            serve(registry, &repo, &file, true, method, headers, local_first).await
        }
        (Method::POST, Route::Charts) => {
            let content_type = content_type(headers);
            let body = read_body(limit).await?;
            let (chart, prov) = match multipart_boundary(&content_type) {
                Some(boundary) => {
                    let mut fields = multipart(body, boundary, limit).await?;
                    let chart = fields.remove("chart").ok_or_else(|| {
                        invalid("a multipart upload carries the archive in the field \"chart\"")
                    })?;
                    (chart, fields.remove("prov"))
                }
                None => (body, None),
            };
            let written = registry.upload(&repo, chart, prov, None).await?;
            Ok(saved(written, "helm.upload"))
        }
        (Method::POST, Route::ProvUpload) => {
            let content_type = content_type(headers);
            let body = read_body(MAX_PROV + (64 << 10)).await?;
            let prov = match multipart_boundary(&content_type) {
                Some(boundary) => multipart(body, boundary, MAX_PROV + (64 << 10))
                    .await?
                    .remove("prov")
                    .ok_or_else(|| {
                        invalid("a multipart provenance upload carries the field \"prov\"")
                    })?,
                None => body,
            };
            Ok(saved(
                registry.provenance(&repo, None, prov).await?,
                "helm.prov",
            ))
        }
        (Method::PUT, Route::Archive(file)) => {
            let body = read_body(limit).await?;
            let written = registry.upload(&repo, body, None, Some(&file)).await?;
            Ok(saved(written, "helm.upload"))
        }
        (Method::PUT, Route::Prov(file)) => {
            let body = read_body(MAX_PROV).await?;
            Ok(saved(
                registry.provenance(&repo, Some(&file), body).await?,
                "helm.prov",
            ))
        }
        (Method::GET, Route::Charts) => {
            let (charts, _) = registry.service.catalog.helm_charts(&repo, None, 10_000)?;
            let mut all = serde_json::Map::new();
            for chart in charts {
                let entries: Value = serde_json::from_str(&format!("[{}]", chart.entries))
                    .map_err(|e| Error::internal("read the index entries", e))?;
                all.insert(chart.name, entries);
            }
            Ok(Json(Value::Object(all)).into_response())
        }
        (Method::GET, Route::Chart(name)) => {
            let chart = registry
                .service
                .catalog
                .helm_chart(&repo, &name)?
                .ok_or_else(|| not_found(&repo, &format!("chart {name}")))?;
            let entries: Value = serde_json::from_str(&format!("[{}]", chart.entries))
                .map_err(|e| Error::internal("read the index entries", e))?;
            Ok(Json(entries).into_response())
        }
        (Method::GET, Route::ChartVersion(name, version)) => {
            let record = registry
                .service
                .catalog
                .helm_version(&repo, &name, &version)?
                .ok_or_else(|| not_found(&repo, &format!("chart {name} {version}")))?;
            let entry: Value = serde_json::from_str(&record.entry)
                .map_err(|e| Error::internal("read the index entry", e))?;
            Ok(Json(entry).into_response())
        }
        (_, Route::Unknown) => Err(Error::RouteNotFound.into()),
        _ => Err(Error::MethodNotAllowed.into()),
    }
}

/// Whether a request's `Accept-Encoding` takes gzip.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// `index.yaml`: its `ETag` is the repository's generation (a `304` reads one record), and the
/// cached document is sent gzip-encoded to clients that take it (helm does).
fn index(registry: &Registry, repo: &RepoName, headers: &HeaderMap) -> Result<Response> {
    let generation = registry.generation(repo)?;
    let (seq, modified_ms) = generation.map_or((0, 0), |g| (g.seq, g.at_ms));
    let gzip = accepts_gzip(headers);
    let etag = if gzip {
        format!("\"g{seq}-gzip\"")
    } else {
        format!("\"g{seq}\"")
    };
    let mut out = HeaderMap::new();
    out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let content_type = "application/x-yaml";
    if not_modified(headers, &etag) {
        let empty = Bytes::new();
        return Ok(tagged_document_response(
            headers,
            content_type,
            modified_ms,
            out,
            &etag,
            empty,
        ));
    }
    let assembled = registry.index(repo, generation)?;
    let body = if gzip {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assembled.gzip
    } else {
        assembled.plain
    };
    Ok(tagged_document_response(
        headers,
        content_type,
        modified_ms,
        out,
        &etag,
        body,
    ))
}

fn not_found(repo: &RepoName, path: &str) -> Error {
    Error::ArtifactNotFound {
        repo: repo.to_string(),
        path: path.to_string(),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    content_type
        .starts_with("multipart/form-data")
        .then(|| multer::parse_boundary(content_type).ok())
        .flatten()
}

/// The fields of a multipart body, by name (each bounded by `limit`).
async fn multipart(
    body: Bytes,
    boundary: String,
    limit: usize,
) -> Result<std::collections::HashMap<String, Bytes>> {
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(limit as u64 + (64 << 10)));
    let stream = futures::stream::iter([Ok::<_, std::convert::Infallible>(body)]);
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut fields = std::collections::HashMap::new();
    let bad = |e: multer::Error| invalid(format!("the multipart body is malformed: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let data = field.bytes().await.map_err(bad)?;
        if fields.len() < 8 {
            fields.insert(name, data);
        }
    }
    Ok(fields)
}

async fn serve(
    registry: &Registry,
    repo: &RepoName,
    file: &str,
    prov: bool,
    method: &Method,
    headers: &HeaderMap,
    local_first: bool,
) -> Result<Response> {
    let service = &registry.service;
    let mut found = registry.find_archive(repo, file)?;
    if found.is_none() && local_first {
        // Served without a barrier because archives never change: a miss may be an upload
        // through another node a moment ago.
        service.read_barrier().await?;
        found = registry.find_archive(repo, file)?;
    }
    let wanted = if prov {
        format!("charts/{file}.prov")
    } else {
        format!("charts/{file}")
    };
    let (_, record) = found.ok_or_else(|| not_found(repo, &wanted))?;
    let stored = if prov {
        record.prov.ok_or_else(|| not_found(repo, &wanted))?
    } else {
        record.chart
    };
    let blob = service
        .catalog
        .blob(&stored.blob)?
        .ok_or_else(|| Error::Internal(format!("{wanted} references a missing blob")))?;
    let response = FileResponse {
        blob: &blob.descriptor,
        modified_ms: record.created_at_ms,
        immutable: true,
        content_type: if prov {
            "application/pgp-signature"
        } else {
            "application/gzip"
        },
        headers: HeaderMap::new(),
    };
    Ok(serve_file(service, method, headers, response).await?)
}
