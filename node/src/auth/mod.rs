//! Who is asking, and may they: identities, credentials, role bindings and the audit log.
//!
//! Accounts (users and service accounts), teams, access tokens (hashes only), role bindings,
//! anonymous-read flags and the JWT signing keys are records of the replicated state machine
//! ([`apply::AuthApply`], key range `auth/`), so every node of every region knows them and a
//! revocation reaches each one with the change log. A node keeps an in-memory copy of them
//! ([`AuthState`]), reloaded whenever an auth command was applied, so checking a request never
//! reads the disk: a token is a map lookup and a hash compare, a registry or session JWT an
//! HMAC, and a password is verified with argon2id once per state generation (then cached by
//! digest).
//!
//! Every HTTP route declares what it needs ([`Access`]); the API's middleware
//! ([`enforce`]) authenticates, authorizes and audits before any handler runs, so a refused
//! request stores nothing and its body is never read.

pub mod apply;
pub mod audit;
pub mod bootstrap;
pub mod credentials;
mod enforce;
pub mod grpc;
pub mod keys;
mod limiter;
pub mod model;
pub mod policy;
mod request;
pub mod tokens;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

pub use enforce::{enforce, Access, Challenge};
pub use request::{registry_action, Credential, RegistryScope};

use limiter::FailureLimiter;
use request::limiter_keys;

