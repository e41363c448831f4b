//! The HTTP API (axum): generic files under `/files/`, the OCI registry under `/v2/`
//! ([`crate::formats::oci::api`]), the JSON admin API under `/api/v1/`, and the operational endpoints
//! `/metrics`, `/healthz`, `/readyz`.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod divergent;
pub mod limits;
pub mod repos;
pub mod system;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;

use crate::auth::model::Action;
use crate::auth::{Access, Auth, Challenge, Denial};
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
    pub auth: Arc<Auth>,
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

/// Set by `authorize` once it saw that no snapshot install is running (one read of the
/// staging record per request, not two).
#[derive(Clone, Copy)]
struct NotInstalling;

/// Runs the read barrier before every GET and HEAD of repository data, so a read on any node
/// sees every write acknowledged before it started; refuses the read (`NOT_READY`) when that
/// cannot be confirmed, unless the client accepts a stale answer.
async fn read_barrier(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    // `authorize` checked it a moment ago for any request that is not public.
    if request.extensions().get::<NotInstalling>().is_none() {
        if let Some(error) = installing_error(&state) {
            return error_for(&state, &path, error);
        }
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
    ) || access_of(&state, request.method(), request.uri().path()) == Access::Public
    {
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
        .route("/api/v1/repos/{repo}/access", put(auth::set_repo_access))
        .route("/api/v1/repos/{repo}/cache", delete(repos::purge_cache))
        .route("/api/v1/repos/{repo}/packages", get(repos::packages))
        .route(
            "/api/v1/repos/{repo}/packages/{*package}",
            get(repos::package),
        )
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
        ));
    let identities = Router::new()
        .route("/api/v1/auth/whoami", get(auth::whoami))
        .route("/api/v1/auth/signing-keys", post(auth::rotate_signing_key))
        .route(
            "/api/v1/users",
            get(accounts::list_users).post(accounts::create_user),
        )
        .route("/api/v1/users/{name}", delete(accounts::delete_user))
        .route("/api/v1/users/{name}/password", put(accounts::set_password))
        .route("/api/v1/teams", get(accounts::list_teams))
        .route(
            "/api/v1/teams/{name}",
            put(accounts::put_team).delete(accounts::delete_team),
        )
        .route(
            "/api/v1/tokens",
            get(auth::list_tokens).post(auth::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(auth::revoke_token))
        .route(
            "/api/v1/roles",
            get(accounts::list_roles)
                .post(accounts::grant_role)
                .delete(accounts::revoke_role),
        )
        .route("/api/v1/audit", get(audit::list_audit))
        .route("/api/v1/audit/verify", get(audit::verify_audit));
    Router::new()
        .merge(data)
        .merge(identities)
        .route("/api/v1/auth/login", post(auth::login))
        .route("/metrics", get(system::metrics))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .fallback(|| async { Error::RouteNotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        // Before any handler, for every route (fallbacks included): who is asking, may they.
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // A mirror refuses writes before it looks at credentials: the refusal (a redirect to
        // the primary) does not depend on what this mirror has replicated yet, and the client
        // authenticates where the write can happen.
        .layer(middleware::from_fn_with_state(state.clone(), mirror_writes))
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
    let mut request = request;
    request.extensions_mut().insert(RequestId(id.clone()));
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

/// A request's id, for handlers and the audit log.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The client's address (`-` when unknown: a request not from a socket).
#[derive(Debug, Clone, Copy)]
pub struct SourceAddr(pub Option<std::net::SocketAddr>);

impl SourceAddr {
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.map(|addr| addr.ip())
    }
}

impl std::fmt::Display for SourceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{}", addr.ip()),
            None => f.write_str("-"),
        }
    }
}

pub use crate::http_common::AuditAction;

/// What a core route needs (formats declare theirs with [`Format::access`]). Anything not
/// listed needs `cluster-admin`: a new route is closed until someone opens it here.
pub fn core_access(method: &Method, path: &str) -> Access {
    let read = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/metrics" | "/healthz" | "/readyz" => return Access::Public,
        "/api/v1/auth/login" => return Access::Public,
        "/api/v1/auth/whoami" | "/api/v1/tokens" => return Access::Authenticated,
        "/api/v1/repos" if read => return Access::Authenticated,
        _ => {}
    }
    if path.starts_with("/api/v1/tokens/") && *method == Method::DELETE {
        return Access::Authenticated;
    }
    if let Some(rest) = path.strip_prefix("/api/v1/repos/") {
        let mut parts = rest.splitn(2, '/');
        let repo = parts.next().unwrap_or_default();
        let below = parts.next();
        if !repo.is_empty() {
            return match below {
                Some("access") | Some("cache") => Access::repo(repo, Action::Admin),
                _ if read => Access::repo(repo, Action::Read),
                _ => Access::ClusterAdmin,
            };
        }
    }
    Access::ClusterAdmin
}

/// What a request to `path` needs, as its format or the core table says. Public writes (signing
/// in: the login and the registry token endpoint) store nothing but their audit record.
fn access_of(state: &AppState, method: &Method, path: &str) -> Access {
    match formats::for_path(&state.formats, path) {
        Some(format) => format.access(method, path),
        None => core_access(method, path),
    }
}

/// The route label of denial metrics: the format's name, or `api`.
fn route_label(format: Option<&'static dyn Format>) -> String {
    format.map_or_else(|| "api".to_string(), |f| f.name().to_string())
}

