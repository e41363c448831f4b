//! `GET` and `POST /v2/token`: the registry token endpoint (the distribution token and OAuth2
//! specs), the `realm` every `/v2/` challenge names.
//!
//! `GET` takes optional Basic credentials (a password, or an access token as the password)
//! and `scope` parameters; `POST` takes a form with `grant_type=password` or
//! `grant_type=refresh_token`. Either answers a JWT granting, of every requested scope, the
//! actions the principal holds (possibly none: missing permissions are never an error here)
//! under both `token` and `access_token`, and a refresh token when asked for one
//! (`offline_token=true`, `access_type=offline`), which `docker login` and skopeo keep and
//! exchange by `POST` from then on. Errors are JSON, never HTML.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::audit::Event;
use crate::auth::{Credential, Denial, Identity, RegistryScope};
use crate::formats::oci::Registry;

/// Largest form body accepted.
const MAX_FORM: usize = 64 * 1024;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({
            "errors": [{ "code": code, "message": message, "detail": null }],
            "error": code.to_ascii_lowercase(),
            "error_description": message,
        })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"arca\""),
        );
    }
    response
}

fn denied(denial: Denial) -> Response {
    match denial {
        Denial::RateLimited { retry_after_secs } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                "too many failed attempts",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
            response
        }
        other => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            match other {
                Denial::Expired => "the credential has expired",
                Denial::Revoked => "the token was revoked",
                Denial::Disabled => "the account is disabled",
                _ => "the user name, password or token is not valid",
            },
        ),
    }
}

pub async fn handle(registry: &Registry, request: axum::extract::Request) -> Response {
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let mut response = match request.method().clone() {
        Method::GET => get(registry, request, source).await,
        Method::POST => post(registry, request, source).await,
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the token endpoint takes GET or POST",
        ),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(super::API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

/// Every `scope` value (each may hold several, space-separated).
fn scopes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<RegistryScope> {
    values
        .flat_map(|v| v.split(' '))
        .filter(|s| !s.is_empty())
        .filter_map(RegistryScope::parse)
        .take(64)
        .collect()
}

async fn get(
    registry: &Registry,
    request: axum::extract::Request,
    source: Option<std::net::IpAddr>,
) -> Response {
    let Ok(Query(params)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "malformed query string",
        );
    };
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let offline = param("offline_token") == Some("true");
    let requested = scopes(
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    let identity = match Credential::from_headers(request.headers()) {
        Ok(None) => Identity::anonymous(),
        Ok(Some(credential)) => match login(registry, &credential, source).await {
            Ok(identity) => identity,
            Err(response) => return response,
        },
        Err(denial) => return denied(denial),
    };
    issue(registry, &identity, &requested, offline)
}

async fn post(
    registry: &Registry,
    request: axum::extract::Request,
    source: Option<std::net::IpAddr>,
) -> Response {
    let body = match axum::body::to_bytes(request.into_body(), MAX_FORM).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                "the form is larger than 64 KiB",
            )
        }
    };
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(_) => return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "malformed form"),
    };
    let field = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let requested = scopes(field("scope").into_iter());
    let offline = field("access_type") == Some("offline");
    let identity = match field("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "grant_type=password needs username and password",
                );
            };
            match login(registry, &Credential::basic(user, password), source).await {
                Ok(identity) => identity,
                Err(response) => return response,
            }
        }
        Some("refresh_token") => {
            let Some(refresh) = field("refresh_token") else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "grant_type=refresh_token needs refresh_token",
                );
            };
            match registry.auth.check_refresh_token(refresh, source) {
                Ok(identity) => identity,
                Err(denial) => return denied(denial),
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED_GRANT_TYPE",
                "grant_type must be password or refresh_token",
            )
        }
    };
    issue(registry, &identity, &requested, offline)
}

/// Checks a credential presented to the token endpoint, auditing the login either way.
async fn login(
    registry: &Registry,
    credential: &Credential,
    source: Option<std::net::IpAddr>,
) -> Result<Identity, Response> {
    let claimed = match credential {
        Credential::Password { user, .. } => {
            format!("user:{}", user.chars().take(64).collect::<String>())
        }
        Credential::Token(token) => format!(
            "token:{}",
            crate::auth::credentials::token_id(token).unwrap_or("?")
        ),
        Credential::Jwt(_) => "jwt".into(),
    };
    let result = registry.auth.check_credential(credential, source).await;
    let (principal, token_id, outcome) = match &result {
        Ok(identity) => (
            identity.name().to_string(),
            identity.token_id.clone(),
            "ok".to_string(),
        ),
        Err(denial) => (claimed, None, format!("denied:{}", denial.reason())),
    };
    registry.auth.audit.record(Event {
        principal,
        token_id,
        source: source.map_or_else(|| "-".into(), |ip| ip.to_string()),
        action: "login".into(),
        resource: super::TOKEN_PATH.into(),
        outcome,
        ..Event::default()
    });
    result.map_err(denied)
}

fn issue(
    registry: &Registry,
    identity: &Identity,
    requested: &[RegistryScope],
    offline: bool,
) -> Response {
    let (token, _) = match registry.auth.registry_token(identity, requested) {
        Ok(issued) => issued,
        Err(e) => return crate::formats::oci::OciError::Node(e).into_response(),
    };
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": registry.auth.config.registry_token_secs,
        "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if offline && identity.principal.is_some() {
        match registry.auth.refresh_token(identity) {
            Ok(refresh) => body["refresh_token"] = json!(refresh),
            Err(e) => return crate::formats::oci::OciError::Node(e).into_response(),
        }
    }
    axum::Json(body).into_response()
}
