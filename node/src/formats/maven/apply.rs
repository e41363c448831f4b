//! Applying [`MavenCommand`]s inside Raft's apply loop: a file references its blob;
//! `artifacts` and `logical_bytes` count the files and their sizes. Releases and timestamped
//! SNAPSHOT builds never change; a plain `-SNAPSHOT` file may get new bytes, unless the
//! repository is immutable.

use super::coords::is_snapshot;
use super::keys;
use super::model::{
    ArtifactRecord, MavenCommand, MavenFile, MavenOutcome, PluginRecord, VersionRecord,
};
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::model::{BlobDescriptor, Repository};

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &MavenCommand,
) -> anyhow::Result<MavenOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(MavenOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(MavenOutcome::WrongFormat { format }),
    };
    match command {
        MavenCommand::Deploy {
            group,
            artifact,
            version,
            file,
            blob,
            at_ms,
            ..
        } => deploy(
            txn,
            &repo,
            Gav {
                group,
                artifact,
                version,
            },
            file,
            blob,
            *at_ms,
        ),
        MavenCommand::SetPlugins { group, plugins, .. } => set_plugins(txn, &repo, group, plugins),
    }
}

struct Gav<'a> {
    group: &'a str,
    artifact: &'a str,
    version: &'a str,
}

/// Whether one more would pass `limit` (the checks the limits tests rely on).
pub fn over_limit(count: u64, limit: u64) -> bool {
    count >= limit
}

fn deploy(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &Repository,
    gav: Gav<'_>,
    file: &MavenFile,
    blob: &BlobDescriptor,
    at_ms: i64,
) -> anyhow::Result<MavenOutcome> {
    let name = &repo.name;
    let Gav {
        group,
        artifact,
        version,
    } = gav;
    let file_key = keys::file(name, group, artifact, version, &file.filename);
    let mut totals = txn.totals(name)?;
    let existing = txn.get::<MavenFile>(&file_key)?;
    let replaced = match &existing {
        Some(existing) if existing.sha256 == file.sha256 => return Ok(MavenOutcome::Unchanged),
        Some(existing)
            if repo.immutable
                || !is_snapshot(version)
                || existing.build.is_some()
                || file.build.is_some() =>
        {
            return Ok(MavenOutcome::FileExists {
                sha256: existing.sha256,
            })
        }
        Some(existing) => {
            txn.release_blob(name, &existing.blob, &mut totals)?;
            totals.shrink(1, existing.size)?;
            true
        }
        None => false,
    };
    let artifact_key = keys::artifact(name, group, artifact);
    let mut record = txn
        .get::<ArtifactRecord>(&artifact_key)?
        .unwrap_or(ArtifactRecord {
            group: group.to_string(),
            artifact: artifact.to_string(),
            versions: 0,
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        });
    let version_key = keys::version(name, group, artifact, version);
    let mut version_record = match txn.get::<VersionRecord>(&version_key)? {
        Some(found) => found,
        None => {
            if over_limit(record.versions, keys::MAX_VERSIONS_PER_ARTIFACT) {
                return Ok(MavenOutcome::TooManyVersions {
                    limit: keys::MAX_VERSIONS_PER_ARTIFACT,
                });
            }
            record.versions += 1;
            VersionRecord {
                version: version.to_string(),
                files: 0,
                created_at_ms: at_ms,
                updated_at_ms: at_ms,
            }
        }
    };
    if !replaced {
        if over_limit(version_record.files, keys::MAX_FILES_PER_VERSION) {
            return Ok(MavenOutcome::TooManyFiles {
                limit: keys::MAX_FILES_PER_VERSION,
            });
        }
        version_record.files += 1;
    }
    version_record.updated_at_ms = at_ms;
    record.updated_at_ms = at_ms;
    totals.grow(1, blob.size)?;
    txn.acquire_blob(name, blob, &mut totals)?;
    txn.put(file_key, file)?;
    txn.put(version_key, &version_record)?;
    txn.put(artifact_key, &record)?;
    txn.save_totals(name, &totals)?;
    let seq = txn.seq();
    Ok(if replaced {
        MavenOutcome::Replaced { seq }
    } else {
        MavenOutcome::Stored { seq }
    })
}

fn set_plugins(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &Repository,
    group: &str,
    plugins: &[PluginRecord],
) -> anyhow::Result<MavenOutcome> {
    let name = &repo.name;
    for plugin in plugins {
        let found = txn
            .get::<ArtifactRecord>(&keys::artifact(name, group, &plugin.artifact))?
            .is_some_and(|record| record.versions > 0);
        if !found {
            return Ok(MavenOutcome::NoSuchArtifact {
                artifact: plugin.artifact.clone(),
            });
        }
    }
    let mut count = txn
        .keys_with_prefix(&keys::plugin_prefix(name, group))?
        .len() as u64;
    let mut changed = false;
    for plugin in plugins {
        let key = keys::plugin(name, group, &plugin.prefix);
        match txn.get::<PluginRecord>(&key)? {
            Some(existing) if existing == *plugin => continue,
            Some(_) => {}
            None if over_limit(count, keys::MAX_PLUGINS_PER_GROUP) => {
                return Ok(MavenOutcome::TooManyPlugins {
                    limit: keys::MAX_PLUGINS_PER_GROUP,
                })
            }
            None => count += 1,
        }
        txn.put(key, plugin)?;
        changed = true;
    }
    Ok(if changed {
        MavenOutcome::PluginsSet { seq: txn.seq() }
    } else {
        MavenOutcome::Unchanged
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_count_what_is_already_there() {
        assert!(!over_limit(9_999, keys::MAX_VERSIONS_PER_ARTIFACT));
        assert!(over_limit(10_000, keys::MAX_VERSIONS_PER_ARTIFACT));
        assert!(over_limit(1_000, keys::MAX_PLUGINS_PER_GROUP));
    }
}
