//! Applying [`AuthCommand`]s inside Raft's apply loop, through the format seam: the auth
//! records live in their own key range (`auth/`), travel in the change log like every other
//! command (so mirror regions hold the same accounts, tokens and audit chain), and a mirror
//! refuses them like any client write.

use super::keys;
use super::model::{
    chain_hash, genesis_hash, AccountKind, AuditCommand, AuditHead, AuditRecord, AuthCommand,
    AuthOp, AuthOutcome, Binding, TokenRecord, AUDIT_NAME, NAME,
};
use crate::metadata::format::{decode_payload, FormatApply, FormatName, FormatOutcome, FormatTxn};
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// Limits the state machine enforces, so no client can grow the auth records without bound.
pub const MAX_TOKENS_PER_ACCOUNT: usize = 1000;
pub const MAX_BINDINGS: usize = 10_000;
pub const MAX_TEAM_MEMBERS: usize = 1000;
pub const MAX_AUDIT_EVENTS_PER_COMMAND: usize = 2000;
/// Signing keys kept for verification (the active one and the one before it).
pub const KEPT_SIGNING_KEYS: usize = 2;

/// The auth commands' side of the format seam (not a repository format: it hosts no
/// repositories).
pub struct AuthApply;

impl FormatApply for AuthApply {
    fn name(&self) -> FormatName {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn key_prefixes(&self) -> &'static [&'static [u8]] {
        &[keys::PREFIX]
    }

    fn hosts_repositories(&self) -> bool {
        false
    }

    fn holds_credentials(&self) -> bool {
        true
    }

    fn apply(
        &self,
        txn: &mut FormatTxn<'_, '_, '_>,
        _version: u32,
        payload: &[u8],
    ) -> anyhow::Result<FormatOutcome> {
        let command: AuthCommand = decode_payload(payload)?;
        let outcome = apply(txn, &command)?;
        let changed = outcome.changed();
        FormatOutcome::encode(&outcome, changed)
    }

    fn blobs(&self, _version: u32, _payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(Vec::new())
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<AuthCommand>(payload)?.at_ms)
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload::<AuthCommand>(payload) {
            Ok(command) => describe(&command.op),
            Err(e) => format!("an auth command that does not decode: {e}"),
        }
    }
}

/// One line naming what a command does, with no secret in it.
fn describe(op: &AuthOp) -> String {
    match op {
        AuthOp::Bootstrap { admin, .. } => format!("bootstrap account {}", admin.name),
        AuthOp::CreateAccount { account } => format!("create {}", account.principal()),
        AuthOp::SetPassword { name, .. } => format!("set the password of {name}"),
        AuthOp::DeleteAccount { name } => format!("delete account {name}"),
        AuthOp::PutTeam { team } => format!("set team {}", team.name),
        AuthOp::DeleteTeam { name } => format!("delete team {name}"),
        AuthOp::CreateToken { token } => format!("create token {} for {}", token.id, token.owner),
        AuthOp::RevokeToken { id } => format!("revoke token {id}"),
        AuthOp::Grant { binding } => format!(
            "grant {} on {} to {}",
            binding.role.as_str(),
            binding.pattern,
            binding.principal
        ),
        AuthOp::RevokeRole {
            principal,
            pattern,
            role,
        } => format!("revoke {} on {pattern} from {principal}", role.as_str()),
        AuthOp::RotateSigningKey { key } => format!("rotate the signing key to {}", key.kid),
        AuthOp::SetAnonymousRead {
            repo,
            anonymous_read,
        } => format!("set anonymous read of {repo} to {anonymous_read}"),
        AuthOp::TouchTokens { used } => format!("record the use of {} tokens", used.len()),
    }
}

fn invalid(reason: impl Into<String>) -> AuthOutcome {
    AuthOutcome::Invalid {
        reason: reason.into(),
    }
}

