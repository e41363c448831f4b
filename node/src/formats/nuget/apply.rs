//! Applying [`NugetCommand`]s inside Raft's apply loop: a version references its `.nupkg` and
//! `.nuspec` blobs; unlisting hides a version from search but keeps it installable.

use super::keys;
use super::model::{NugetCommand, NugetOutcome, PackageRecord, VersionRecord};
use crate::metadata::format::{FormatTxn, RepoRefusal};

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &NugetCommand,
) -> anyhow::Result<NugetOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(NugetOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(NugetOutcome::WrongFormat { format }),
    };
    let repo = &repo.name;
    let id = command.id();
    let package_key = keys::package(repo, id);
    let record = txn.get::<PackageRecord>(&package_key)?;
    let mut record = match command {
        NugetCommand::Push {
            version,
            nupkg,
            nuspec,
            description,
            authors,
            at_ms,
            ..
        } => {
            let key = keys::version(repo, id, &version.version);
            if let Some(existing) = txn.get::<VersionRecord>(&key)? {
                return Ok(NugetOutcome::Exists {
                    identical: existing.nupkg.sha256 == nupkg.sha256,
                });
            }
            let mut record = record.unwrap_or_else(|| PackageRecord {
                id: id.to_string(),
                versions: 0,
                description: String::new(),
                authors: String::new(),
                created_at_ms: *at_ms,
                modified_at_ms: *at_ms,
            });
            if record.versions >= keys::MAX_VERSIONS_PER_PACKAGE {
                return Ok(NugetOutcome::TooManyVersions {
                    limit: keys::MAX_VERSIONS_PER_PACKAGE,
                });
            }
            let mut totals = txn.totals(repo)?;
            totals.grow(1, nupkg.size + nuspec.size)?;
            txn.acquire_blob(repo, nupkg, &mut totals)?;
            txn.acquire_blob(repo, nuspec, &mut totals)?;
            txn.save_totals(repo, &totals)?;
            txn.put(key, version.as_ref())?;
            record.versions += 1;
            record.description.clone_from(description);
            record.authors.clone_from(authors);
            record
        }
        NugetCommand::SetListed {
            version, listed, ..
        } => {
            let Some(record) = record else {
                return Ok(NugetOutcome::PackageNotFound);
            };
            let key = keys::version(repo, id, version);
            let Some(mut stored) = txn.get::<VersionRecord>(&key)? else {
                return Ok(NugetOutcome::VersionNotFound);
            };
            if stored.listed == *listed {
                return Ok(NugetOutcome::Unchanged);
            }
            stored.listed = *listed;
            txn.put(key, &stored)?;
            record
        }
    };
    record.modified_at_ms = command.at_ms();
    txn.put(package_key, &record)?;
    Ok(NugetOutcome::Changed { seq: txn.seq() })
}
