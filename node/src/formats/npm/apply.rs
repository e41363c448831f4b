//! Applying [`NpmCommand`]s inside Raft's apply loop: a live version references its tarball
//! blob; `artifacts` and `logical_bytes` count the live versions and their tarballs.

use std::collections::BTreeMap;

use super::keys;
use super::model::{NpmCommand, NpmOutcome, PackageRecord, VersionRecord};
use super::names::sort_versions;
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &NpmCommand,
) -> anyhow::Result<NpmOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(NpmOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(NpmOutcome::WrongFormat { format }),
    };
    let repo = &repo.name;
    let name = command.name();
    let package_key = keys::package(repo, name);
    let record = txn.get::<PackageRecord>(&package_key)?;
    let (mut record, outcome) = match command {
        NpmCommand::Publish {
            version,
            blob,
            tags,
            description,
            readme,
            at_ms,
            ..
        } => {
            let mut record = record.unwrap_or_else(|| PackageRecord {
                name: name.to_string(),
                dist_tags: BTreeMap::new(),
                description: String::new(),
                readme: String::new(),
                versions: 0,
                rev: 0,
                created_at_ms: *at_ms,
                modified_at_ms: *at_ms,
            });
            let outcome = publish(txn, repo, &mut record, version, blob, tags)?;
            if outcome.is_none() {
                record.description.clone_from(description);
                record.readme.clone_from(readme);
            }
            (record, outcome)
        }
        NpmCommand::Deprecate { changes, .. } => {
            let Some(record) = record else {
                return Ok(NpmOutcome::PackageNotFound);
            };
            let outcome = deprecate(txn, repo, name, changes)?;
            (record, outcome)
        }
        NpmCommand::SetTag { tag, version, .. } => {
            let Some(mut record) = record else {
                return Ok(NpmOutcome::PackageNotFound);
            };
            let outcome = set_tag(txn, repo, &mut record, tag, version.as_deref())?;
            (record, outcome)
        }
        NpmCommand::Unpublish {
            versions,
            rev,
            at_ms,
            ..
        } => {
            let Some(mut record) = record else {
                return Ok(NpmOutcome::PackageNotFound);
            };
            if let Some(rev) = rev {
                if *rev != record.rev {
                    return Ok(NpmOutcome::RevMismatch {
                        current: record.rev,
                    });
                }
            }
            let outcome = unpublish(txn, repo, &mut record, versions, *at_ms)?;
            (record, outcome)
        }
    };
    if let Some(outcome) = outcome {
        return Ok(outcome);
    }
    record.rev += 1;
    record.modified_at_ms = command.at_ms();
    let rev = record.rev;
    txn.put(package_key, &record)?;
    Ok(NpmOutcome::Changed {
        seq: txn.seq(),
        rev,
    })
}

/// `None`: the record changed (the caller saves it); `Some`: the answer, nothing changed.
type Step = Option<NpmOutcome>;

fn publish(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    record: &mut PackageRecord,
    version: &VersionRecord,
    blob: &BlobDescriptor,
    tags: &[String],
) -> anyhow::Result<Step> {
    let key = keys::version(repo, &record.name, &version.version);
    let existing = txn.get::<VersionRecord>(&key)?;
    match &existing {
        Some(existing) if existing.integrity != version.integrity => {
            return Ok(Some(NpmOutcome::VersionExists {
                integrity: existing.integrity.clone(),
            }))
        }
        Some(existing) if existing.live() => {
            // A retried publish: only tags it adds change anything.
            let mut changed = false;
            for tag in tags {
                changed |= record.dist_tags.get(tag) != Some(&version.version);
                record
                    .dist_tags
                    .insert(tag.clone(), version.version.clone());
            }
            return Ok((!changed).then_some(NpmOutcome::Unchanged));
        }
        // Unpublished with these bytes: published again.
        Some(_) => {}
        None => {
            let count = txn.keys_with_prefix(&keys::version_prefix(repo, &record.name))?;
            if count.len() as u64 >= keys::MAX_VERSIONS_PER_PACKAGE {
                return Ok(Some(NpmOutcome::TooManyVersions {
                    limit: keys::MAX_VERSIONS_PER_PACKAGE,
                }));
            }
        }
    }
    let mut totals = txn.totals(repo)?;
    totals.grow(1, blob.size)?;
    txn.acquire_blob(repo, blob, &mut totals)?;
    txn.save_totals(repo, &totals)?;
    txn.put(key, version)?;
    record.versions += 1;
    for tag in tags {
        record
            .dist_tags
            .insert(tag.clone(), version.version.clone());
    }
    if !record.dist_tags.contains_key("latest") {
        record
            .dist_tags
            .insert("latest".into(), version.version.clone());
    }
    Ok(None)
}