fn apply(txn: &mut FormatTxn<'_, '_, '_>, command: &AuthCommand) -> anyhow::Result<AuthOutcome> {
    Ok(match &command.op {
        AuthOp::Bootstrap { admin, key } => {
            if !txn.keys_with_prefix(keys::ACCOUNTS)?.is_empty() {
                return Ok(AuthOutcome::Exists);
            }
            txn.put(keys::account(&admin.name), admin)?;
            let binding = Binding {
                principal: admin.principal(),
                pattern: "*".into(),
                role: super::model::Role::ClusterAdmin,
                created_at_ms: command.at_ms,
            };
            txn.put(keys::binding(&binding), &binding)?;
            txn.put(keys::signing_key(key), key)?;
            AuthOutcome::Done
        }
        AuthOp::CreateAccount { account } => {
            if let Err(reason) = super::model::check_name("account", &account.name) {
                return Ok(invalid(reason));
            }
            if account.kind == AccountKind::Service && account.password_hash.is_some() {
                return Ok(invalid("a service account has no password; give it tokens"));
            }
            let key = keys::account(&account.name);
            if txn.get_raw(&key)?.is_some() {
                return Ok(AuthOutcome::Exists);
            }
            txn.put(key, account)?;
            AuthOutcome::Done
        }
        AuthOp::SetPassword {
            name,
            password_hash,
        } => {
            let key = keys::account(name);
            let Some(mut account) = txn.get::<super::model::Account>(&key)? else {
                return Ok(AuthOutcome::NotFound);
            };
            if account.kind == AccountKind::Service {
                return Ok(invalid("a service account has no password; give it tokens"));
            }
            account.password_hash = Some(password_hash.clone());
            txn.put(key, &account)?;
            AuthOutcome::Done
        }
        AuthOp::DeleteAccount { name } => {
            let key = keys::account(name);
            let Some(account) = txn.get::<super::model::Account>(&key)? else {
                return Ok(AuthOutcome::NotFound);
            };
            txn.delete(key)?;
            for token_key in txn.keys_with_prefix(keys::TOKENS)? {
                if let Some(token) = txn.get::<TokenRecord>(&token_key)? {
                    if token.owner == *name {
                        txn.delete(token_key)?;
                    }
                }
            }
            let principal = account.principal();
            for binding_key in txn.keys_with_prefix(&keys::bindings_of(&principal))? {
                txn.delete(binding_key)?;
            }
            AuthOutcome::Done
        }
        AuthOp::PutTeam { team } => {
            if let Err(reason) = super::model::check_name("team", &team.name) {
                return Ok(invalid(reason));
            }
            if team.members.len() > MAX_TEAM_MEMBERS {
                return Ok(invalid(format!(
                    "a team has at most {MAX_TEAM_MEMBERS} members"
                )));
            }
            for member in &team.members {
                if txn.get_raw(&keys::account(member))?.is_none() {
                    return Ok(invalid(format!("no account {member}")));
                }
            }
            txn.put(keys::team(&team.name), team)?;
            AuthOutcome::Done
        }
        AuthOp::DeleteTeam { name } => {
            let key = keys::team(name);
            if txn.get_raw(&key)?.is_none() {
                return Ok(AuthOutcome::NotFound);
            }
            txn.delete(key)?;
            for binding_key in txn.keys_with_prefix(&keys::bindings_of(&format!("team:{name}")))? {
                txn.delete(binding_key)?;
            }
            AuthOutcome::Done
        }
        AuthOp::CreateToken { token } => {
            if txn.get_raw(&keys::account(&token.owner))?.is_none() {
                return Ok(AuthOutcome::NotFound);
            }
            let key = keys::token(&token.id);
            if txn.get_raw(&key)?.is_some() {
                return Ok(AuthOutcome::Exists);
            }
            let mut owned = 0;
            for token_key in txn.keys_with_prefix(keys::TOKENS)? {
                if let Some(existing) = txn.get::<TokenRecord>(&token_key)? {
                    if existing.owner == token.owner && existing.revoked_at_ms.is_none() {
                        owned += 1;
                    }
                }
            }
            if owned >= MAX_TOKENS_PER_ACCOUNT {
                return Ok(invalid(format!(
                    "{} holds {MAX_TOKENS_PER_ACCOUNT} tokens; revoke some first",
                    token.owner
                )));
            }
            txn.put(key, token)?;
            AuthOutcome::Done
        }
        AuthOp::RevokeToken { id } => {
            let key = keys::token(id);
            let Some(mut token) = txn.get::<TokenRecord>(&key)? else {
                return Ok(AuthOutcome::NotFound);
            };
            if token.revoked_at_ms.is_some() {
                return Ok(AuthOutcome::Unchanged);
            }
            token.revoked_at_ms = Some(command.at_ms);
            txn.put(key, &token)?;
            AuthOutcome::Done
        }
        AuthOp::Grant { binding } => {
            if let Err(reason) = super::policy::check_pattern(&binding.pattern) {
                return Ok(invalid(reason));
            }
            if !principal_exists(txn, &binding.principal)? {
                return Ok(AuthOutcome::NotFound);
            }
            let key = keys::binding(binding);
            if txn.get_raw(&key)?.is_some() {
                return Ok(AuthOutcome::Unchanged);
            }
            if txn.keys_with_prefix(keys::BINDINGS)?.len() >= MAX_BINDINGS {
                return Ok(invalid(format!("at most {MAX_BINDINGS} role bindings")));
            }
            txn.put(key, binding)?;
            AuthOutcome::Done
        }
        AuthOp::RevokeRole {
            principal,
            pattern,
            role,
        } => {
            let key = keys::binding(&Binding {
                principal: principal.clone(),
                pattern: pattern.clone(),
                role: *role,
                created_at_ms: 0,
            });
            if txn.get_raw(&key)?.is_none() {
                return Ok(AuthOutcome::NotFound);
            }
            txn.delete(key)?;
            AuthOutcome::Done
        }
        AuthOp::RotateSigningKey { key } => {
            let mut existing = txn.keys_with_prefix(keys::SIGNING_KEYS)?;
            existing.sort();
            // Keep the newest KEPT_SIGNING_KEYS - 1 besides the new one.
            let drop = existing.len().saturating_sub(KEPT_SIGNING_KEYS - 1);
            for old in existing.into_iter().take(drop) {
                txn.delete(old)?;
            }
            txn.put(keys::signing_key(key), key)?;
            AuthOutcome::Done
        }
        AuthOp::SetAnonymousRead {
            repo,
            anonymous_read,
        } => {
            let Ok(name) = RepoName::parse(repo) else {
                return Ok(invalid(format!("invalid repository name {repo:?}")));
            };
            if txn.repo(&name)?.is_none() {
                return Ok(AuthOutcome::NotFound);
            }
            let key = keys::public(repo);
            let was = txn.get_raw(&key)?.is_some();
            if was == *anonymous_read {
                return Ok(AuthOutcome::Unchanged);
            }
            if *anonymous_read {
                txn.put(key, &true)?;
            } else {
                txn.delete(key)?;
            }
            AuthOutcome::Done
        }
        AuthOp::TouchTokens { used } => {
            let mut changed = false;
            for (id, at) in used.iter().take(MAX_AUDIT_EVENTS_PER_COMMAND) {
                let key = keys::token(id);
                if let Some(mut token) = txn.get::<TokenRecord>(&key)? {
                    if token.last_used_ms.is_none_or(|last| last < *at) {
                        token.last_used_ms = Some(*at);
                        txn.put(key, &token)?;
                        changed = true;
                    }
                }
            }
            if changed {
                AuthOutcome::Done
            } else {
                AuthOutcome::Unchanged
            }
        }
    })
}

