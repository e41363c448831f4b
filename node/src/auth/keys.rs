//! The auth records' keys in the state machine: one range, `auth/`.

use super::model::{Binding, SigningKey};

pub const PREFIX: &[u8] = b"auth/";
pub const ACCOUNTS: &[u8] = b"auth/a/";
pub const TOKENS: &[u8] = b"auth/t/";
pub const TEAMS: &[u8] = b"auth/g/";
pub const BINDINGS: &[u8] = b"auth/b/";
pub const SIGNING_KEYS: &[u8] = b"auth/k/";
pub const PUBLIC: &[u8] = b"auth/p/";
/// The audit log's own range (see [`super::apply::AuditApply`]).
pub const AUDIT_PREFIX: &[u8] = b"audit/";
pub const AUDIT: &[u8] = b"audit/r/";
pub const AUDIT_HEAD: &[u8] = b"audit/head";

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

pub fn account(name: &str) -> Vec<u8> {
    join(ACCOUNTS, &[name.as_bytes()])
}

pub fn token(id: &str) -> Vec<u8> {
    join(TOKENS, &[id.as_bytes()])
}

pub fn team(name: &str) -> Vec<u8> {
    join(TEAMS, &[name.as_bytes()])
}

/// Every binding of `principal` starts with this.
pub fn bindings_of(principal: &str) -> Vec<u8> {
    let mut key = join(BINDINGS, &[principal.as_bytes()]);
    key.push(0);
    key
}

pub fn binding(binding: &Binding) -> Vec<u8> {
    join(
        BINDINGS,
        &[
            binding.principal.as_bytes(),
            binding.pattern.as_bytes(),
            binding.role.as_str().as_bytes(),
        ],
    )
}

/// Ordered by creation time: the last one signs.
pub fn signing_key(key: &SigningKey) -> Vec<u8> {
    let mut out = SIGNING_KEYS.to_vec();
    out.extend_from_slice(&key.created_at_ms.to_be_bytes());
    out.extend_from_slice(key.kid.as_bytes());
    out
}

pub fn public(repo: &str) -> Vec<u8> {
    join(PUBLIC, &[repo.as_bytes()])
}

pub fn audit(seq: u64) -> Vec<u8> {
    let mut key = AUDIT.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The number of the last event recorded from one node process (`origin`).
pub fn audit_origin(origin: &str) -> Vec<u8> {
    let mut key = b"audit/o/".to_vec();
    key.extend_from_slice(origin.as_bytes());
    key
}
