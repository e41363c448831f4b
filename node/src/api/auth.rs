//! `/api/v1/auth`, `/users`, `/teams`, `/tokens`, `/roles`, `/audit`: accounts, credentials,
//! role bindings and the audit log, as JSON. What each route needs is in
//! [`super::core_access`]; every write goes through Raft as an [`AuthCommand`].

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{AppState, AuditAction, SourceAddr};
use crate::auth::audit::Event;
use crate::auth::credentials;
use crate::auth::model::{AuthOp, Role, Scope, TokenRecord};
use crate::auth::{Credential, Denial, Identity};
use crate::error::{Error, Result};
use crate::metadata::model::{format_ms, now_ms};

pub(super) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("expected {shape}: {e}")))
}

/// Proposes an auth command; refusals become errors naming `what`.
pub(super) async fn propose(state: &AppState, op: AuthOp, what: &str) -> Result<()> {
    crate::auth::tokens::propose(&state.service, op, what).await
}

/// Answers `value` as JSON, naming the audited action.
pub(super) fn done(action: &'static str, value: serde_json::Value) -> Response {
    let mut response = Json(value).into_response();
    response.extensions_mut().insert(AuditAction(action));
    response
}

/// `POST /api/v1/auth/login` with `Authorization: Basic` (or `{"username","password"}`): a
/// session token for the CLI and API users.
pub async fn login(
    State(state): State<AppState>,
    Extension(source): Extension<SourceAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        username: String,
        password: String,
    }
    let credential = match Credential::from_headers(&headers) {
        Ok(Some(credential)) => credential,
        Ok(None) if !body.is_empty() => {
            let login: Login = parse(&body, "{\"username\", \"password\"}")?;
            Credential::basic(&login.username, &login.password)
        }
        Ok(None) => {
            return Err(Error::Unauthorized {
                reason: "send a user name and password or a token (Basic)".into(),
            })
        }
        Err(_) => {
            return Err(Error::Unauthorized {
                reason: "the credential is not valid".into(),
            })
        }
    };
    let checked = state.auth.check_credential(&credential, source.ip()).await;
    let principal = match &credential {
        Credential::Password { user, .. } => {
            format!("user:{}", user.chars().take(64).collect::<String>())
        }
        _ => "token".to_string(),
    };
    let identity = match checked {
        Ok(identity) => identity,
        Err(denial) => {
            state.auth.audit.record(Event {
                principal,
                source: source.to_string(),
                action: "login".into(),
                resource: "/api/v1/auth/login".into(),
                outcome: format!("denied:{}", denial.reason()),
                ..Event::default()
            });
            return Err(denial_error(denial));
        }
    };
    state.auth.audit.record(Event {
        principal: identity.name().to_string(),
        token_id: identity.token_id.clone(),
        source: source.to_string(),
        action: "login".into(),
        resource: "/api/v1/auth/login".into(),
        outcome: "ok".into(),
        ..Event::default()
    });
    let token = state.auth.session_token(&identity)?;
    Ok(Json(json!({
        "token": token,
        "expires_in": state.auth.config.session_secs,
        "principal": identity.name(),
    }))
    .into_response())
}

/// The error a denial answers with (in the core's JSON body).
pub fn denial_error(denial: Denial) -> Error {
    match denial {
        Denial::RateLimited { retry_after_secs } => Error::TooManyAttempts { retry_after_secs },
        Denial::Forbidden => Error::Forbidden {
            reason: "your roles do not allow this".into(),
        },
        other => Error::Unauthorized {
            reason: match other {
                Denial::NoCredential => "this request needs a credential",
                Denial::Expired => "the credential has expired",
                Denial::Revoked => "the token was revoked",
                Denial::Disabled => "the account is disabled or no longer exists",
                Denial::InsufficientScope => "the token does not grant this action",
                _ => "the credential is not valid",
            }
            .into(),
        },
    }
}

/// `GET /api/v1/auth/whoami`.
pub async fn whoami(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response> {
    let auth_state = state.auth.state()?;
    let principal = identity.name().to_string();
    let roles: Vec<_> = auth_state
        .policy
        .bindings_of(&principal)
        .into_iter()
        .map(|b| json!({ "pattern": b.pattern, "role": b.role.as_str(), "via": b.principal }))
        .collect();
    Ok(Json(json!({
        "principal": principal,
        "method": identity.method,
        "token_id": identity.token_id,
        "scopes": identity.scopes.as_ref().map(|s| s.iter().map(Scope::to_string).collect::<Vec<_>>()),
        "cluster_admin": state.auth.is_cluster_admin(&identity),
        "roles": roles,
    }))
    .into_response())
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    owner: String,
    scopes: Vec<String>,
    description: String,
    created_at: String,
    expires_at: String,
    last_used: Option<String>,
    revoked_at: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            owner: t.owner.clone(),
            scopes: t.scopes.iter().map(Scope::to_string).collect(),
            description: t.description.clone(),
            created_at: format_ms(t.created_at_ms),
            expires_at: format_ms(t.expires_at_ms),
            last_used: t.last_used_ms.map(format_ms),
            revoked_at: t.revoked_at_ms.map(format_ms),
        }
    }
}