fn principal_exists(txn: &FormatTxn<'_, '_, '_>, principal: &str) -> anyhow::Result<bool> {
    let Some((kind, name)) = principal.split_once(':') else {
        return Ok(false);
    };
    Ok(match kind {
        "user" | "service" => txn
            .get::<super::model::Account>(&keys::account(name))?
            .is_some_and(|account| account.kind.as_str() == kind),
        "team" => txn.get_raw(&keys::team(name))?.is_some(),
        _ => false,
    })
}

/// The audit log's side of the format seam: appending is the state machine's job, so every
/// node of every region computes the same chain.
pub struct AuditApply;

impl FormatApply for AuditApply {
    fn name(&self) -> FormatName {
        AUDIT_NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn key_prefixes(&self) -> &'static [&'static [u8]] {
        &[keys::AUDIT_PREFIX]
    }

    fn hosts_repositories(&self) -> bool {
        false
    }

    fn apply(
        &self,
        txn: &mut FormatTxn<'_, '_, '_>,
        _version: u32,
        payload: &[u8],
    ) -> anyhow::Result<FormatOutcome> {
        let command: AuditCommand = decode_payload(payload)?;
        let outcome = match &command {
            AuditCommand::Append { events, .. } => append(txn, events)?,
            AuditCommand::Prune { before_ms, max, .. } => prune(txn, *before_ms, *max)?,
        };
        let changed = outcome.changed();
        FormatOutcome::encode(&outcome, changed)
    }

