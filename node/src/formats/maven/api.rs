//! The Maven format's routes, under `/maven/{repo}/` (the repository URL Maven is given):
//!
//! | route | what |
//! |---|---|
//! | `GET, HEAD {group path}/{artifactId}/{version}/{file}` | a file (`Range`, `ETag`, `X-Checksum-Sha1`/`-Md5`/`-Sha256`) |
//! | `PUT` the same | deploy: `201` new, `200` an identical retry or a replaced plain `-SNAPSHOT` file, `409` other bytes for a release or a timestamped build |
//! | `GET, HEAD …/maven-metadata.xml` | artifact, group or SNAPSHOT version metadata, rendered from the state |
//! | `PUT …/maven-metadata.xml` | accepted and checked; only a group's plugin prefixes are kept |
//! | `GET, HEAD, PUT ….sha1`, `.md5`, `.sha256`, `.sha512` | checksums, computed; a PUT must match |
//!
//! Anything else (`DELETE` included) is `405`. Errors are `text/plain`, with the message also
//! in the status line's reason phrase (what Maven prints). A mirror refuses deploys with a
//! `403` saying so: Maven does not resend a body to a redirect.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::checksum;
use super::coords::{self, Checksum, FileCoords, MavenPath, Target};
use super::repository::{file_digest, not_found, MavenRepos, Written};
use crate::error::Error;
use crate::formats::file_response::{serve_file, FileResponse};
use crate::formats::routes::{status_and_message, text_response, ErrorBody, RouteError};
use crate::http_common::{etag_matches, AuditAction, LocalFirst};
use crate::names::RepoName;

/// The format's error body: the message as text, and as the reason phrase.
pub fn error_response(error: Error) -> Response {
    let (status, message) = status_and_message("maven", error);
    let mut response = text_response(status, &message);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
    }
    response
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

/// An error of a Maven route, answered in the format's body.
pub type MavenError = RouteError<super::Maven>;

impl ErrorBody for super::Maven {
    fn error_response(error: Error) -> Response {
        error_response(error)
    }
}

type Result<T> = std::result::Result<T, MavenError>;

/// Splits `/maven/{repo}/{rest}` into the repository and the raw rest.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    crate::formats::routes::split_path("/maven/", path)
}

/// Counts every answered request of the format (`arca_maven_requests_total`, latency).
pub async fn track(request: Request, next: Next) -> Response {
    let label = |method: &Method, path: &str| route_of(method, path);
    super::metrics::METRICS.track(label, request, next).await
}

/// The metric label of a request: its route, never its names.
fn route_of(method: &Method, path: &str) -> &'static str {
    let Some(parsed) = split_path(path).and_then(|(_, rest)| coords::parse(rest).ok()) else {
        return "other";
    };
    let put = *method == Method::PUT;
    match (&parsed.target, parsed.checksum.is_some(), put) {
        (_, true, false) => "checksum",
        (_, true, true) => "checksum_put",
        (Target::File(_), false, false) => "file",
        (Target::File(_), false, true) => "deploy",
        (_, false, false) => "metadata",
        (_, false, true) => "metadata_put",
    }
}

/// Whether a read names bytes that never change: a release file, a timestamped build, or
/// one of their checksums.
pub fn immutable(path: &str) -> bool {
    split_path(path)
        .and_then(|(_, rest)| coords::parse(rest).ok())
        .is_some_and(|parsed| matches!(&parsed.target, Target::File(c) if !c.replaceable()))
}

