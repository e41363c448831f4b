//! Issuing and revoking access tokens through Raft: the token API (`POST /api/v1/tokens`) and
//! the formats whose clients log in with a password and keep a token (npm) use the same rules.

use super::credentials;
use super::model::{AuthCommand, AuthOp, AuthOutcome, Scope, TokenRecord};
use crate::config::AuthConfig;
use crate::error::{Error, Result};
use crate::metadata::model::now_ms;
use crate::service::ArtifactService;

/// Most bytes of a token's description.
pub const MAX_DESCRIPTION: usize = 200;

/// A token just created: the secret is only ever in this value (the state keeps its hash).
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub record: TokenRecord,
}

/// Proposes an auth command; refusals become errors naming `what`.
pub async fn propose(service: &ArtifactService, op: AuthOp, what: &str) -> Result<()> {
    let command = AuthCommand {
        at_ms: now_ms(),
        op,
    };
    match service.propose_format(&command, None).await? {
        AuthOutcome::Done | AuthOutcome::Unchanged | AuthOutcome::Audited { .. } => Ok(()),
        AuthOutcome::Exists => Err(Error::AlreadyExists { what: what.into() }),
        AuthOutcome::NotFound => Err(Error::NoSuch { what: what.into() }),
        AuthOutcome::Invalid { reason } => Err(Error::InvalidRequest { message: reason }),
    }
}

/// Creates a token for `owner` valid for `days` (the configured default when `None`).
pub async fn issue(
    service: &ArtifactService,
    config: &AuthConfig,
    owner: &str,
    scopes: Vec<Scope>,
    days: Option<u64>,
    description: String,
) -> Result<Issued> {
    let days = days.unwrap_or(config.token_default_days);
    if days == 0 || days > config.token_max_days {
        return Err(Error::InvalidRequest {
            message: format!(
                "expires_in_days must be 1 to {} (the configured maximum)",
                config.token_max_days
            ),
        });
    }
    if description.len() > MAX_DESCRIPTION {
        return Err(Error::InvalidRequest {
            message: format!("a description has at most {MAX_DESCRIPTION} bytes"),
        });
    }
    let (id, token) = credentials::new_token();
    let at = now_ms();
    let record = TokenRecord {
        id,
        owner: owner.to_string(),
        hash: credentials::token_hash(&token),
        scopes,
        description,
        created_at_ms: at,
        expires_at_ms: at + (days as i64) * 86_400_000,
        revoked_at_ms: None,
        last_used_ms: None,
    };
    propose(
        service,
        AuthOp::CreateToken {
            token: record.clone(),
        },
        &format!("account {owner}"),
    )
    .await?;
    Ok(Issued { token, record })
}

/// Revokes token `id` on every node of every region (within the replication lag).
pub async fn revoke(service: &ArtifactService, id: &str) -> Result<()> {
    propose(
        service,
        AuthOp::RevokeToken { id: id.to_string() },
        &format!("token {id}"),
    )
    .await
}