    fn blobs(&self, _version: u32, _payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(Vec::new())
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(match decode_payload::<AuditCommand>(payload)? {
            AuditCommand::Append { at_ms, .. } | AuditCommand::Prune { at_ms, .. } => at_ms,
        })
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload::<AuditCommand>(payload) {
            Ok(AuditCommand::Append { events, .. }) => {
                format!("append {} audit records", events.len())
            }
            Ok(AuditCommand::Prune { before_ms, .. }) => {
                format!("drop audit records before {before_ms}")
            }
            Err(e) => format!("an audit command that does not decode: {e}"),
        }
    }
}

fn append(
    txn: &mut FormatTxn<'_, '_, '_>,
    events: &[super::model::AuditEvent],
) -> anyhow::Result<AuthOutcome> {
    if events.is_empty() {
        return Ok(AuthOutcome::Unchanged);
    }
    if events.len() > MAX_AUDIT_EVENTS_PER_COMMAND {
        return Ok(invalid(format!(
            "at most {MAX_AUDIT_EVENTS_PER_COMMAND} audit events per command"
        )));
    }
    let mut head: AuditHead = txn.get(keys::AUDIT_HEAD)?.unwrap_or_else(|| AuditHead {
        anchor_hash: genesis_hash(),
        last_hash: genesis_hash(),
        first_seq: 1,
        last_seq: 0,
    });
    let first_seq = head.last_seq + 1;
    // Events a node reports are numbered in order: what is not past the last one recorded
    // from that node process was recorded by an earlier proposal of the same batch.
    let mut seen: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for event in events {
        if !event.origin.is_empty() {
            let last = match seen.get(&event.origin) {
                Some(last) => *last,
                None => txn
                    .get::<u64>(&keys::audit_origin(&event.origin))?
                    .unwrap_or(0),
            };
            if event.number <= last {
                continue;
            }
            seen.insert(event.origin.clone(), event.number);
        }
        let seq = head.last_seq + 1;
        let hash = chain_hash(&head.last_hash, seq, event);
        let record = AuditRecord {
            seq,
            event: event.clone(),
            prev: std::mem::replace(&mut head.last_hash, hash.clone()),
            hash,
        };
        txn.put(keys::audit(seq), &record)?;
        head.last_seq = seq;
    }
    for (origin, number) in &seen {
        txn.put(keys::audit_origin(origin), number)?;
    }
    if head.last_seq < first_seq {
        return Ok(AuthOutcome::Unchanged);
    }
    txn.put(keys::AUDIT_HEAD.to_vec(), &head)?;
    Ok(AuthOutcome::Audited {
        first_seq,
        last_seq: head.last_seq,
    })
}

fn prune(txn: &mut FormatTxn<'_, '_, '_>, before_ms: i64, max: u32) -> anyhow::Result<AuthOutcome> {
    let Some(mut head) = txn.get::<AuditHead>(keys::AUDIT_HEAD)? else {
        return Ok(AuthOutcome::Unchanged);
    };
    let mut dropped = 0u32;
    // The newest record is always kept, so the chain's head stays verifiable.
    while dropped < max && head.first_seq < head.last_seq {
        let key = keys::audit(head.first_seq);
        let Some(record) = txn.get::<AuditRecord>(&key)? else {
            break;
        };
        if record.event.at_ms >= before_ms {
            break;
        }
        txn.delete(key)?;
        head.anchor_hash = record.hash;
        head.first_seq += 1;
        dropped += 1;
    }
    if dropped == 0 {
        return Ok(AuthOutcome::Unchanged);
    }
    txn.put(keys::AUDIT_HEAD.to_vec(), &head)?;
    Ok(AuthOutcome::Done)
}
