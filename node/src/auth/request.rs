//! What a request presents: its credential (every client's shape: Basic with a password or
//! a token, Bearer, cargo's bare token, NuGet's API key) and the registry scopes it asks for.

use std::net::IpAddr;

use base64::Engine;

use super::credentials;
use super::model::Action;
use super::Denial;

/// One requested registry scope, `type:name:actions` (the name may hold `host:port`, so
/// the actions are after the last `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryScope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl RegistryScope {
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if name.is_empty() || name.len() > 512 {
            return None;
        }
        Some(Self {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .flat_map(|a| {
                    if a == "*" {
                        vec!["pull".to_string(), "push".to_string(), "delete".to_string()]
                    } else {
                        vec![a.to_string()]
                    }
                })
                .collect(),
        })
    }
}

/// The action a registry scope action needs.
pub fn registry_action(action: &str) -> Option<Action> {
    Some(match action {
        "pull" => Action::Read,
        "push" => Action::Write,
        "delete" => Action::Delete,
        _ => return None,
    })
}

/// A credential as presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Password {
        user: String,
        password: String,
    },
    /// An access token (`arca_…`).
    Token(String),
    /// A registry or session JWT.
    Jwt(String),
}

/// Longest credential header accepted.
const MAX_CREDENTIAL: usize = 8 * 1024;

impl Credential {
    /// The credential of a request, if any; a malformed one is a bad credential.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<Credential>, Denial> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = value
                .to_str()
                .ok()
                .filter(|v| v.len() <= MAX_CREDENTIAL)
                .ok_or(Denial::BadCredential)?;
            return Credential::parse_authorization(value).map(Some);
        }
        if let Some(value) = headers.get("x-nuget-apikey") {
            let value = value.to_str().map_err(|_| Denial::BadCredential)?;
            return Credential::bare(value).map(Some);
        }
        Ok(None)
    }

    pub fn parse_authorization(value: &str) -> Result<Credential, Denial> {
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(Denial::BadCredential)?;
            let (user, secret) = decoded.split_once(':').ok_or(Denial::BadCredential)?;
            return Ok(Credential::basic(user, secret));
        }
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            return Credential::bare(rest);
        }
        // cargo sends the token itself as the header value.
        Credential::bare(value)
    }

    /// Basic `user:secret`: the secret is a password, or a token under any user name
    /// (`__token__` for twine, the account's own name for pip, mvn, nuget).
    pub fn basic(user: &str, secret: &str) -> Credential {
        if secret.starts_with(credentials::TOKEN_PREFIX) {
            Credential::Token(secret.to_string())
        } else if credentials::looks_like_jwt(secret) {
            Credential::Jwt(secret.to_string())
        } else {
            Credential::Password {
                user: user.to_string(),
                password: secret.to_string(),
            }
        }
    }

    fn bare(value: &str) -> Result<Credential, Denial> {
        let value = value.trim();
        if value.starts_with(credentials::TOKEN_PREFIX) {
            Ok(Credential::Token(value.to_string()))
        } else if credentials::looks_like_jwt(value) {
            Ok(Credential::Jwt(value.to_string()))
        } else {
            Err(Denial::BadCredential)
        }
    }
}

/// The rate-limit keys of an attempt: the principal it claims and the source address.
pub(super) fn limiter_keys(credential: &Credential, source: Option<IpAddr>) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    match credential {
        Credential::Password { user, .. } => keys.push(format!("user:{}", truncate(user, 64))),
        Credential::Token(token) => {
            if let Some(id) = credentials::token_id(token) {
                keys.push(format!("token:{id}"));
            }
        }
        Credential::Jwt(_) => {}
    }
    if let Some(ip) = source {
        keys.push(format!("ip:{ip}"));
    }
    keys
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_from_every_client_shape() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let token = "arca_abcdefghijkl_0123456789abcdefghijABCDEFGHIJ0123";
        assert_eq!(
            Credential::parse_authorization(&basic("alice:pw")),
            Ok(Credential::Password {
                user: "alice".into(),
                password: "pw".into()
            })
        );
        for header in [
            basic(&format!("__token__:{token}")),
            format!("Bearer {token}"),
            token.to_string(),
        ] {
            assert_eq!(
                Credential::parse_authorization(&header),
                Ok(Credential::Token(token.into()))
            );
        }
        assert_eq!(
            Credential::parse_authorization("Bearer nonsense"),
            Err(Denial::BadCredential)
        );
        assert_eq!(
            Credential::parse_authorization("Basic !!!"),
            Err(Denial::BadCredential)
        );
    }

    #[test]
    fn registry_scopes_split_actions_on_the_last_colon() {
        let scope =
            RegistryScope::parse("repository:localhost:5000/team/app:pull,push").expect("scope");
        assert_eq!(scope.name, "localhost:5000/team/app");
        assert_eq!(scope.actions, ["pull", "push"]);
        assert_eq!(
            RegistryScope::parse("registry:catalog:*")
                .expect("scope")
                .actions,
            ["pull", "push", "delete"]
        );
        assert_eq!(RegistryScope::parse("nonsense"), None);
    }
}
