//! The login routes' answers: the web flow's start, page, approval and poll, the legacy
//! CouchDB user PUT, and `npm logout`. Every login ends in an Arca access token scoped to the
//! repository, issued through Raft, and is audited whatever its outcome.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::api::{error_response, ok, NpmError, Result, Session};
use super::login::Poll;
use super::publish::invalid;
use crate::auth::audit::Event;
use crate::auth::model::Scope;
use crate::auth::{credentials, Credential, Identity};
use crate::error::Error;

impl Session<'_> {
    pub(super) fn start_web_login(&self) -> Result<Response> {
        let id = self
            .registry
            .logins
            .start(self.repo)
            .ok_or(Error::TooManyAttempts {
                retry_after_secs: 60,
            })?;
        let url = self.registry_url();
        Ok(Json(json!({
            "loginUrl": format!("{url}/-/v1/login/{id}"),
            "doneUrl": format!("{url}/-/v1/done/{id}"),
        }))
        .into_response())
    }

    pub(super) fn login_page(&self, id: &str) -> Response {
        if !self.registry.logins.pending(self.repo, id) {
            return (
                StatusCode::NOT_FOUND,
                Html("<!doctype html><title>Arca</title><p>This login has expired or was completed; run npm login again.</p>".to_string()),
            )
                .into_response();
        }
        Html(format!(
            "<!doctype html><title>Arca: npm login</title><h1>Sign in to use npm with {repo}</h1>\
             <form method=post><label>User <input name=username autocomplete=username></label> \
             <label>Password or token <input name=password type=password></label> \
             <button>Sign in</button></form>",
            repo = html_escape(self.repo.as_str())
        ))
        .into_response()
    }

    /// The login page's POST: the credential in `Authorization` (any the node accepts) or the
    /// form's user name and password.
    pub(super) async fn approve_web_login(
        &self,
        id: &str,
        headers: &HeaderMap,
        form: &[u8],
    ) -> Result<Response> {
        let credential = match Credential::from_headers(headers) {
            Ok(Some(credential)) => credential,
            Ok(None) => {
                #[derive(serde::Deserialize)]
                struct LoginForm {
                    username: String,
                    password: String,
                }
                let form: LoginForm = serde_urlencoded::from_bytes(form).map_err(|_| {
                    invalid("send username and password (a form), or Authorization")
                })?;
                Credential::basic(&form.username, &form.password)
            }
            Err(_) => return Err(unauthorized("the credential is not valid")),
        };
        if !self.registry.logins.pending(self.repo, id) {
            return Err(Error::ArtifactNotFound {
                repo: self.repo.to_string(),
                path: "this login session (expired or completed)".into(),
            }
            .into());
        }
        let token = self.issue(&credential, "web").await?;
        if !self.registry.logins.approve(self.repo, id, token) {
            return Err(Error::ArtifactNotFound {
                repo: self.repo.to_string(),
                path: "this login session (expired or completed)".into(),
            }
            .into());
        }
        Ok(Html("<!doctype html><title>Arca</title><p>Signed in. npm has its token: return to your terminal.</p>".to_string()).into_response())
    }

    pub(super) fn poll_web_login(&self, id: &str) -> Response {
        match self.registry.logins.poll(self.repo, id) {
            Poll::Pending => (
                StatusCode::ACCEPTED,
                [(header::RETRY_AFTER, "1")],
                Json(json!({})),
            )
                .into_response(),
            Poll::Done(token) => Json(json!({ "token": token })).into_response(),
            Poll::Unknown => error_response(Error::ArtifactNotFound {
                repo: self.repo.to_string(),
                path: "this login session (expired or completed)".into(),
            }),
        }
    }

    /// `PUT /-/user/org.couchdb.user:{name}` with `{"name", "password"}`.
    pub(super) async fn legacy_login(&self, name: &str, body: &[u8]) -> Result<Response> {
        #[derive(serde::Deserialize)]
        struct CouchUser {
            name: String,
            password: Option<String>,
        }
        let user: CouchUser = serde_json::from_slice(body)
            .map_err(|_| invalid("expected {\"name\", \"password\"}"))?;
        let Some(password) = user.password.filter(|_| user.name == name) else {
            return Err(unauthorized(
                "send the user's name and password (accounts are created by an administrator)",
            ));
        };
        let token = self
            .issue(&Credential::basic(name, &password), "legacy")
            .await?;
        Ok((
            StatusCode::CREATED,
            Json(json!({ "ok": true, "id": format!("org.couchdb.user:{name}"), "token": token })),
        )
            .into_response())
    }

    /// Checks a credential and issues a token scoped to this repository for its account;
    /// both outcomes are audited.
    async fn issue(&self, credential: &Credential, flow: &'static str) -> Result<String> {
        let registry = self.registry;
        let checked = registry
            .auth
            .check_credential(credential, self.source.map(|s| s.ip()))
            .await;
        let claimed = match credential {
            Credential::Password { user, .. } => {
                format!("user:{}", user.chars().take(64).collect::<String>())
            }
            _ => "token".to_string(),
        };
        let audit = |principal: String, token_id: Option<String>, outcome: String| {
            registry.auth.audit.record(Event {
                principal,
                token_id,
                source: self
                    .source
                    .map(|s| s.ip().to_string())
                    .unwrap_or_else(|| "-".into()),
                action: format!("npm.login.{flow}"),
                resource: self.path.to_string(),
                repo: Some(self.repo.to_string()),
                outcome,
                ..Event::default()
            });
        };
        let identity = match checked {
            Ok(identity) if identity.account().is_some() => identity,
            Ok(_) => {
                audit(claimed, None, "denied:no_account".into());
                return Err(unauthorized("this credential names no account"));
            }
            Err(denial) => {
                audit(claimed, None, format!("denied:{}", denial.reason()));
                return Err(match denial {
                    crate::auth::Denial::RateLimited { retry_after_secs } => {
                        Error::TooManyAttempts { retry_after_secs }
                    }
                    _ => unauthorized("the user name or password is wrong").0,
                }
                .into());
            }
        };
        let owner = identity.account().unwrap_or_default().to_string();
        let scope = Scope::parse(&format!("{}:admin", self.repo)).map_err(invalid)?;
        let issued = crate::auth::tokens::issue(
            &registry.service,
            &registry.auth.config,
            &owner,
            vec![scope],
            None,
            format!("npm login ({flow}) to {}", self.repo),
        )
        .await?;
        audit(
            identity.name().to_string(),
            Some(issued.record.id.clone()),
            "ok".into(),
        );
        Ok(issued.token)
    }

    /// `npm logout`: revokes the token the request presents (only one's own).
    pub(super) async fn logout(
        &self,
        identity: Option<&Identity>,
        token: &str,
    ) -> Result<Response> {
        let id =
            credentials::token_id(token).ok_or_else(|| invalid("that is not an Arca token"))?;
        let owner = self
            .registry
            .auth
            .state()?
            .tokens
            .get(id)
            .map(|t| t.owner.clone());
        match (owner, identity.and_then(Identity::account)) {
            (Some(owner), Some(account)) if owner == account => {}
            _ => {
                return Err(Error::Forbidden {
                    reason: "a client logs out with its own token".into(),
                }
                .into())
            }
        }
        crate::auth::tokens::revoke(&self.registry.service, id).await?;
        Ok(ok(StatusCode::OK, json!({ "ok": true }), "npm.logout"))
    }
}

fn unauthorized(reason: &str) -> NpmError {
    NpmError::from(Error::Unauthorized {
        reason: reason.into(),
    })
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