/// Every Maven request: the path is parsed from the raw URI (see `coords`).
pub async fn dispatch(State(repos): State<Arc<MavenRepos>>, request: Request) -> Response {
    match handle(&repos, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(repos: &Arc<MavenRepos>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let (repo, rest) = split_path(parts.uri.path()).ok_or(Error::RouteNotFound)?;
    let repo = RepoName::parse(repo)?;
    repos.maven_repo(&repo)?;
    let method = &parts.method;
    if !matches!(*method, Method::GET | Method::HEAD | Method::PUT) {
        return Err(Error::MethodNotAllowed.into());
    }
    if rest.trim_matches('/').is_empty() {
        return Err(Error::RouteNotFound.into());
    }
    let path = coords::parse(rest).map_err(|reason| Error::InvalidPath { reason })?;
    if *method == Method::PUT {
        return put(repos, &repo, &path, &parts.headers, body).await;
    }
    let local_first = parts.extensions.get::<LocalFirst>().is_some();
    let headers = &parts.headers;
    match (&path.target, path.checksum) {
        (Target::File(coords), checksum) => {
            let file = found_file(repos, &repo, coords, local_first).await?;
            match checksum {
                Some(algo) => Ok(checksum_text(&file_digest(&file, algo), true)),
                None => serve(repos, method, headers, &file, !coords.replaceable()).await,
            }
        }
        (target, checksum) => {
            let rendered = repos
                .render(&repo, target)?
                .ok_or_else(|| Error::ArtifactNotFound {
                    repo: repo.to_string(),
                    path: rest.to_string(),
                })?;
            Ok(match checksum {
                Some(algo) => checksum_text(&checksum::of(algo, &rendered.body), false),
                None => document(headers, rendered.body, rendered.modified_ms),
            })
        }
    }
}

async fn put(
    repos: &Arc<MavenRepos>,
    repo: &RepoName,
    path: &MavenPath,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (written, what, action) = match (&path.target, path.checksum) {
        (_, Some(algo)) => {
            repos.put_checksum(repo, path, algo, declared, body).await?;
            let message = format!("the {} checksum matches", algo.name());
            let mut response = text(StatusCode::OK, message);
            response
                .extensions_mut()
                .insert(AuditAction("maven.checksum"));
            return Ok(response);
        }
        (Target::File(coords), None) => {
            let written = repos.deploy(repo, coords, declared, body).await?;
            (written, coords.filename.clone(), "maven.deploy")
        }
        (target, None) => {
            let written = repos.put_metadata(repo, target, declared, body).await?;
            (written, coords::METADATA.to_string(), "maven.metadata")
        }
    };
    let (status, message) = match written {
        Written::Created => (StatusCode::CREATED, format!("stored {what}")),
        Written::Replaced => (StatusCode::OK, format!("replaced {what}")),
        Written::Unchanged => (StatusCode::OK, format!("{what} was already stored")),
    };
    let mut response = text(status, message);
    response.extensions_mut().insert(AuditAction(action));
    Ok(response)
}

/// A stored file; a miss on a read served without a barrier runs it and looks again (the
/// file may have been deployed through another node a moment ago).
async fn found_file(
    repos: &MavenRepos,
    repo: &RepoName,
    coords: &FileCoords,
    local_first: bool,
) -> Result<super::model::MavenFile> {
    if let Some(file) = repos.file(repo, coords)? {
        return Ok(file);
    }
    if local_first {
        repos.service.read_barrier().await?;
        if let Some(file) = repos.file(repo, coords)? {
            return Ok(file);
        }
    }
    Err(not_found(repo, coords).into())
}

async fn serve(
    repos: &MavenRepos,
    method: &Method,
    headers: &HeaderMap,
    file: &super::model::MavenFile,
    immutable: bool,
) -> Result<Response> {
    let service = &repos.service;
    let record = service
        .catalog
        .blob(&file.blob)?
        .ok_or_else(|| Error::Internal(format!("{} references a missing blob", file.filename)))?;
    let mut extra = HeaderMap::new();
    for algo in [Checksum::Sha1, Checksum::Md5, Checksum::Sha256] {
        let name = format!("x-checksum-{}", algo.name());
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::try_from(name),
            HeaderValue::from_str(&file_digest(file, algo)),
        ) {
            extra.insert(name, value);
        }
    }
    let response = FileResponse {
        blob: &record.descriptor,
        modified_ms: file.uploaded_at_ms,
        immutable,
        content_type: content_type(&file.extension),
        headers: extra,
    };
    Ok(serve_file(service, method, headers, response).await?)
}

fn content_type(extension: &str) -> &'static str {
    match extension {
        "pom" | "xml" => "application/xml",
        "jar" | "war" | "ear" => "application/java-archive",
        "asc" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// A checksum sibling: bare lowercase hex.
fn checksum_text(hex: &str, immutable: bool) -> Response {
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        hex.to_string(),
    )
        .into_response()
}

/// A rendered metadata document: `no-cache` (a deploy is seen at once), an `ETag` of its
/// bytes (`304` on `If-None-Match`), `Last-Modified`, and its checksums in headers.
fn document(request: &HeaderMap, body: Vec<u8>, modified_ms: i64) -> Response {
    let etag = format!("\"{}\"", checksum::of(Checksum::Sha1, &body));
    let mut headers = HeaderMap::new();
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::try_from(name),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/xml");
    set("cache-control", "no-cache");
    set("etag", &etag);
    set("x-checksum-sha1", &checksum::of(Checksum::Sha1, &body));
    set("x-checksum-md5", &checksum::of(Checksum::Md5, &body));
    if let Some(modified) = chrono::DateTime::from_timestamp_millis(modified_ms) {
        set(
            "last-modified",
            &modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    if let Some(candidates) = request.get(header::IF_NONE_MATCH) {
        if etag_matches(candidates.to_str().unwrap_or_default(), &etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
    }
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_without_names() {
        let jar = "/maven/m2/com/acme/hello/1.0.0/hello-1.0.0.jar";
        let cases = [
            (Method::PUT, jar.to_string(), "deploy"),
            (Method::GET, jar.to_string(), "file"),
            (Method::GET, format!("{jar}.sha1"), "checksum"),
            (Method::PUT, format!("{jar}.md5"), "checksum_put"),
            (
                Method::GET,
                "/maven/m2/com/acme/hello/maven-metadata.xml".into(),
                "metadata",
            ),
            (
                Method::PUT,
                "/maven/m2/com/acme/hello/maven-metadata.xml".into(),
                "metadata_put",
            ),
            (Method::GET, "/maven/m2/../x".into(), "other"),
        ];
        for (method, path, label) in cases {
            assert_eq!(route_of(&method, &path), label, "{method} {path}");
        }
        assert!(immutable(jar));
        assert!(!immutable(
            "/maven/m2/com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-SNAPSHOT.jar"
        ));
        assert!(!immutable("/maven/m2/com/acme/hello/maven-metadata.xml"));
    }
}
