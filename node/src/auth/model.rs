//! Identities, credentials, role bindings and audit records, as the replicated state machine
//! stores them, and the commands that change them.
//!
//! Secrets are stored only as hashes: argon2id for passwords (PHC strings), blake3 for access
//! tokens (they carry 190 random bits, so a fast hash is enough). Registry and session tokens
//! are JWTs signed with a key held here (HS256: every node can verify without a call home, and
//! every node holding the state could sign anyway).

use serde::{Deserialize, Serialize};

use crate::metadata::format::FormatName;

/// The name the auth commands travel under in the format envelope.
pub const NAME: FormatName = FormatName::new("auth");

/// What a request needs on a repository; the roles below grant sets of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Read,
    Write,
    Delete,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }
}

/// A role bound to a principal on a repository pattern (or, `cluster-admin`, everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Pull.
    Read,
    /// Push; includes read.
    Write,
    /// Delete; includes read.
    Delete,
    /// Repository settings; includes read, write and delete.
    Admin,
    /// Membership, promotion, GC, users, roles and the audit log; every repository.
    ClusterAdmin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "read" => Role::Read,
            "write" => Role::Write,
            "delete" => Role::Delete,
            "admin" => Role::Admin,
            "cluster-admin" => Role::ClusterAdmin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Delete => "delete",
            Role::Admin => "admin",
            Role::ClusterAdmin => "cluster-admin",
        }
    }

    /// Whether this role allows `action`.
    pub fn grants(self, action: Action) -> bool {
        match self {
            Role::Read => action == Action::Read,
            Role::Write => matches!(action, Action::Read | Action::Write),
            Role::Delete => matches!(action, Action::Read | Action::Delete),
            Role::Admin | Role::ClusterAdmin => true,
        }
    }
}

/// A user (signs in with a password, may hold tokens) or a service account (tokens only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountKind {
    User,
    Service,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Service => "service",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    /// argon2id PHC string; never set for a service account.
    #[serde(default)]
    pub password_hash: Option<String>,
    pub created_at_ms: i64,
    #[serde(default)]
    pub disabled: bool,
}

impl Account {
    /// The principal string role bindings name it by (`user:alice`, `service:ci`).
    pub fn principal(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.name)
    }
}

/// A team: role bindings on `team:<name>` apply to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub name: String,
    pub members: Vec<String>,
    pub created_at_ms: i64,
}

/// What an access token may do: `pattern:role` (`builds/**:write`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub pattern: String,
    pub role: Role,
}

impl Scope {
    /// Parses `pattern:role`; the role is after the last `:`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        let (pattern, role) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("scope {text:?} is not PATTERN:ROLE"))?;
        let role = Role::parse(role).ok_or_else(|| {
            format!("scope {text:?}: role must be read, write, delete, admin or cluster-admin")
        })?;
        check_pattern(pattern)?;
        Ok(Scope {
            pattern: pattern.to_string(),
            role,
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.pattern, self.role.as_str())
    }
}

/// An access token: `arca_<id>_<secret>`; only the blake3 hash of the whole token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// The account the token acts as.
    pub owner: String,
    /// blake3 of the whole token, hex.
    pub hash: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub description: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
    #[serde(default)]
    pub last_used_ms: Option<i64>,
}

/// A role bound to a principal (`user:alice`, `service:ci`, `team:dev`) on a repository
/// pattern (`builds`, `builds/**`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub principal: String,
    pub pattern: String,
    pub role: Role,
    pub created_at_ms: i64,
}

/// A key registry and session tokens are signed with (HS256). The newest active key signs;
/// every kept key verifies, so a rotation does not cut off tokens already issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub secret: serde_bytes::ByteBuf,
    pub created_at_ms: i64,
}

/// One audited event, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: i64,
    /// `user:alice`, `service:ci`, or `anonymous`.
    pub principal: String,
    #[serde(default)]
    pub token_id: Option<String>,
    /// The client's address.
    pub source: String,
    pub region: String,
    pub node: u64,
    /// `login`, `token.create`, `role.grant`, `POST /files`, `denied`, …
    pub action: String,
    /// The path, repository or object the action was on.
    pub resource: String,
    /// The repository, when the action was on one.
    #[serde(default)]
    pub repo: Option<String>,
    /// `ok`, `denied:<reason>`, `error:<status>`.
    pub outcome: String,
    pub request_id: String,
    /// Denials within one second for the same principal, source and reason are one record.
    #[serde(default = "one")]
    pub count: u32,
    /// Which node process reported it (a random id per start) and its number there: a batch
    /// proposed again after an answer was lost is recorded once.
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub number: u64,
}

