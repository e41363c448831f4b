//! `/v2/`: the OCI Distribution API over HTTP.
//!
//! Image names contain `/`, so axum cannot route on them: every `/v2/…` request comes to
//! [`dispatch`], which recognizes the endpoint from the end of the path (`…/manifests/<ref>`,
//! `…/blobs/uploads/<id>`, …), counts it per operation (see [`crate::formats::oci::metrics`]) and
//! answers errors with the OCI body ([`OciError`]). Every response carries
//! `Docker-Distribution-API-Version: registry/2.0`.

pub mod blobs;
pub mod discovery;
pub mod manifests;
pub mod token;
pub mod uploads;

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::digest::Sha256;
use crate::formats::oci::error::{OciError, OciResult};
use crate::formats::oci::metrics;
use crate::formats::oci::names::{parse_digest, DigestProblem, OciName};
use crate::formats::oci::Registry;
use std::sync::Arc;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The `/v2/` routes.
pub fn routes() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
}

/// The registry token endpoint (the `realm` of the Bearer challenge).
pub const TOKEN_PATH: &str = "/v2/token";

/// What a `/v2/` request needs: the base and the catalog any valid credential (a registry
/// token without scopes included); an image's endpoints `pull` (reads), `delete` (deleting a
/// manifest or blob) or `push` (everything else) on the image, which is `read`, `delete` or
/// `write` on its repository.
pub fn access(method: &Method, path: &str) -> crate::auth::Access {
    use crate::auth::model::Action;
    use crate::auth::Access;
    if path == TOKEN_PATH {
        return Access::Public;
    }
    let route = Route::parse(path);
    let (name, deletes) = match &route {
        Route::Base | Route::Catalog | Route::Unknown => return Access::Authenticated,
        Route::Tags { name } | Route::Referrers { name, .. } => (name, false),
        Route::Manifest { name, .. } | Route::Blob { name, .. } => (name, true),
        Route::Uploads { name } | Route::Upload { name, .. } => (name, false),
    };
    let action = match *method {
        Method::GET | Method::HEAD => Action::Read,
        Method::DELETE if deletes => Action::Delete,
        _ => Action::Write,
    };
    let repo = name.split('/').next().unwrap_or_default();
    Access::Repo {
        repo: repo.to_string(),
        image: Some(name.clone()),
        action,
    }
}

/// The endpoint a `/v2/` path names. Names are still raw here: handlers parse them, so a bad
/// one gets `NAME_INVALID` from the endpoint it was meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    Uploads { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: String },
    Unknown,
}

