//! The first account: a cluster without accounts (a new one, or one upgraded from a build
//! without authentication) gets `admin`, with the `cluster-admin` role and a random password
//! written to `<data-dir>/initial-admin-password` (mode 0600) on the node that created it,
//! and the first signing key. There is no default password anywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::credentials;
use super::model::{Account, AccountKind, AuthCommand, AuthOp, AuthOutcome};
use crate::metadata::model::{now_ms, RegionRole};
use crate::service::ArtifactService;

pub const PASSWORD_FILE: &str = "initial-admin-password";
pub const ADMIN: &str = "admin";

/// Where the bootstrap password of a data directory is written.
pub fn password_file(data_dir: &Path) -> PathBuf {
    data_dir.join(PASSWORD_FILE)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Creates `admin` if the cluster has no account, this node leads a primary region. Returns
/// whether the cluster has accounts now.
pub async fn bootstrap_once(service: &ArtifactService, auth: &super::Auth) -> anyhow::Result<bool> {
    if !auth.state()?.accounts.is_empty() {
        return Ok(true);
    }
    let leader = service.region.raft.raft().metrics().borrow().current_leader;
    let mirror = matches!(service.geo.role(), RegionRole::Mirror { .. });
    // A primary that has not yet heard from its peer regions takes no client write; a new
    // one (nothing in its change log, so no history to diverge from) may still create its
    // first account, so it can be signed in to while it waits.
    let fenced = !service.geo.write_gate_open() && service.catalog.changelog_head()?.last_seq > 0;
    if leader != Some(service.region.node_id) || mirror || fenced {
        // A mirror receives its primary's accounts; another node's leader bootstraps.
        return Ok(false);
    }
    let data_dir = &service.config.data_dir;
    let final_path = password_file(data_dir);
    let pending = data_dir.join(format!("{PASSWORD_FILE}.pending"));
    let password = credentials::new_password();
    // The file exists before the account does: a crash in between leaves a pending file and
    // no account, and the next attempt starts over.
    write_private(&pending, &format!("{password}\n"))?;
    let at_ms = now_ms();
    let command = AuthCommand {
        at_ms,
        op: AuthOp::Bootstrap {
            admin: Account {
                name: ADMIN.into(),
                kind: AccountKind::User,
                password_hash: Some(credentials::hash_password(&password)?),
                created_at_ms: at_ms,
                disabled: false,
            },
            key: credentials::new_signing_key(at_ms),
        },
    };
    let outcome = service.propose_format(&command, None).await;
    match outcome {
        Ok(AuthOutcome::Done) => {
            std::fs::rename(&pending, &final_path)
                .with_context(|| format!("rename to {}", final_path.display()))?;
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            tracing::warn!(
                user = ADMIN,
                password_file = %final_path.display(),
                "created the first account: sign in as admin with the password in this file (mode 0600), then create your own accounts and delete the file"
            );
            Ok(true)
        }
        Ok(_) => {
            let _ = std::fs::remove_file(&pending);
            Ok(true)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&pending);
            Err(e.into())
        }
    }
}

/// Retries [`bootstrap_once`] until the cluster has an account (a node that becomes the
/// leader of an upgraded region without accounts bootstraps it).
pub async fn run(service: Arc<ArtifactService>, auth: Arc<super::Auth>, cancel: CancellationToken) {
    loop {
        match bootstrap_once(&service, &auth).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not create the first account; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