fn deprecate(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    name: &str,
    changes: &BTreeMap<String, Option<String>>,
) -> anyhow::Result<Step> {
    let mut changed = 0;
    for (version, message) in changes {
        let key = keys::version(repo, name, version);
        let Some(mut record) = txn.get::<VersionRecord>(&key)?.filter(VersionRecord::live) else {
            return Ok(Some(NpmOutcome::VersionNotFound {
                version: version.clone(),
            }));
        };
        if record.deprecated != *message {
            record.deprecated.clone_from(message);
            txn.put(key, &record)?;
            changed += 1;
        }
    }
    Ok((changed == 0).then_some(NpmOutcome::Unchanged))
}

fn set_tag(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    record: &mut PackageRecord,
    tag: &str,
    version: Option<&str>,
) -> anyhow::Result<Step> {
    match version {
        Some(version) => {
            let key = keys::version(repo, &record.name, version);
            if txn
                .get::<VersionRecord>(&key)?
                .filter(VersionRecord::live)
                .is_none()
            {
                return Ok(Some(NpmOutcome::VersionNotFound {
                    version: version.to_string(),
                }));
            }
            if record.dist_tags.get(tag).map(String::as_str) == Some(version) {
                return Ok(Some(NpmOutcome::Unchanged));
            }
            record
                .dist_tags
                .insert(tag.to_string(), version.to_string());
        }
        None if tag == "latest" => return Ok(Some(NpmOutcome::LatestRequired)),
        None => {
            if record.dist_tags.remove(tag).is_none() {
                return Ok(Some(NpmOutcome::Unchanged));
            }
        }
    }
    Ok(None)
}

fn unpublish(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    record: &mut PackageRecord,
    versions: &[String],
    at_ms: i64,
) -> anyhow::Result<Step> {
    let prefix = keys::version_prefix(repo, &record.name);
    let mut live = Vec::new();
    for key in txn.keys_with_prefix(&prefix)? {
        if let Some(version) = txn.get::<VersionRecord>(&key)?.filter(VersionRecord::live) {
            live.push((key, version));
        }
    }
    for wanted in versions {
        if !live.iter().any(|(_, v)| &v.version == wanted) {
            return Ok(Some(NpmOutcome::VersionNotFound {
                version: wanted.clone(),
            }));
        }
    }
    let mut totals = txn.totals(repo)?;
    let mut removed = 0;
    let mut remaining = Vec::new();
    for (key, mut version) in live {
        if !versions.is_empty() && !versions.contains(&version.version) {
            remaining.push(version.version);
            continue;
        }
        txn.release_blob(repo, &version.blob, &mut totals)?;
        totals.shrink(1, version.size)?;
        version.unpublished_at_ms = Some(at_ms);
        txn.put(key, &version)?;
        record.dist_tags.retain(|_, v| *v != version.version);
        removed += 1;
    }
    if removed == 0 {
        return Ok(Some(NpmOutcome::Unchanged));
    }
    txn.save_totals(repo, &totals)?;
    record.versions -= removed;
    if !record.dist_tags.contains_key("latest") {
        // The newest remaining release (a prerelease only when nothing else is left).
        sort_versions(&mut remaining, |v| v);
        let newest = remaining
            .iter()
            .rev()
            .find(|v| semver::Version::parse(v).is_ok_and(|v| v.pre.is_empty()))
            .or(remaining.last());
        if let Some(newest) = newest {
            record.dist_tags.insert("latest".into(), newest.clone());
        }
    }
    Ok(None)
}
