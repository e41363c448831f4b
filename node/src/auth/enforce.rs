//! The decision every request goes through before its handler: what the route needs
//! ([`Access`], declared by the route's format or the core API), who the request is
//! ([`super::Identity`]), and whether that is enough.

use super::model::Action;
use super::{Auth, Denial, Identity};

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, metrics, the token endpoint and login, which check credentials
    /// themselves).
    Public,
    /// Any valid credential (a registry token without scopes included).
    Authenticated,
    /// `action` on repository `repo`; `image` is the registry name a registry token's access
    /// list must name (`team/app` inside repository `team`).
    Repo {
        repo: String,
        image: Option<String>,
        action: Action,
    },
    /// The `cluster-admin` role.
    ClusterAdmin,
}

impl Access {
    pub fn repo(repo: &str, action: Action) -> Self {
        Access::Repo {
            repo: repo.to_string(),
            image: None,
            action,
        }
    }

    pub fn repo_name(&self) -> Option<&str> {
        match self {
            Access::Repo { repo, .. } => Some(repo),
            _ => None,
        }
    }
}

/// The challenge a format's clients expect on `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `WWW-Authenticate: Basic realm="arca"` (files, packages, the API).
    Basic,
    /// `WWW-Authenticate: Bearer realm="<base>/v2/token",service="arca",scope=…` (`/v2/`).
    Bearer,
    /// `WWW-Authenticate: <scheme> login_url="<base><prefix><repo>/<page>"`: where a person
    /// gets a token (cargo's `Cargo login_url`, the format's page under its repository).
    LoginUrl {
        scheme: &'static str,
        page: &'static str,
    },
}

/// The registry action name of an action.
fn registry_action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "pull",
        Action::Write | Action::Admin => "push",
        Action::Delete => "delete",
    }
}

/// Whether `identity` (authenticated as `authenticated` says) may make a request that needs
/// `access`: the identity to run it as, or the denial.
pub fn enforce(
    auth: &Auth,
    access: &Access,
    authenticated: Result<Identity, Denial>,
) -> Result<Identity, Denial> {
    let identity = match (access, authenticated) {
        (Access::Public, Ok(identity)) => return Ok(identity),
        // Public routes check what they were sent themselves.
        (Access::Public, Err(_)) => return Ok(Identity::anonymous()),
        (_, Err(denial)) => return Err(denial),
        (_, Ok(identity)) => identity,
    };
    let unauthenticated = |identity: &Identity| {
        if identity.principal.is_none() {
            Denial::NoCredential
        } else {
            Denial::Forbidden
        }
    };
    match access {
        Access::Public => Ok(identity),
        Access::Authenticated => {
            if identity.principal.is_some() || identity.registry_access.is_some() {
                Ok(identity)
            } else {
                Err(Denial::NoCredential)
            }
        }
        Access::Repo {
            repo,
            image,
            action,
        } => {
            let allowed = auth.allows(&identity, repo, *action);
            match (&identity.registry_access, image) {
                (Some(list), Some(image)) => {
                    let wanted = registry_action_name(*action);
                    let in_token = list.iter().any(|entry| {
                        entry.kind == "repository"
                            && entry.name == *image
                            && entry.actions.iter().any(|a| a == wanted)
                    });
                    match (in_token, allowed) {
                        (true, true) => Ok(identity),
                        (false, true) => Err(Denial::InsufficientScope),
                        // Anonymous: the client should log in; otherwise it is final.
                        (_, false) if identity.principal.is_none() => {
                            Err(Denial::InsufficientScope)
                        }
                        (_, false) => Err(Denial::Forbidden),
                    }
                }
                _ if allowed => Ok(identity),
                _ => Err(unauthenticated(&identity)),
            }
        }
        Access::ClusterAdmin => {
            if auth.is_cluster_admin(&identity) {
                Ok(identity)
            } else {
                Err(unauthenticated(&identity))
            }
        }
    }
}
