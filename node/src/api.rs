//! The HTTP API (axum): generic files under `/files/`, the OCI registry under `/v2/`
//! ([`crate::formats::oci::api`]), the JSON admin API under `/api/v1/`, and the operational endpoints
//! `/metrics`, `/healthz`, `/readyz`.

pub mod divergent;
pub mod limits;
pub mod repos;
pub mod system;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;

use crate::error::Error;
use crate::formats::{self, Format};
use crate::service::ArtifactService;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<ArtifactService>,
    /// The registered formats (their routes are mounted by [`router`]).
    pub formats: Arc<[&'static dyn Format]>,
    pub metrics: PrometheusHandle,
    pub uploads: Arc<limits::UploadLimiter>,
}

pub use crate::http_common::READ_CONSISTENCY;

pub use crate::http_common::LocalFirst;

/// Whether a read names content that can never change (its format says: a blob or a manifest
/// by digest, a file in an immutable repository this node knows).
fn immutable_read(state: &AppState, path: &str) -> bool {
    formats::for_path(&state.formats, path)
        .is_some_and(|format| format.immutable_read(&state.service, path))
}

/// `error` in the body of the format `path` belongs to (the core's JSON body otherwise).
fn error_for(state: &AppState, path: &str, error: Error) -> Response {
    match formats::for_path(&state.formats, path) {
        Some(format) => format.error_response(error),
        None => error.into_response(),
    }
}

/// `NOT_READY` while this mirror installs a snapshot of its primary: its state is then part
/// old, part new, and not even a stale read (or a read by digest) may be answered from it.
pub(crate) fn installing_error(state: &AppState) -> Option<Error> {
    match state.service.catalog.installing_snapshot() {
        Ok(false) => None,
        Ok(true) => Some(Error::NotReady {
            reason:
                "this mirror is installing a snapshot of its primary; reads resume when it is done"
                    .into(),
        }),
        Err(e) => Some(e),
    }
}

/// Runs the read barrier before every GET and HEAD of repository data, so a read on any node
/// sees every write acknowledged before it started; refuses the read (`NOT_READY`) when that
/// cannot be confirmed, unless the client accepts a stale answer.
async fn read_barrier(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    if let Some(error) = installing_error(&state) {
        return error_for(&state, &path, error);
    }
    let consistency = if immutable_read(&state, &path) {
        request.extensions_mut().insert(LocalFirst);
        crate::region::ReadConsistency::Immutable
    } else {
        let allow_stale = request
            .headers()
            .get(READ_CONSISTENCY)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("stale-ok"));
        match state.service.region.read_barrier(allow_stale).await {
            Ok(consistency) => consistency,
            Err(error) => return error_for(&state, &path, error),
        }
    };
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        READ_CONSISTENCY,
        HeaderValue::from_static(consistency.as_str()),
    );
    response
}

/// A refused write's body is read and discarded up to this much (and for at most
/// [`MIRROR_DRAIN_TIME`]) before the refusal is sent: a client still sending its body would
/// otherwise meet a closed connection ("broken pipe") instead of the redirect.
const MIRROR_DRAIN_BYTES: usize = 16 << 20;
const MIRROR_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses writes while this region is a read-only mirror, without storing anything: a `307`
/// to the same path on the primary with `READ_ONLY_MIRROR` in the body of the format the path
/// is (the registry's is `DENIED`) (the CLI follows it). Bodies up to 16 MiB are drained first so the
/// client reads the answer; a larger one gets the answer and a closed connection.
async fn mirror_writes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let Some(error) = state.service.geo.read_only_error() else {
        return next.run(request).await;
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let location = match &error {
        Error::ReadOnlyMirror {
            primary_http: Some(http),
            ..
        } => Some(format!("http://{http}{path}")),
        _ => None,
    };
    let drain = async {
        let mut body = request.into_body().into_data_stream();
        let mut drained = 0usize;
        while let Some(Ok(frame)) = body.next().await {
            drained += frame.len();
            if drained > MIRROR_DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(MIRROR_DRAIN_TIME, drain).await;
    let route = path.split('?').next().unwrap_or_default().to_string();
    let mut response = error_for(&state, &route, error);
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    response
}

/// Builds the node's HTTP router from the admin API and every format's routes (each
/// started by [`crate::formats::Format::start`]).
pub fn router(state: AppState, format_routes: Vec<Router>) -> Router {
    let mut data = Router::new()
        .route("/api/v1/repos", post(repos::create).get(repos::list))
        .route("/api/v1/repos/{repo}", get(repos::show))
        .route("/api/v1/divergent", get(divergent::list))
        .route("/api/v1/divergent/{seq}", get(divergent::content));
    for routes in format_routes {
        data = data.merge(routes.with_state(()));
    }
    let data = data
        .route_layer(middleware::from_fn_with_state(state.clone(), read_barrier))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::admit_uploads,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), mirror_writes));
    Router::new()
        .merge(data)
        .route("/metrics", get(system::metrics))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(state.clone(), request_span))
        .with_state(state)
}

/// The header that carries a request's id in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client; a longer or non-printable one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Runs every request inside a span naming it (`request_id`, from `X-Request-Id` or a new
/// one), the region and node, the method, the path and the repository, so every log line of
/// its write or read path (ingest, the quorum push, the proposal, the answer) carries them;
/// the id goes back in the response's `X-Request-Id`.
async fn request_span(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let path = request.uri().path();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        region = %state.service.region.name,
        node = state.service.region.node_id,
        method = %request.method(),
        path = %path.chars().take(256).collect::<String>(),
        repo = repo_of(&state, path).unwrap_or("-"),
    );
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The repository a request path names, if any.
fn repo_of<'p>(state: &AppState, path: &'p str) -> Option<&'p str> {
    if let Some(format) = formats::for_path(&state.formats, path) {
        return format.repo_of(path);
    }
    let rest = path.strip_prefix("/api/v1/repos/")?;
    rest.split('/').next().filter(|repo| !repo.is_empty())
}
