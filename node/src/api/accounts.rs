//! `/api/v1/users`, `/teams`, `/roles`: accounts, teams and role bindings (cluster-admin).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{done, invalid, parse, propose};
use crate::api::AppState;
use crate::auth::credentials;
use crate::auth::model::{check_name, Account, AccountKind, AuthOp, Binding, Role, Team};
use crate::error::{Error, Result};
use crate::metadata::model::{format_ms, now_ms};

#[derive(Serialize)]
struct AccountView {
    name: String,
    kind: &'static str,
    created_at: String,
    disabled: bool,
}

/// `GET /api/v1/users`.
pub async fn list_users(State(state): State<AppState>) -> Result<Response> {
    let auth_state = state.auth.state()?;
    let mut users: Vec<AccountView> = auth_state
        .accounts
        .values()
        .map(|a| AccountView {
            name: a.name.clone(),
            kind: a.kind.as_str(),
            created_at: format_ms(a.created_at_ms),
            disabled: a.disabled,
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "users": users })).into_response())
}

/// `POST /api/v1/users` `{"name", "kind": "user"|"service", "password"}`.
pub async fn create_user(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create {
        name: String,
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        password: Option<String>,
    }
    let request: Create = parse(&body, "{\"name\", \"kind\", \"password\"}")?;
    check_name("account", &request.name).map_err(invalid)?;
    let kind = match request.kind.as_deref() {
        None | Some("user") => AccountKind::User,
        Some("service") => AccountKind::Service,
        Some(other) => {
            return Err(invalid(format!(
                "kind must be user or service, not {other:?}"
            )))
        }
    };
    let password_hash = match (&kind, &request.password) {
        (AccountKind::Service, Some(_)) => {
            return Err(invalid(
                "a service account has no password; create tokens for it",
            ))
        }
        (AccountKind::User, Some(password)) => {
            credentials::check_password(password).map_err(invalid)?;
            Some(credentials::hash_password(password).map_err(|e| Error::internal("hash", e))?)
        }
        (_, None) => None,
    };
    let account = Account {
        name: request.name.clone(),
        kind,
        password_hash,
        created_at_ms: now_ms(),
        disabled: false,
    };
    propose(
        &state,
        AuthOp::CreateAccount { account },
        &format!("account {}", request.name),
    )
    .await?;
    Ok(done(
        "user.create",
        json!({ "name": request.name, "kind": kind.as_str() }),
    ))
}

/// `DELETE /api/v1/users/{name}`: the account, its tokens and its role bindings.
pub async fn delete_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response> {
    propose(
        &state,
        AuthOp::DeleteAccount { name: name.clone() },
        &format!("account {name}"),
    )
    .await?;
    Ok(done("user.delete", json!({ "deleted": name })))
}

/// `PUT /api/v1/users/{name}/password` `{"password"}`.
pub async fn set_password(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SetPassword {
        password: String,
    }
    let request: SetPassword = parse(&body, "{\"password\"}")?;
    credentials::check_password(&request.password).map_err(invalid)?;
    let password_hash =
        credentials::hash_password(&request.password).map_err(|e| Error::internal("hash", e))?;
    propose(
        &state,
        AuthOp::SetPassword {
            name: name.clone(),
            password_hash,
        },
        &format!("account {name}"),
    )
    .await?;
    Ok(done("user.password", json!({ "name": name })))
}

/// `GET /api/v1/teams`.
pub async fn list_teams(State(state): State<AppState>) -> Result<Response> {
    let teams: Vec<_> = state
        .auth
        .state()?
        .teams
        .iter()
        .map(|t| json!({ "name": t.name, "members": t.members }))
        .collect();
    Ok(Json(json!({ "teams": teams })).into_response())
}

/// `PUT /api/v1/teams/{name}` `{"members": [...]}`: creates or replaces the team.
pub async fn put_team(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PutTeam {
        members: Vec<String>,
    }
    let request: PutTeam = parse(&body, "{\"members\"}")?;
    check_name("team", &name).map_err(invalid)?;
    let team = Team {
        name: name.clone(),
        members: request.members,
        created_at_ms: now_ms(),
    };
    propose(&state, AuthOp::PutTeam { team }, &format!("team {name}")).await?;
    Ok(done("team.put", json!({ "name": name })))
}

pub async fn delete_team(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response> {
    propose(
        &state,
        AuthOp::DeleteTeam { name: name.clone() },
        &format!("team {name}"),
    )
    .await?;
    Ok(done("team.delete", json!({ "deleted": name })))
}

/// `GET /api/v1/roles`.
pub async fn list_roles(State(state): State<AppState>) -> Result<Response> {
    let roles: Vec<_> = state
        .auth
        .state()?
        .bindings
        .iter()
        .map(|b| json!({ "principal": b.principal, "pattern": b.pattern, "role": b.role.as_str(), "created_at": format_ms(b.created_at_ms) }))
        .collect();
    Ok(Json(json!({ "roles": roles })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    principal: String,
    pattern: String,
    role: String,
}

fn parse_role(request: &RoleRequest) -> Result<Role> {
    Role::parse(&request.role)
        .ok_or_else(|| invalid("role must be read, write, delete, admin or cluster-admin"))
}

/// `POST /api/v1/roles` `{"principal": "user:alice", "pattern": "builds/**", "role": "write"}`.
pub async fn grant_role(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let request: RoleRequest = parse(&body, "{\"principal\", \"pattern\", \"role\"}")?;
    let role = parse_role(&request)?;
    let binding = Binding {
        principal: request.principal.clone(),
        pattern: request.pattern.clone(),
        role,
        created_at_ms: now_ms(),
    };
    propose(
        &state,
        AuthOp::Grant { binding },
        &format!("principal {}", request.principal),
    )
    .await?;
    Ok(done(
        "role.grant",
        json!({ "principal": request.principal, "pattern": request.pattern, "role": role.as_str() }),
    ))
}

/// `DELETE /api/v1/roles?principal=&pattern=&role=`.
pub async fn revoke_role(
    State(state): State<AppState>,
    Query(request): Query<RoleRequest>,
) -> Result<Response> {
    let role = parse_role(&request)?;
    propose(
        &state,
        AuthOp::RevokeRole {
            principal: request.principal.clone(),
            pattern: request.pattern.clone(),
            role,
        },
        &format!(
            "binding of {} on {} to {}",
            role.as_str(),
            request.pattern,
            request.principal
        ),
    )
    .await?;
    Ok(done(
        "role.revoke",
        json!({ "principal": request.principal, "pattern": request.pattern, "role": role.as_str() }),
    ))
}
