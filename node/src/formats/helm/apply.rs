//! Applying [`HelmCommand`]s inside Raft's apply loop: a version references its archive (and
//! provenance) blobs, and every change re-renders its chart's index entries and moves the
//! repository's generation, so a node assembles `index.yaml` from per-chart fragments.

use super::keys;
use super::model::{ChartRecord, Generation, HelmCommand, HelmOutcome, StoredFile, VersionRecord};
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

pub(super) fn apply(
    txn: &mut FormatTxn<'_, '_, '_>,
    command: &HelmCommand,
) -> anyhow::Result<HelmOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(HelmOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(HelmOutcome::WrongFormat { format }),
    };
    let repo = &repo.name;
    let name = command.name();
    let mut versions = Vec::new();
    for key in txn.keys_with_prefix(&keys::version_prefix(repo, name))? {
        if let Some(version) = txn.get::<VersionRecord>(&key)? {
            versions.push(version);
        }
    }
    let changed = match command {
        HelmCommand::Upload { version, blob, .. } => {
            upload(txn, repo, name, &mut versions, version, blob)?
        }
        HelmCommand::Provenance { version, blob, .. } => {
            provenance(txn, repo, name, &mut versions, version, blob)?
        }
    };
    if let Some(outcome) = changed {
        return Ok(outcome);
    }
    let at_ms = command.at_ms();
    let key = keys::chart(repo, name);
    let mut record = txn
        .get::<ChartRecord>(&key)?
        .unwrap_or_else(|| ChartRecord {
            name: name.to_string(),
            versions: 0,
            entries: String::new(),
            latest: String::new(),
            created_at_ms: at_ms,
            modified_at_ms: at_ms,
        });
    super::index::sort_newest_first(&mut versions);
    record.versions = versions.len() as u64;
    record.latest = versions
        .first()
        .map(|v| v.version.clone())
        .unwrap_or_default();
    record.entries = versions
        .iter()
        .map(|v| v.entry.as_str())
        .collect::<Vec<_>>()
        .join(",");
    record.modified_at_ms = at_ms;
    txn.put(key, &record)?;
    let seq = txn.seq();
    txn.put(keys::generation(repo), &Generation { seq, at_ms })?;
    Ok(HelmOutcome::Changed { seq })
}

fn stored(blob: &BlobDescriptor) -> StoredFile {
    StoredFile {
        blob: blob.blake3,
        sha256: blob.sha256,
        size: blob.size,
    }
}

/// `None`: stored (the caller re-renders the chart); `Some`: the answer, nothing changed.
fn upload(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    name: &str,
    versions: &mut Vec<VersionRecord>,
    version: &VersionRecord,
    blob: &BlobDescriptor,
) -> anyhow::Result<Option<HelmOutcome>> {
    if let Some(existing) = versions.iter().find(|v| v.version == version.version) {
        return Ok(Some(if existing.chart.sha256 == blob.sha256 {
            HelmOutcome::Unchanged
        } else {
            HelmOutcome::Exists {
                digest: existing.chart.sha256.to_hex(),
            }
        }));
    }
    if versions.len() as u64 >= keys::MAX_VERSIONS_PER_CHART {
        return Ok(Some(HelmOutcome::TooManyVersions {
            limit: keys::MAX_VERSIONS_PER_CHART,
        }));
    }
    let mut totals = txn.totals(repo)?;
    totals.grow(1, blob.size)?;
    txn.acquire_blob(repo, blob, &mut totals)?;
    txn.save_totals(repo, &totals)?;
    txn.put(keys::version(repo, name, &version.version), version)?;
    versions.push(version.clone());
    Ok(None)
}

fn provenance(
    txn: &mut FormatTxn<'_, '_, '_>,
    repo: &RepoName,
    name: &str,
    versions: &mut [VersionRecord],
    version: &str,
    blob: &BlobDescriptor,
) -> anyhow::Result<Option<HelmOutcome>> {
    let Some(record) = versions.iter_mut().find(|v| v.version == version) else {
        return Ok(Some(HelmOutcome::VersionNotFound));
    };
    match &record.prov {
        Some(prov) if prov.sha256 == blob.sha256 => return Ok(Some(HelmOutcome::Unchanged)),
        Some(prov) => {
            return Ok(Some(HelmOutcome::Exists {
                digest: prov.sha256.to_hex(),
            }))
        }
        None => {}
    }
    let mut totals = txn.totals(repo)?;
    totals.grow(0, blob.size)?;
    txn.acquire_blob(repo, blob, &mut totals)?;
    txn.save_totals(repo, &totals)?;
    record.prov = Some(stored(blob));
    txn.put(keys::version(repo, name, version), &*record)?;
    Ok(None)
}