/// The `WWW-Authenticate` value of a 401.
fn challenge(
    config: &crate::config::NodeConfig,
    format: Option<&'static dyn Format>,
    path: &str,
    headers: &axum::http::HeaderMap,
    access: &Access,
    denial: Denial,
    presented: bool,
) -> String {
    match format.map_or(Challenge::Basic, |f| f.challenge()) {
        Challenge::Basic => "Basic realm=\"arca\", charset=\"UTF-8\"".to_string(),
        Challenge::Bearer => {
            let base = crate::http_common::client_base_url(config, headers);
            let mut value = format!(
                "Bearer realm=\"{base}/v2/token\",service=\"{}\"",
                crate::auth::credentials::SERVICE
            );
            if let Access::Repo {
                image: Some(image),
                action,
                ..
            } = access
            {
                let actions = match action {
                    Action::Read => "pull",
                    Action::Delete => "delete",
                    _ => "pull,push",
                };
                value.push_str(&format!(",scope=\"repository:{image}:{actions}\""));
            }
            if presented && matches!(denial, Denial::InsufficientScope) {
                value.push_str(",error=\"insufficient_scope\"");
            }
            value
        }
        Challenge::LoginUrl { scheme, page } => {
            let base = crate::http_common::client_base_url(config, headers);
            let format = format.and_then(|f| {
                let repo = f.repo_of(path)?;
                Some((f.prefixes().first()?.to_string(), repo))
            });
            match format {
                Some((prefix, repo)) => {
                    format!("{scheme} login_url=\"{base}{prefix}{repo}/{page}\"")
                }
                None => format!("{scheme} login_url=\"{base}/\""),
            }
        }
    }
}

/// Authenticates and authorizes every request before its handler runs (nothing is stored and
/// no body is read when it is refused), counts and audits every denial, and audits every
/// write with its outcome.
async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let format = formats::for_path(&state.formats, &path);
    let access = access_of(&state, &method, &path);
    // A mirror installing its primary's snapshot holds half old, half new credentials too:
    // decide nothing from them.
    if access != Access::Public {
        if let Some(error) = installing_error(&state) {
            return error_for(&state, &path, error);
        }
        request.extensions_mut().insert(NotInstalling);
    }
    let source = SourceAddr(
        request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0),
    );
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let presented = request
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION);
    let authenticated = state
        .auth
        .authenticate(request.headers(), source.ip())
        .await;
    let claimed = authenticated.as_ref().ok().map(|i| i.name().to_string());
    match crate::auth::enforce(&state.auth, &access, authenticated) {
        Ok(identity) => {
            let audited = !matches!(access, Access::Public)
                && !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
            let event = audited.then(|| crate::auth::audit::Event {
                principal: identity.name().to_string(),
                token_id: identity.token_id.clone(),
                source: source.to_string(),
                resource: path.clone(),
                repo: access.repo_name().map(str::to_string),
                request_id: request_id.clone(),
                ..Default::default()
            });
            request.extensions_mut().insert(identity);
            request.extensions_mut().insert(source);
            let response = next.run(request).await;
            if let Some(mut event) = event {
                let status = response.status();
                event.action = match response.extensions().get::<AuditAction>() {
                    Some(action) => action.0.to_string(),
                    None => format!("{} {}", route_label(format), method),
                };
                event.outcome = if status.is_success() || status.is_redirection() {
                    "ok".into()
                } else {
                    format!("error:{}", status.as_u16())
                };
                state.auth.audit.record(event);
            }
            response
        }
        Err(denial) => {
            let route = route_label(format);
            metrics::counter!("arca_auth_denied_total", "route" => route.clone(), "reason" => denial.reason())
                .increment(1);
            tracing::info!(reason = denial.reason(), principal = claimed.as_deref().unwrap_or("-"), %source, "refused a request");
            state.auth.audit.record(crate::auth::audit::Event {
                principal: claimed.unwrap_or_else(|| "anonymous".into()),
                source: source.to_string(),
                action: format!("{route} {method}"),
                resource: path.clone(),
                repo: access.repo_name().map(str::to_string),
                outcome: format!("denied:{}", denial.reason()),
                request_id,
                ..Default::default()
            });
            let headers = request.headers().clone();
            let error = auth::denial_error(denial);
            let unauthorized = matches!(error, Error::Unauthorized { .. });
            let mut response = error_for(&state, &path, error);
            if unauthorized {
                if let Ok(value) = HeaderValue::from_str(&challenge(
                    &state.service.config,
                    format,
                    &path,
                    &headers,
                    &access,
                    denial,
                    presented,
                )) {
                    response
                        .headers_mut()
                        .insert(axum::http::header::WWW_AUTHENTICATE, value);
                }
            }
            if format.is_some_and(|f| f.challenge() == Challenge::Bearer) {
                response.headers_mut().insert(
                    "docker-distribution-api-version",
                    HeaderValue::from_static("registry/2.0"),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_routes_are_closed_unless_listed() {
        let get = Method::GET;
        assert_eq!(core_access(&get, "/healthz"), Access::Public);
        assert_eq!(
            core_access(&Method::POST, "/api/v1/auth/login"),
            Access::Public
        );
        assert_eq!(core_access(&get, "/api/v1/repos"), Access::Authenticated);
        assert_eq!(
            core_access(&Method::POST, "/api/v1/repos"),
            Access::ClusterAdmin
        );
        assert_eq!(
            core_access(&get, "/api/v1/repos/builds/files"),
            Access::repo("builds", Action::Read)
        );
        assert_eq!(
            core_access(&Method::PUT, "/api/v1/repos/builds/access"),
            Access::repo("builds", Action::Admin)
        );
        assert_eq!(core_access(&get, "/api/v1/users"), Access::ClusterAdmin);
        assert_eq!(core_access(&get, "/api/v1/audit"), Access::ClusterAdmin);
        assert_eq!(
            core_access(&get, "/api/v1/anything-new"),
            Access::ClusterAdmin
        );
        assert_eq!(core_access(&get, "/nowhere"), Access::ClusterAdmin);
    }
}
