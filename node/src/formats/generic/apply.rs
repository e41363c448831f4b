//! Applying [`GenericCommand`]s inside Raft's apply loop: one reference from an artifact to
//! its blob; `artifacts` and `logical_bytes` count the files and their sizes.

use super::model::{GenericCommand, GenericOutcome};
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::keys;
use crate::metadata::model::{Artifact, BlobDescriptor, Repository};
use crate::names::{ArtifactPath, RepoName};

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &GenericCommand,
) -> anyhow::Result<GenericOutcome> {
    let repo_name = match command {
        GenericCommand::PutArtifact { repo, .. } | GenericCommand::DeleteArtifact { repo, .. } => {
            repo
        }
    };
    let repo = match txn.own_repo(repo_name)? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(GenericOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(GenericOutcome::WrongFormat { format }),
    };
    match command {
        GenericCommand::PutArtifact {
            path, blob, at_ms, ..
        } => put(txn, &repo, path, blob, *at_ms),
        GenericCommand::DeleteArtifact { path, .. } => delete(txn, &repo, path),
    }
}

fn put(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &Repository,
    path: &ArtifactPath,
    blob: &BlobDescriptor,
    at_ms: i64,
) -> anyhow::Result<GenericOutcome> {
    let name: &RepoName = &repo.name;
    let key = keys::artifact(name, path);
    let existing: Option<Artifact> = txn.get(&key)?;
    let mut totals = txn.totals(name)?;
    if let Some(old) = &existing {
        if old.blob == blob.blake3 {
            return Ok(GenericOutcome::ArtifactUnchanged);
        }
        if repo.immutable {
            return Ok(GenericOutcome::Immutable);
        }
        txn.release_blob(name, &old.blob, &mut totals)?;
        totals.shrink(0, old.size)?;
        totals.grow(0, blob.size)?;
    } else {
        totals.grow(1, blob.size)?;
    }
    txn.acquire_blob(name, blob, &mut totals)?;
    let artifact = Artifact {
        repo: name.clone(),
        path: path.clone(),
        blob: blob.blake3,
        sha256: blob.sha256,
        size: blob.size,
        created_at_ms: existing.as_ref().map_or(at_ms, |old| old.created_at_ms),
        updated_at_ms: at_ms,
    };
    txn.put(key, &artifact)?;
    txn.save_totals(name, &totals)?;
    Ok(GenericOutcome::ArtifactStored {
        replaced: existing.is_some(),
        seq: txn.seq(),
    })
}

fn delete(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &Repository,
    path: &ArtifactPath,
) -> anyhow::Result<GenericOutcome> {
    let name = &repo.name;
    let key = keys::artifact(name, path);
    let Some(old) = txn.get::<Artifact>(&key)? else {
        return Ok(GenericOutcome::ArtifactNotFound);
    };
    if repo.immutable {
        return Ok(GenericOutcome::Immutable);
    }
    let mut totals = txn.totals(name)?;
    txn.release_blob(name, &old.blob, &mut totals)?;
    totals.shrink(1, old.size)?;
    txn.delete(key)?;
    txn.save_totals(name, &totals)?;
    Ok(GenericOutcome::ArtifactDeleted { seq: txn.seq() })
}