impl Route {
    /// The image the route names, raw.
    fn name(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog | Route::Unknown => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    fn parse(path: &str) -> Self {
        let rest = path
            .strip_prefix("/v2")
            .map(|rest| rest.strip_prefix('/').unwrap_or(rest))
            .unwrap_or_default();
        if rest.is_empty() {
            return Route::Base;
        }
        if rest == "_catalog" {
            return Route::Catalog;
        }
        let segments: Vec<String> = rest
            .split('/')
            .map(|segment| {
                percent_encoding::percent_decode_str(segment)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let n = segments.len();
        let name = |len: usize| segments[..len].join("/");
        let at = |i: usize| segments.get(i).map(String::as_str);
        // `…/blobs/uploads/` (POST) and `…/blobs/uploads/<id>`.
        if n >= 3 && at(n - 3) == Some("blobs") && at(n - 2) == Some("uploads") {
            let id = &segments[n - 1];
            return if id.is_empty() {
                Route::Uploads { name: name(n - 3) }
            } else {
                Route::Upload {
                    name: name(n - 3),
                    id: id.clone(),
                }
            };
        }
        if n >= 2 && at(n - 2) == Some("blobs") && at(n - 1) == Some("uploads") {
            return Route::Uploads { name: name(n - 2) };
        }
        if n >= 3 && at(n - 2) == Some("tags") && at(n - 1) == Some("list") {
            return Route::Tags { name: name(n - 2) };
        }
        if n >= 3 {
            let last = segments[n - 1].clone();
            match at(n - 2) {
                Some("manifests") => {
                    return Route::Manifest {
                        name: name(n - 2),
                        reference: last,
                    }
                }
                Some("blobs") => {
                    return Route::Blob {
                        name: name(n - 2),
                        digest: last,
                    }
                }
                Some("referrers") => {
                    return Route::Referrers {
                        name: name(n - 2),
                        digest: last,
                    }
                }
                _ => {}
            }
        }
        Route::Unknown
    }

    /// The operation label of a request to this route.
    fn operation(&self, method: &Method, query: &HashMap<String, String>) -> &'static str {
        match (self, method.as_str()) {
            (Route::Base, _) => "base",
            (Route::Catalog, _) => "catalog",
            (Route::Tags { .. }, _) => "tags_list",
            (Route::Referrers { .. }, _) => "referrers",
            (Route::Manifest { .. }, "GET") => "manifest_get",
            (Route::Manifest { .. }, "HEAD") => "manifest_head",
            (Route::Manifest { .. }, "PUT") => "manifest_put",
            (Route::Manifest { .. }, "DELETE") => "manifest_delete",
            (Route::Blob { .. }, "GET") => "blob_get",
            (Route::Blob { .. }, "HEAD") => "blob_head",
            (Route::Blob { .. }, "DELETE") => "blob_delete",
            (Route::Uploads { .. }, "POST") if query.contains_key("mount") => "blob_mount",
            (Route::Uploads { .. }, "POST") if query.contains_key("digest") => "upload_monolithic",
            (Route::Uploads { .. }, "POST") => "upload_start",
            (Route::Upload { .. }, "GET") => "upload_status",
            (Route::Upload { .. }, "PATCH") => "upload_chunk",
            (Route::Upload { .. }, "PUT") => "upload_complete",
            (Route::Upload { .. }, "DELETE") => "upload_cancel",
            _ => "other",
        }
    }
}

/// What a handler gets besides the application state.
pub struct Request {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: Body,
    /// Who is asking (the API's middleware authorized the route already).
    pub identity: crate::auth::Identity,
}

impl Request {
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

async fn dispatch(
    State(registry): State<Arc<Registry>>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    if request.uri().path() == TOKEN_PATH {
        return token::handle(&registry, request).await;
    }
    let (parts, body) = request.into_parts();
    let identity = parts
        .extensions
        .get::<crate::auth::Identity>()
        .cloned()
        .unwrap_or_else(crate::auth::Identity::anonymous);
    let route = Route::parse(parts.uri.path());
    let query = query_map(&parts.uri);
    let operation = route.operation(&parts.method, query.as_ref().unwrap_or(&HashMap::new()));
    let result = match query {
        Ok(query) => {
            let request = Request {
                method: parts.method,
                headers: parts.headers,
                query,
                body,
                identity,
            };
            handle(&registry, route, request).await
        }
        Err(error) => Err(error),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    metrics::request(
        operation,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn query_map(uri: &Uri) -> OciResult<HashMap<String, String>> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|e| OciError::Unsupported {
            reason: format!("malformed query string: {}", e.body_text()),
        })
}

async fn handle(registry: &Registry, route: Route, request: Request) -> OciResult<Response> {
    let method = request.method.clone();
    if !matches!(method, Method::GET | Method::HEAD) {
        if let Some(name) = route.name() {
            refuse_remote_writes(registry, name).await?;
        }
    }
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(discovery::base()),
        (Route::Catalog, Method::GET) => discovery::catalog(registry, &request.query),
        (Route::Tags { name }, Method::GET) => {
            discovery::tags(registry, &name, &request.query).await
        }
        (Route::Referrers { name, digest }, Method::GET) => {
            discovery::referrers(registry, &name, &digest, &request.query).await
        }
        (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            manifests::get(registry, &name, &reference, request).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(registry, &name, &reference, request).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(registry, &name, &reference).await
        }
        (Route::Blob { name, digest }, Method::GET | Method::HEAD) => {
            blobs::get(registry, &name, &digest, request).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => {
            blobs::delete(registry, &name, &digest).await
        }
        (Route::Uploads { name }, Method::POST) => uploads::start(registry, &name, request).await,
        (Route::Upload { name, id }, Method::GET) => uploads::status(registry, &name, &id).await,
        (Route::Upload { name, id }, Method::PATCH) => {
            uploads::chunk(registry, &name, &id, request).await
        }
        (Route::Upload { name, id }, Method::PUT) => {
            uploads::complete(registry, &name, &id, request).await
        }
        (Route::Upload { name, id }, Method::DELETE) => uploads::cancel(registry, &name, &id).await,
        (Route::Unknown, _) => Err(OciError::RouteNotFound),
        _ => Err(OciError::MethodNotAllowed),
    }
}

/// Uploads, manifest pushes and deletes in a remote repository are refused: only its cache
/// fills write it.
async fn refuse_remote_writes(registry: &Registry, name: &str) -> OciResult<()> {
    let Ok(name) = OciName::parse(name) else {
        // The handler answers the precise NAME_INVALID.
        return Ok(());
    };
    match registry.repo(&name).await {
        Ok(repo) => Ok(repo.require_local()?),
        // The handler answers the precise error.
        Err(_) => Ok(()),
    }
}

/// Parses a digest given by a client for content it sends: malformed or not sha256 is
/// `DIGEST_INVALID`.
pub fn upload_digest(raw: &str) -> OciResult<Sha256> {
    parse_digest(raw).map_err(|problem| match problem {
        DigestProblem::Malformed(reason) | DigestProblem::Unsupported(reason) => {
            OciError::DigestInvalid { reason }
        }
    })
}

/// Sets a header, skipping values that are not valid header text (they cannot occur for the
/// ASCII names and digests the registry writes).
pub fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Fails the stream if it does not carry exactly `expected` bytes (`Content-Range` promised
/// them); ingest and the upload spool treat a failed stream as a broken body and keep nothing.
pub fn exact_length<S, E>(
    body: S,
    expected: Option<u64>,
) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    async_stream::stream! {
        let mut body = body;
        let mut seen: u64 = 0;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(data) => {
                    seen += data.len() as u64;
                    if expected.is_some_and(|expected| seen > expected) {
                        yield Err(format!("the body is longer than the {} bytes of its Content-Range", expected.unwrap_or_default()));
                        return;
                    }
                    yield Ok(data);
                }
                Err(e) => {
                    yield Err(e.to_string());
                    return;
                }
            }
        }
        if let Some(expected) = expected {
            if seen != expected {
                yield Err(format!("the body has {seen} bytes; its Content-Range says {expected}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Route {
        Route::parse(path)
    }

    proptest::proptest! {
        #[test]
        fn any_path_routes_without_panicking(path in "/v2[a-z0-9/:%._-]{0,60}") {
            let route = Route::parse(&path);
            let _ = route.operation(&Method::GET, &HashMap::new());
        }
    }

    #[test]
    fn routes_are_recognized_from_the_end_of_the_path() {
        assert_eq!(parse("/v2/"), Route::Base);
        assert_eq!(parse("/v2"), Route::Base);
        assert_eq!(parse("/v2/_catalog"), Route::Catalog);
        assert_eq!(
            parse("/v2/c/team/app/manifests/1.4"),
            Route::Manifest {
                name: "c/team/app".into(),
                reference: "1.4".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/manifests/sha256%3Aabc"),
            Route::Manifest {
                name: "c/app".into(),
                reference: "sha256:abc".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/blobs/sha256:abc"),
            Route::Blob {
                name: "c/app".into(),
                digest: "sha256:abc".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/blobs/uploads/"),
            Route::Uploads {
                name: "c/app".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/blobs/uploads"),
            Route::Uploads {
                name: "c/app".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/blobs/uploads/1234"),
            Route::Upload {
                name: "c/app".into(),
                id: "1234".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/tags/list"),
            Route::Tags {
                name: "c/app".into()
            }
        );
        // An image may itself be called "blobs" or "manifests".
        assert_eq!(
            parse("/v2/c/blobs/manifests/latest"),
            Route::Manifest {
                name: "c/blobs".into(),
                reference: "latest".into()
            }
        );
        assert_eq!(
            parse("/v2/c/app/referrers/sha256:abc"),
            Route::Referrers {
                name: "c/app".into(),
                digest: "sha256:abc".into()
            }
        );
        assert_eq!(parse("/v2/c/app/other/thing"), Route::Unknown);
        assert_eq!(parse("/v2/c"), Route::Unknown);
    }
}