#[derive(Deserialize)]
pub struct TokenQuery {
    owner: Option<String>,
}

/// `GET /api/v1/tokens[?owner=]`: the caller's tokens (a cluster admin's: anyone's).
pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Query(query): Query<TokenQuery>,
) -> Result<Response> {
    let owner = token_owner(&state, &identity, query.owner)?;
    let auth_state = state.auth.state()?;
    let mut tokens: Vec<&TokenRecord> = auth_state
        .tokens
        .values()
        .filter(|t| t.owner == owner)
        .collect();
    tokens.sort_by_key(|t| t.created_at_ms);
    let tokens: Vec<TokenView> = tokens.into_iter().map(TokenView::from).collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// The account a token request is about: the caller's own, or (for a cluster admin) any.
fn token_owner(state: &AppState, identity: &Identity, owner: Option<String>) -> Result<String> {
    let own = identity.account().map(str::to_string);
    match owner {
        Some(owner) if Some(&owner) != own.as_ref() => {
            if state.auth.is_cluster_admin(identity) {
                Ok(owner)
            } else {
                Err(Error::Forbidden {
                    reason: "only a cluster admin manages another account's tokens".into(),
                })
            }
        }
        _ => own.ok_or_else(|| Error::Unauthorized {
            reason: "this request needs a credential".into(),
        }),
    }
}

/// `POST /api/v1/tokens` `{"scopes": ["builds/**:write"], "expires_in_days", "description",
/// "owner"}`: the token is in the answer, once.
pub async fn create_token(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: axum::body::Bytes,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create {
        scopes: Vec<String>,
        #[serde(default)]
        expires_in_days: Option<u64>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        owner: Option<String>,
    }
    let request: Create = parse(
        &body,
        "{\"scopes\", \"expires_in_days\", \"description\", \"owner\"}",
    )?;
    let owner = token_owner(&state, &identity, request.owner)?;
    if request.scopes.is_empty() || request.scopes.len() > 32 {
        return Err(invalid("a token has 1 to 32 scopes (PATTERN:ROLE)"));
    }
    let scopes = request
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(invalid)?;
    // A token can never do more than its creator: a scoped credential cannot mint a broader one.
    if let Some(own) = &identity.scopes {
        for scope in &scopes {
            if !own.iter().any(|o| {
                o.role == Role::ClusterAdmin
                    || (o.role >= scope.role
                        && crate::auth::policy::matches(&o.pattern, &scope.pattern))
            }) {
                return Err(Error::Forbidden {
                    reason: format!("this token cannot create a token with scope {scope}"),
                });
            }
        }
    }
    let issued = crate::auth::tokens::issue(
        &state.service,
        &state.auth.config,
        &owner,
        scopes,
        request.expires_in_days,
        request.description.unwrap_or_default(),
    )
    .await?;
    let view = TokenView::from(&issued.record);
    Ok(done(
        "token.create",
        json!({ "token": issued.token, "id": issued.record.id, "owner": owner, "scopes": view.scopes, "expires_at": view.expires_at }),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revokes it on every node of every region (within the
/// replication lag).
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response> {
    let owner = state
        .auth
        .state()?
        .tokens
        .get(&id)
        .map(|t| t.owner.clone())
        .ok_or_else(|| Error::NoSuch {
            what: format!("token {id}"),
        })?;
    token_owner(&state, &identity, Some(owner))?;
    propose(
        &state,
        AuthOp::RevokeToken { id: id.clone() },
        &format!("token {id}"),
    )
    .await?;
    Ok(done("token.revoke", json!({ "revoked": id })))
}

/// `PUT /api/v1/repos/{repo}/access` `{"anonymous_read": true}`.
pub async fn set_repo_access(
    State(state): State<AppState>,
    Path(repo): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SetAccess {
        anonymous_read: bool,
    }
    let request: SetAccess = parse(&body, "{\"anonymous_read\"}")?;
    propose(
        &state,
        AuthOp::SetAnonymousRead {
            repo: repo.clone(),
            anonymous_read: request.anonymous_read,
        },
        &format!("repository {repo}"),
    )
    .await?;
    Ok(done(
        "repo.access",
        json!({ "repo": repo, "anonymous_read": request.anonymous_read }),
    ))
}

/// `POST /api/v1/auth/signing-keys`: a new key signs from now on; the previous one still
/// verifies the tokens it signed.
pub async fn rotate_signing_key(State(state): State<AppState>) -> Result<Response> {
    let key = credentials::new_signing_key(now_ms());
    let kid = key.kid.clone();
    propose(&state, AuthOp::RotateSigningKey { key }, "signing key").await?;
    Ok(done("signing-key.rotate", json!({ "kid": kid })))
}
