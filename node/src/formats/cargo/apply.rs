//! Applying [`CargoCommand`]s inside Raft's apply loop, where two nodes racing to publish the
//! same version cannot both win: a version references its `.crate` blob; `artifacts` and
//! `logical_bytes` count the versions and their files (a yanked version stays: lockfiles pin
//! it).

use super::keys;
use super::model::{CargoCommand, CargoOutcome, CrateRecord, VersionRecord};
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &CargoCommand,
) -> anyhow::Result<CargoOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(CargoOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(CargoOutcome::WrongFormat { format }),
    };
    let repo = &repo.name;
    let name = command.name();
    let crate_key = keys::crate_key(repo, name);
    let record = txn.get::<CrateRecord>(&crate_key)?;
    if let Some(existing) = record.as_ref().filter(|r| r.name != name) {
        return Ok(CargoOutcome::NameTaken {
            existing: existing.name.clone(),
        });
    }
    let (mut record, outcome) = match command {
        CargoCommand::Publish {
            version,
            blob,
            description,
            publisher,
            at_ms,
            ..
        } => {
            let mut record = record.unwrap_or_else(|| CrateRecord {
                name: name.to_string(),
                owners: publisher.iter().cloned().collect(),
                description: String::new(),
                max_version: version.vers.clone(),
                versions: 0,
                created_at_ms: *at_ms,
                modified_at_ms: *at_ms,
                seq: 0,
            });
            let outcome = publish(txn, repo, &mut record, version, blob)?;
            if outcome.is_none() {
                record.description.clone_from(description);
            }
            (record, outcome)
        }
        CargoCommand::Yank { vers, yanked, .. } => {
            let Some(record) = record else {
                return Ok(CargoOutcome::CrateNotFound);
            };
            let key = keys::version(repo, name, vers);
            let Some(mut version) = txn.get::<VersionRecord>(&key)? else {
                return Ok(CargoOutcome::VersionNotFound);
            };
            if version.yanked == *yanked {
                return Ok(CargoOutcome::Unchanged);
            }
            version.yanked = *yanked;
            txn.put(key, &version)?;
            (record, None)
        }
        CargoCommand::Owners { add, remove, .. } => {
            let Some(mut record) = record else {
                return Ok(CargoOutcome::CrateNotFound);
            };
            let before = record.owners.clone();
            for owner in add {
                if !record.owners.contains(owner) {
                    record.owners.push(owner.clone());
                }
            }
            record.owners.retain(|o| !remove.contains(o));
            let outcome = if record.owners == before {
                Some(CargoOutcome::Unchanged)
            } else if record.owners.is_empty() {
                Some(CargoOutcome::LastOwner)
            } else if record.owners.len() > keys::MAX_OWNERS {
                Some(CargoOutcome::TooManyOwners {
                    limit: keys::MAX_OWNERS,
                })
            } else {
                None
            };
            (record, outcome)
        }
    };
    if let Some(outcome) = outcome {
        return Ok(outcome);
    }
    record.modified_at_ms = command.at_ms();
    record.seq = txn.seq();
    txn.put(crate_key, &record)?;
    Ok(CargoOutcome::Changed { seq: txn.seq() })
}

/// `None`: the record changed (the caller saves it); `Some`: the answer, nothing changed.
type Step = Option<CargoOutcome>;

fn publish(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    record: &mut CrateRecord,
    version: &VersionRecord,
    blob: &BlobDescriptor,
) -> anyhow::Result<Step> {
    let key = keys::version(repo, &record.name, &version.vers);
    if let Some(existing) = txn.get::<VersionRecord>(&key)? {
        return Ok(Some(
            if existing.sha256 == version.sha256 && existing.vers == version.vers {
                CargoOutcome::Unchanged
            } else {
                CargoOutcome::VersionExists {
                    cksum: existing.sha256.to_hex(),
                }
            },
        ));
    }
    if record.versions >= keys::MAX_VERSIONS_PER_CRATE {
        return Ok(Some(CargoOutcome::TooManyVersions {
            limit: keys::MAX_VERSIONS_PER_CRATE,
        }));
    }
    let mut totals = txn.totals(repo)?;
    totals.grow(1, blob.size)?;
    txn.acquire_blob(repo, blob, &mut totals)?;
    txn.save_totals(repo, &totals)?;
    let mut stored = version.clone();
    stored.seq = txn.seq();
    txn.put(key, &stored)?;
    record.versions += 1;
    let newer = match (
        semver::Version::parse(&version.vers),
        semver::Version::parse(&record.max_version),
    ) {
        (Ok(new), Ok(max)) => new > max,
        _ => true,
    };
    if newer || record.versions == 1 {
        record.max_version.clone_from(&version.vers);
    }
    Ok(None)
}
