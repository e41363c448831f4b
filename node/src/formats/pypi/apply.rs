//! Applying [`PypiCommand`]s inside Raft's apply loop: a file references its blob and its
//! metadata blob; `artifacts` and `logical_bytes` count the files and their sizes.

use super::keys;
use super::model::{DistFile, ProjectRecord, PypiCommand, PypiOutcome};
use super::names::{normalize, same_version};
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &PypiCommand,
) -> anyhow::Result<PypiOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(PypiOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(PypiOutcome::WrongFormat { format }),
    };
    match command {
        PypiCommand::Upload {
            project,
            file,
            blob,
            metadata,
            at_ms,
            ..
        } => upload(txn, &repo.name, project, file, blob, metadata, *at_ms),
        PypiCommand::Yank {
            project,
            version,
            reason,
            ..
        } => yank(txn, &repo.name, project, version, reason.as_deref()),
    }
}

fn upload(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    project: &str,
    file: &DistFile,
    blob: &BlobDescriptor,
    metadata: &BlobDescriptor,
    at_ms: i64,
) -> anyhow::Result<PypiOutcome> {
    let normalized = normalize(project);
    let key = keys::file(repo, &normalized, &file.filename);
    if let Some(existing) = txn.get::<DistFile>(&key)? {
        return Ok(if existing.sha256 == file.sha256 {
            PypiOutcome::Unchanged
        } else {
            PypiOutcome::FileExists {
                sha256: existing.sha256,
            }
        });
    }
    let project_key = keys::project(repo, &normalized);
    let mut record = txn
        .get::<ProjectRecord>(&project_key)?
        .unwrap_or(ProjectRecord {
            name: project.to_string(),
            files: 0,
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        });
    if record.files >= keys::MAX_FILES_PER_PROJECT {
        return Ok(PypiOutcome::TooManyFiles {
            limit: keys::MAX_FILES_PER_PROJECT,
        });
    }
    record.files += 1;
    record.updated_at_ms = at_ms;
    let mut totals = txn.totals(repo)?;
    totals.grow(1, blob.size)?;
    txn.acquire_blob(repo, blob, &mut totals)?;
    txn.acquire_blob(repo, metadata, &mut totals)?;
    txn.put(key, file)?;
    txn.put(project_key, &record)?;
    txn.save_totals(repo, &totals)?;
    Ok(PypiOutcome::Stored { seq: txn.seq() })
}

fn yank(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    project: &str,
    version: &str,
    reason: Option<&str>,
) -> anyhow::Result<PypiOutcome> {
    let normalized = normalize(project);
    let mut found = 0u64;
    let mut changed = 0u64;
    for key in txn.keys_with_prefix(&keys::file_prefix(repo, &normalized))? {
        let Some(mut file) = txn.get::<DistFile>(&key)? else {
            continue;
        };
        if !same_version(&file.version, version) {
            continue;
        }
        found += 1;
        let wanted = reason.map(str::to_string);
        if file.yanked != wanted {
            file.yanked = wanted;
            txn.put(key, &file)?;
            changed += 1;
        }
    }
    Ok(match (found, changed) {
        (0, _) => PypiOutcome::VersionNotFound,
        (_, 0) => PypiOutcome::YankUnchanged,
        (_, files) => PypiOutcome::Yanked {
            files,
            seq: txn.seq(),
        },
    })
}