fn one() -> u32 {
    1
}

/// An audit record: an event with its place in the chain. `hash` is blake3 over `prev` and
/// the event's canonical encoding, so changing any byte of any record, or dropping one from the
/// middle, breaks every later link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub event: AuditEvent,
    pub prev: String,
    pub hash: String,
}

/// The chain's ends: the last record, and the link the oldest kept record must follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub last_seq: u64,
    pub last_hash: String,
    /// The `prev` of the oldest kept record (all zeros until retention drops records).
    pub anchor_hash: String,
    /// The seq of the oldest kept record (1 until retention drops records).
    pub first_seq: u64,
}

/// The all-zero hash the first record follows.
pub fn genesis_hash() -> String {
    "0".repeat(64)
}

/// The hash of a record following `prev`.
pub fn chain_hash(prev: &str, seq: u64, event: &AuditEvent) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev.as_bytes());
    hasher.update(&seq.to_be_bytes());
    // Named MessagePack of a plain struct: deterministic field order and encoding.
    hasher.update(&rmp_serde::to_vec_named(event).unwrap_or_default());
    hasher.finalize().to_hex().to_string()
}

/// A change to identities, credentials, roles or the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCommand {
    pub at_ms: i64,
    pub op: AuthOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// The first start of a cluster without accounts: `admin` (cluster-admin) and the first
    /// signing key. Refused once any account exists.
    Bootstrap {
        admin: Account,
        key: SigningKey,
    },
    CreateAccount {
        account: Account,
    },
    SetPassword {
        name: String,
        password_hash: String,
    },
    /// Removes the account, its tokens and its role bindings.
    DeleteAccount {
        name: String,
    },
    PutTeam {
        team: Team,
    },
    DeleteTeam {
        name: String,
    },
    CreateToken {
        token: TokenRecord,
    },
    RevokeToken {
        id: String,
    },
    Grant {
        binding: Binding,
    },
    RevokeRole {
        principal: String,
        pattern: String,
        role: Role,
    },
    /// Adds a signing key that signs from now on; keys older than the previous one are
    /// dropped (tokens they signed have expired by then).
    RotateSigningKey {
        key: SigningKey,
    },
    SetAnonymousRead {
        repo: String,
        anonymous_read: bool,
    },
    /// Records when tokens were last used (batched, at most once a minute per node).
    TouchTokens {
        used: Vec<(String, i64)>,
    },
}

/// The name the audit commands travel under (their own key range, `audit/`, so appending
/// audit records never invalidates the in-memory credential state).
pub const AUDIT_NAME: FormatName = FormatName::new("audit");

/// A change to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditCommand {
    /// Appends events to the chain.
    Append { at_ms: i64, events: Vec<AuditEvent> },
    /// Drops records older than `before_ms`, at most `max` of them.
    Prune {
        at_ms: i64,
        before_ms: i64,
        max: u32,
    },
}

/// What applying an [`AuthCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOutcome {
    Done,
    Unchanged,
    Exists,
    NotFound,
    /// The command does not fit (a service account with a password, a team naming an account
    /// that does not exist, a limit).
    Invalid {
        reason: String,
    },
    Audited {
        first_seq: u64,
        last_seq: u64,
    },
}

impl AuthOutcome {
    pub fn changed(&self) -> bool {
        matches!(self, AuthOutcome::Done | AuthOutcome::Audited { .. })
    }
}

/// Account, team and repository names: plain `[a-z0-9._-]`, 1–64 characters, starting with a
/// letter or digit (no `$`, which breaks shells and CI variables).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {:?}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// Longest repository pattern.
const MAX_PATTERN: usize = 200;

/// Checks a repository pattern: repository-name characters, `*` (any characters but `/`) and
/// `**` (anything); `builds/**` also matches `builds` itself.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let ok = !pattern.is_empty()
        && pattern.len() <= MAX_PATTERN
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid repository pattern {:?}: use repository-name characters, / and * or **",
            pattern.chars().take(80).collect::<String>()
        ))
    }
}