use crate::config::AuthConfig;
use crate::metadata::catalog::Catalog;
use credentials::{AccessEntry, Claims, JwtError, TokenKind};
use model::{Account, Action, Binding, Scope, SigningKey, Team, TokenRecord};
use policy::Policy;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user:alice`, `service:ci`; `None` for an anonymous request.
    pub principal: Option<String>,
    /// The access token the request presented (or its JWT was obtained with).
    pub token_id: Option<String>,
    /// How it authenticated: `anonymous`, `password`, `token`, `session`, `registry`.
    pub method: &'static str,
    /// A token's scopes narrow the principal's roles; `None`: the principal's roles.
    pub scopes: Option<Vec<Scope>>,
    /// A registry JWT's access list: `/v2/` requests need their action in it.
    pub registry_access: Option<Vec<AccessEntry>>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            principal: None,
            token_id: None,
            method: "anonymous",
            scopes: None,
            registry_access: None,
        }
    }

    /// The principal, or `anonymous`.
    pub fn name(&self) -> &str {
        self.principal.as_deref().unwrap_or("anonymous")
    }

    /// The account name (`alice` of `user:alice`).
    pub fn account(&self) -> Option<&str> {
        self.principal
            .as_deref()
            .and_then(|p| p.split_once(':'))
            .map(|(_, name)| name)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No credential where one is needed (401).
    NoCredential,
    /// A credential that names no account, a wrong password, a malformed or forged token (401).
    BadCredential,
    Expired,
    Revoked,
    /// The account is disabled or was deleted (401).
    Disabled,
    /// Too many failed attempts (429).
    RateLimited {
        retry_after_secs: u64,
    },
    /// Authenticated, but the roles (or the token's scopes) do not allow it (403).
    Forbidden,
    /// A registry token without the action in its access list, that the principal's roles
    /// would allow: ask the token endpoint for it (401 `insufficient_scope`).
    InsufficientScope,
}

impl Denial {
    pub fn reason(self) -> &'static str {
        match self {
            Denial::NoCredential => "no_credential",
            Denial::BadCredential => "bad_credential",
            Denial::Expired => "expired",
            Denial::Revoked => "revoked",
            Denial::Disabled => "disabled",
            Denial::RateLimited { .. } => "rate_limited",
            Denial::Forbidden => "forbidden",
            Denial::InsufficientScope => "insufficient_scope",
        }
    }

    /// A failed authentication (counted against the rate limit), not a refused permission.
    pub fn is_failed_login(self) -> bool {
        matches!(
            self,
            Denial::BadCredential | Denial::Expired | Denial::Revoked | Denial::Disabled
        )
    }
}

/// The node's copy of the auth records, as of one state-machine generation.
#[derive(Debug, Default)]
pub struct AuthState {
    generation: u64,
    pub accounts: HashMap<String, Account>,
    pub tokens: HashMap<String, TokenRecord>,
    pub teams: Vec<Team>,
    pub bindings: Vec<Binding>,
    /// Oldest first: the last one signs.
    pub keys: Vec<SigningKey>,
    pub policy: Policy,
}

impl AuthState {
    fn load(catalog: &Catalog, generation: u64) -> crate::error::Result<Self> {
        fn all<T: serde::de::DeserializeOwned>(
            catalog: &Catalog,
            prefix: &[u8],
        ) -> crate::error::Result<Vec<T>> {
            let (items, _) = catalog.scan(prefix, None, usize::MAX, |_, value| {
                crate::metadata::codec::decode(value)
            })?;
            Ok(items)
        }
        let accounts: Vec<Account> = all(catalog, keys::ACCOUNTS)?;
        let tokens: Vec<TokenRecord> = all(catalog, keys::TOKENS)?;
        let teams: Vec<Team> = all(catalog, keys::TEAMS)?;
        let bindings: Vec<Binding> = all(catalog, keys::BINDINGS)?;
        let keys: Vec<SigningKey> = all(catalog, keys::SIGNING_KEYS)?;
        let (public, _) = catalog.scan(keys::PUBLIC, None, usize::MAX, |key, _| {
            Ok(String::from_utf8_lossy(&key[keys::PUBLIC.len()..]).into_owned())
        })?;
        let policy = Policy::new(
            bindings.clone(),
            teams.iter().map(|t| (t.name.clone(), t.members.clone())),
            public.into_iter().collect::<BTreeSet<_>>(),
        );
        Ok(Self {
            generation,
            accounts: accounts.into_iter().map(|a| (a.name.clone(), a)).collect(),
            tokens: tokens.into_iter().map(|t| (t.id.clone(), t)).collect(),
            teams,
            bindings,
            keys,
            policy,
        })
    }

    /// The account behind `principal`, if it exists, is of that kind and is enabled.
    fn live_account(&self, principal: &str) -> Option<&Account> {
        let (kind, name) = principal.split_once(':')?;
        self.accounts
            .get(name)
            .filter(|a| a.kind.as_str() == kind && !a.disabled)
    }
}

/// Password verifications (argon2id) running at once, at most.
const MAX_HASHING: usize = 4;

/// Entries a bounded cache holds before it is cleared.
pub(crate) const MAX_CACHED: usize = 10_000;

/// Authentication and authorization of one node.
pub struct Auth {
    catalog: Catalog,
    pub config: AuthConfig,
    state: RwLock<Arc<AuthState>>,
    /// Digests of (account, password, stored hash) triples verified (a new password has a new
    /// hash, so an old entry never matches again).
    passwords: Mutex<std::collections::HashSet<[u8; 32]>>,
    limiter: Mutex<FailureLimiter>,
    /// Tokens used since the last flush, with the time (recorded as `last_used_ms`).
    used: Mutex<HashMap<String, i64>>,
    /// Signed tokens whose signature this node checked, with their claims, for the records'
    /// generation they were checked against (a key rotation empties it). A session or
    /// registry token is sent on every request: its HMAC and JSON are checked once.
    verified: Mutex<(u64, HashMap<String, Claims>)>,
    /// Password hashings running at once (see [`Auth::verify_password`]).
    hashing: tokio::sync::Semaphore,
    pub audit: audit::AuditSink,
}

impl Auth {
    pub fn new(catalog: Catalog, config: AuthConfig, audit: audit::AuditSink) -> Arc<Self> {
        let limiter = FailureLimiter {
            window: Duration::from_secs(config.failure_window_secs),
            max: config.max_failures,
            by_key: HashMap::new(),
        };
        Arc::new(Self {
            catalog,
            config,
            state: RwLock::new(Arc::new(AuthState {
                generation: u64::MAX,
                ..AuthState::default()
            })),
            passwords: Mutex::new(std::collections::HashSet::new()),
            verified: Mutex::new((0, HashMap::new())),
            limiter: Mutex::new(limiter),
            used: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(MAX_HASHING),
            audit,
        })
    }

    /// The current auth records (reloaded when an auth command was applied since).
    pub fn state(&self) -> crate::error::Result<Arc<AuthState>> {
        let generation = self.catalog.auth_generation();
        {
            let state = self.state.read();
            if state.generation == generation {
                return Ok(state.clone());
            }
        }
        let mut state = self.state.write();
        if state.generation != generation {
            *state = Arc::new(AuthState::load(&self.catalog, generation)?);
        }
        Ok(state.clone())
    }

    /// Authenticates a request's credentials (`Authorization: Basic|Bearer|<token>`,
    /// `X-NuGet-ApiKey`); no credential is the anonymous identity.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        source: Option<IpAddr>,
    ) -> Result<Identity, Denial> {
        let credential = Credential::from_headers(headers)?;
        let Some(credential) = credential else {
            return Ok(Identity::anonymous());
        };
        self.check_credential(&credential, source).await
    }

    /// Checks one credential, counting failures against the principal and the source address.
    pub async fn check_credential(
        &self,
        credential: &Credential,
        source: Option<IpAddr>,
    ) -> Result<Identity, Denial> {
        let now = Instant::now();
        let keys = limiter_keys(credential, source);
        let blocked = {
            let mut limiter = self.limiter.lock();
            keys.iter().find_map(|key| limiter.blocked(key, now))
        };
        if let Some(retry_after_secs) = blocked {
            // Past the limit, only what cannot be guessed goes on: tokens and signed tokens
            // (190 random bits, or an HMAC), and a password already verified. So one client
            // failing behind a shared address (NAT, a CI runner) does not lock out the rest,
            // and a password guesser gets no more guesses.
            let proven = match credential {
                Credential::Token(_) | Credential::Jwt(_) => true,
                Credential::Password { user, password } => self.known_password(user, password),
            };
            if !proven {
                return Err(Denial::RateLimited { retry_after_secs });
            }
        }
        let result = self.verify(credential).await;
        if let Err(denial) = &result {
            if denial.is_failed_login() {
                metrics::counter!("arca_auth_failures_total", "reason" => denial.reason())
                    .increment(1);
                let mut limiter = self.limiter.lock();
                for key in keys {
                    limiter.failed(key, now);
                }
            }
        }
        result
    }

    async fn verify(&self, credential: &Credential) -> Result<Identity, Denial> {
        let state = self.state().map_err(|e| {
            tracing::error!(error = %e, "load the auth records");
            Denial::BadCredential
        })?;
        match credential {
            Credential::Password { user, password } => {
                self.verify_password(&state, user, password).await
            }
            Credential::Token(token) => self.verify_token(&state, token),
            Credential::Jwt(jwt) => self
                .verify_jwt(&state, jwt, false)
                .map(|(identity, _)| identity),
        }
    }

    /// Verifies a password: a digest lookup when it was verified before, else argon2id on a
    /// blocking thread, at most [`MAX_HASHING`] at once (each takes 19 MiB and tens of
    /// milliseconds: unbounded, a burst of new logins would exhaust memory and the runtime).
    async fn verify_password(
        &self,
        state: &AuthState,
        user: &str,
        password: &str,
    ) -> Result<Identity, Denial> {
        let account = state.accounts.get(user).ok_or(Denial::BadCredential)?;
        let hash = account
            .password_hash
            .as_deref()
            .ok_or(Denial::BadCredential)?;
        let digest = password_digest(user, password, hash);
        let cached = self.passwords.lock().contains(&digest);
        if !cached {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|_| Denial::BadCredential)?;
            let (candidate, stored) = (password.to_string(), hash.to_string());
            let verified = tokio::task::spawn_blocking(move || {
                credentials::verify_password(&candidate, &stored)
            })
            .await
            .unwrap_or(false);
            if !verified {
                return Err(Denial::BadCredential);
            }
            let mut passwords = self.passwords.lock();
            if passwords.len() >= MAX_CACHED {
                passwords.clear();
            }
            passwords.insert(digest);
        }
        if account.disabled {
            return Err(Denial::Disabled);
        }
        Ok(Identity {
            principal: Some(account.principal()),
            token_id: None,
            method: "password",
            scopes: None,
            registry_access: None,
        })
    }

    /// Whether this exact password of `user` was verified before (and is still its password).
    fn known_password(&self, user: &str, password: &str) -> bool {
        let Ok(state) = self.state() else {
            return false;
        };
        let Some(hash) = state
            .accounts
            .get(user)
            .and_then(|a| a.password_hash.as_deref())
        else {
            return false;
        };
        self.passwords
            .lock()
            .contains(&password_digest(user, password, hash))
    }

    /// The token record `id` if it is usable now.
    fn live_token<'s>(&self, state: &'s AuthState, id: &str) -> Result<&'s TokenRecord, Denial> {
        let record = state.tokens.get(id).ok_or(Denial::BadCredential)?;
        if record.revoked_at_ms.is_some() {
            return Err(Denial::Revoked);
        }
        if record.expires_at_ms <= crate::metadata::model::now_ms() {
            return Err(Denial::Expired);
        }
        Ok(record)
    }

    fn verify_token(&self, state: &AuthState, token: &str) -> Result<Identity, Denial> {
        let id = credentials::token_id(token).ok_or(Denial::BadCredential)?;
        let record = state.tokens.get(id).ok_or(Denial::BadCredential)?;
        if !credentials::same_hash(&record.hash, &credentials::token_hash(token)) {
            return Err(Denial::BadCredential);
        }
        let record = self.live_token(state, id)?;
        let account = state.accounts.get(&record.owner).ok_or(Denial::Revoked)?;
        if account.disabled {
            return Err(Denial::Disabled);
        }
        self.note_used(id);
        Ok(Identity {
            principal: Some(account.principal()),
            token_id: Some(record.id.clone()),
            method: "token",
            scopes: Some(record.scopes.clone()),
            registry_access: None,
        })
    }

    /// The claims of a JWT whose signature holds under the current keys: from the cache of
    /// ones checked before while they are in force, else checked now (and cached).
    fn verified_claims(&self, state: &AuthState, jwt: &str) -> Result<Claims, Denial> {
        let now = crate::metadata::model::now_ms() / 1000;
        {
            let cache = self.verified.lock();
            if cache.0 == state.generation {
                if let Some(claims) = cache.1.get(jwt) {
                    if claims.exp > now && claims.nbf <= now + 60 {
                        return Ok(claims.clone());
                    }
                }
            }
        }
        let claims = credentials::verify(jwt, &state.keys).map_err(|e| match e {
            JwtError::Expired => Denial::Expired,
            JwtError::Malformed | JwtError::BadSignature => Denial::BadCredential,
        })?;
        let mut cache = self.verified.lock();
        if cache.0 != state.generation || cache.1.len() >= MAX_CACHED {
            *cache = (state.generation, HashMap::new());
        }
        cache.1.insert(jwt.to_string(), claims.clone());
        Ok(claims)
    }

    /// Verifies a JWT this cluster signed; refresh tokens only where `refresh` is allowed.
    fn verify_jwt(
        &self,
        state: &AuthState,
        jwt: &str,
        refresh: bool,
    ) -> Result<(Identity, Claims), Denial> {
        let claims = self.verified_claims(state, jwt)?;
        if (claims.kind == TokenKind::Refresh) != refresh {
            return Err(Denial::BadCredential);
        }
        let mut scopes = None;
        if let Some(tid) = &claims.tid {
            scopes = Some(self.live_token(state, tid)?.scopes.clone());
        }
        let principal = if claims.sub.is_empty() {
            None
        } else {
            Some(
                state
                    .live_account(&claims.sub)
                    .ok_or(Denial::Disabled)?
                    .principal(),
            )
        };
        let (method, registry_access) = match claims.kind {
            TokenKind::Registry => ("registry", Some(claims.access.clone())),
            TokenKind::Refresh | TokenKind::Session => ("session", None),
        };
        Ok((
            Identity {
                principal,
                token_id: claims.tid.clone(),
                method,
                scopes,
                registry_access,
            },
            claims,
        ))
    }

    /// The identity a registry refresh token stands for.
    pub fn check_refresh_token(
        &self,
        jwt: &str,
        source: Option<IpAddr>,
    ) -> Result<Identity, Denial> {
        let state = self.state().map_err(|_| Denial::BadCredential)?;
        let result = self
            .verify_jwt(&state, jwt, true)
            .map(|(identity, _)| identity);
        if let Err(denial) = &result {
            metrics::counter!("arca_auth_failures_total", "reason" => denial.reason()).increment(1);
            if let Some(ip) = source {
                self.limiter
                    .lock()
                    .failed(format!("ip:{ip}"), Instant::now());
            }
        }
        result
    }

    fn note_used(&self, id: &str) {
        let mut used = self.used.lock();
        if used.len() < MAX_CACHED || used.contains_key(id) {
            used.insert(id.to_string(), crate::metadata::model::now_ms());
        }
    }

    /// The tokens used since the last call, with when.
    pub fn take_used(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.used.lock()).into_iter().collect()
    }

    /// Whether `identity` may do `action` on `repo`: the repository allows anonymous reads,
    /// or the principal's roles allow it and the token's scopes include it.
    pub fn allows(&self, identity: &Identity, repo: &str, action: Action) -> bool {
        let Ok(state) = self.state() else {
            return false;
        };
        if action == Action::Read && state.policy.anonymous_read(repo) {
            return true;
        }
        let Some(principal) = &identity.principal else {
            return false;
        };
        state.policy.role_allows(principal, repo, action)
            && policy::scopes_allow(identity.scopes.as_deref(), repo, action)
    }

    pub fn is_cluster_admin(&self, identity: &Identity) -> bool {
        let Some(principal) = &identity.principal else {
            return false;
        };
        self.state()
            .is_ok_and(|state| state.policy.is_cluster_admin(principal))
            && policy::scopes_allow_cluster(identity.scopes.as_deref())
            && identity.registry_access.is_none()
    }

    fn signing_key(&self) -> crate::error::Result<SigningKey> {
        self.state()?
            .keys
            .last()
            .cloned()
            .ok_or_else(|| crate::error::Error::NotReady {
                reason: "no signing key yet: the cluster has not been bootstrapped".into(),
            })
    }

    fn sign(
        &self,
        identity: &Identity,
        kind: TokenKind,
        lifetime: Duration,
        access: Vec<AccessEntry>,
    ) -> crate::error::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: credentials::ISSUER.into(),
            sub: identity.principal.clone().unwrap_or_default(),
            aud: credentials::SERVICE.into(),
            exp: now + lifetime.as_secs() as i64,
            nbf: now - 1,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            kind,
            access,
            tid: identity.token_id.clone(),
        };
        credentials::sign(&self.signing_key()?, &claims)
            .map_err(|e| crate::error::Error::internal("sign a token", e))
    }

    /// A registry bearer token granting, of each requested scope, the actions `identity` holds
    /// (possibly none: the token endpoint never refuses for missing permissions).
    pub fn registry_token(
        &self,
        identity: &Identity,
        requested: &[RegistryScope],
    ) -> crate::error::Result<(String, Vec<AccessEntry>)> {
        let mut access = Vec::new();
        for scope in requested.iter().take(MAX_REQUESTED_SCOPES) {
            let actions: Vec<String> = match scope.kind.as_str() {
                "repository" => {
                    let repo = scope.name.split('/').next().unwrap_or_default();
                    scope
                        .actions
                        .iter()
                        .filter(|a| {
                            registry_action(a)
                                .is_some_and(|action| self.allows(identity, repo, action))
                        })
                        .cloned()
                        .collect()
                }
                "registry" if scope.name == "catalog" && identity.principal.is_some() => {
                    scope.actions.clone()
                }
                _ => Vec::new(),
            };
            access.push(AccessEntry {
                kind: scope.kind.clone(),
                name: scope.name.clone(),
                actions,
            });
        }
        let lifetime = Duration::from_secs(self.config.registry_token_secs);
        Ok((
            self.sign(identity, TokenKind::Registry, lifetime, access.clone())?,
            access,
        ))
    }

    pub fn refresh_token(&self, identity: &Identity) -> crate::error::Result<String> {
        let lifetime = Duration::from_secs(self.config.refresh_token_days * 86_400);
        self.sign(identity, TokenKind::Refresh, lifetime, Vec::new())
    }

    pub fn session_token(&self, identity: &Identity) -> crate::error::Result<String> {
        let lifetime = Duration::from_secs(self.config.session_secs);
        self.sign(identity, TokenKind::Session, lifetime, Vec::new())
    }
}

/// Most scopes one registry token request may ask for.
const MAX_REQUESTED_SCOPES: usize = 32;

/// The cache key of a verified password (never the password itself).
fn password_digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(user.as_bytes());
    hasher.update(&[0]);
    hasher.update(password.as_bytes());
    hasher.update(&[0]);
    hasher.update(hash.as_bytes());
    *hasher.finalize().as_bytes()
}
