//! Applying [`OciCommand`]s: called by the state machine inside Raft's apply loop, so every
//! rule here is deterministic and reads nothing but the state machine and the command.
//!
//! References, which garbage collection trusts, are counted through the shared
//! [`FormatTxn::acquire_blob`] / [`FormatTxn::release_blob`]: a blob link holds one reference
//! on its blob, a manifest one on the blob of its own bytes and one on each blob it
//! references. Tags hold nothing; they point at a manifest, which lists them so deleting it
//! removes them too. Per-repository totals: `artifacts` counts manifests, `logical_bytes` sums
//! manifest sizes and the sizes of linked blobs.

use std::collections::BTreeSet;

use anyhow::{anyhow, Context};

use crate::digest::{Blake3, Sha256};
use crate::formats::oci::keys as oci_keys;
use crate::formats::oci::model::{
    BlobLink, ImageRecord, ManifestInfo, ManifestRecord, OciCommand, OciOutcome, TagRecord,
};
use crate::formats::oci::names::{ImageName, Tag};
use crate::metadata::format::{FormatTxn, RepoRefusal};
use crate::metadata::model::{BlobDescriptor, Repository};
use crate::names::RepoName;

type Txn<'t, 'b, 'a> = FormatTxn<'t, 'b, 'a>;

/// Applies one command of an `oci` repository.
pub(crate) fn apply(txn: &mut Txn<'_, '_, '_>, command: &OciCommand) -> anyhow::Result<OciOutcome> {
    let repo = match txn.own_repo(command.repo())? {
        Ok(repo) => repo,
        Err(RepoRefusal::NotFound) => return Ok(OciOutcome::RepoNotFound),
        Err(RepoRefusal::WrongFormat(format)) => return Ok(OciOutcome::WrongFormat { format }),
    };
    match command {
        OciCommand::LinkBlob {
            image, blob, at_ms, ..
        } => link_blob(txn, &repo.name, image, blob, *at_ms),
        OciCommand::MountBlob {
            image,
            from_repo,
            from_image,
            blob,
            at_ms,
            ..
        } => {
            let source_ok = match txn.repo(from_repo)? {
                Some(source) if source.format == repo.format => txn
                    .get::<BlobLink>(&oci_keys::oci_blob_link(
                        from_repo,
                        from_image,
                        &blob.sha256,
                    ))?
                    .is_some_and(|link| link.blob == blob.blake3),
                _ => false,
            };
            if !source_ok {
                // The source was unlinked since the proposer looked: its chunks may be gone.
                return Ok(OciOutcome::BlobUnknown);
            }
            link_blob(txn, &repo.name, image, blob, *at_ms)
        }
        OciCommand::UnlinkBlob { image, digest, .. } => {
            if repo.immutable {
                return Ok(OciOutcome::Immutable);
            }
            unlink_blob(txn, &repo.name, image, digest)
        }
        OciCommand::PutManifest {
            image,
            tag,
            manifest,
            at_ms,
            ..
        } => put_manifest(txn, &repo, image, tag.as_ref(), manifest, *at_ms),
        OciCommand::DeleteManifest { image, digest, .. } => {
            if repo.immutable {
                return Ok(OciOutcome::Immutable);
            }
            delete_manifest(txn, &repo.name, image, digest)
        }
        OciCommand::DeleteTag { image, tag, .. } => {
            if repo.immutable {
                return Ok(OciOutcome::Immutable);
            }
            delete_tag(txn, &repo.name, image, tag)
        }
    }
}

/// Reads, changes and writes an image's record; deletes it once it holds nothing.
fn update_image(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    at_ms: i64,
    change: impl FnOnce(&mut ImageRecord) -> Option<()>,
) -> anyhow::Result<()> {
    let key = oci_keys::oci_image(repo, image);
    let mut record = txn.get::<ImageRecord>(&key)?.unwrap_or(ImageRecord {
        created_at_ms: at_ms,
        ..ImageRecord::default()
    });
    change(&mut record).ok_or_else(|| anyhow!("image {repo}/{image} counts underflow"))?;
    if record.blobs == 0 && record.manifests == 0 {
        txn.delete(key)
    } else {
        txn.put(key, &record)
    }
}

fn link_blob(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    blob: &BlobDescriptor,
    at_ms: i64,
) -> anyhow::Result<OciOutcome> {
    let key = oci_keys::oci_blob_link(repo, image, &blob.sha256);
    if txn.get::<BlobLink>(&key)?.is_some() {
        return Ok(OciOutcome::BlobUnchanged);
    }
    let mut totals = txn.totals(repo)?;
    txn.acquire_blob(repo, blob, &mut totals)?;
    totals.grow(0, blob.size)?;
    let link = BlobLink {
        blob: blob.blake3,
        size: blob.size,
        linked_at_ms: at_ms,
    };
    txn.put(key, &link)?;
    update_image(txn, repo, image, at_ms, |record| {
        record.blobs = record.blobs.checked_add(1)?;
        Some(())
    })?;
    txn.save_totals(repo, &totals)?;
    Ok(OciOutcome::BlobLinked { seq: txn.seq() })
}

fn unlink_blob(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    digest: &Sha256,
) -> anyhow::Result<OciOutcome> {
    let key = oci_keys::oci_blob_link(repo, image, digest);
    let Some(link) = txn.get::<BlobLink>(&key)? else {
        return Ok(OciOutcome::BlobUnknown);
    };
    let mut totals = txn.totals(repo)?;
    txn.release_blob(repo, &link.blob, &mut totals)?;
    totals.shrink(0, link.size)?;
    txn.delete(key)?;
    update_image(txn, repo, image, 0, |record| {
        record.blobs = record.blobs.checked_sub(1)?;
        Some(())
    })?;
    txn.save_totals(repo, &totals)?;
    Ok(OciOutcome::BlobUnlinked { seq: txn.seq() })
}

/// Where a pushed tag stands before the push.
enum TagChange {
    None,
    Unchanged,
    New,
    Moved { from: Sha256 },
}

fn put_manifest(
    txn: &mut Txn<'_, '_, '_>,
    repo: &Repository,
    image: &ImageName,
    tag: Option<&Tag>,
    info: &ManifestInfo,
    at_ms: i64,
) -> anyhow::Result<OciOutcome> {
    let repo_name = &repo.name;
    // Decide every refusal before the first write.
    let tag_change = match tag {
        None => TagChange::None,
        Some(tag) => match txn.get::<TagRecord>(&oci_keys::oci_tag(repo_name, image, tag))? {
            None => TagChange::New,
            Some(current) if current.digest == info.digest => TagChange::Unchanged,
            Some(current) if repo.immutable => {
                return Ok(OciOutcome::TagImmutable {
                    current: current.digest,
                })
            }
            Some(current) => TagChange::Moved {
                from: current.digest,
            },
        },
    };
    let manifest_key = oci_keys::oci_manifest(repo_name, image, &info.digest);
    let existing = txn.get::<ManifestRecord>(&manifest_key)?;
    let created = existing.is_none();
    let mut record = match existing {
        Some(record) => {
            if matches!(tag_change, TagChange::None | TagChange::Unchanged) {
                return Ok(OciOutcome::ManifestUnchanged);
            }
            record
        }
        None => {
            let (references, missing) = resolve_references(txn, repo_name, image, info)?;
            // A remote repository caches a manifest before the layers it names: each is
            // fetched (and linked, holding its own reference) when a client asks for it.
            if !missing.is_empty() && repo.remote.is_none() {
                return Ok(OciOutcome::ManifestBlobUnknown { digests: missing });
            }
            create_manifest(txn, repo_name, image, info, references, at_ms)?
        }
    };
    if let Some(tag) = tag {
        migrate_tags(txn, repo_name, image, &info.digest, &mut record)?;
        match tag_change {
            TagChange::Moved { from } => {
                let old_key = oci_keys::oci_manifest(repo_name, image, &from);
                let mut old: ManifestRecord = txn
                    .get(&old_key)?
                    .with_context(|| format!("tag {tag} points at a missing manifest"))?;
                migrate_tags(txn, repo_name, image, &from, &mut old)?;
                old.tag_count = old
                    .tag_count
                    .checked_sub(1)
                    .with_context(|| format!("manifest {from} counts no tag {tag}"))?;
                txn.delete(oci_keys::oci_manifest_tag(repo_name, image, &from, tag))?;
                txn.put(old_key, &old)?;
            }
            TagChange::New => update_image(txn, repo_name, image, at_ms, |image| {
                image.tags = image.tags.checked_add(1)?;
                Some(())
            })?,
            TagChange::None | TagChange::Unchanged => {}
        }
        if !matches!(tag_change, TagChange::Unchanged) {
            crate::metadata::format::inc(&mut record.tag_count, 1, "a manifest's tags")?;
            txn.put_raw(
                oci_keys::oci_manifest_tag(repo_name, image, &info.digest, tag),
                Vec::new(),
            )?;
        }
        let tag_record = TagRecord {
            tag: tag.clone(),
            digest: info.digest,
            updated_at_ms: at_ms,
        };
        txn.put(oci_keys::oci_tag(repo_name, image, tag), &tag_record)?;
    }
    txn.put(manifest_key, &record)?;
    Ok(OciOutcome::ManifestStored {
        created,
        seq: txn.seq(),
    })
}

/// Moves the tags an older node kept inside the manifest record into the tag index. Every node
/// does the same the first time it touches the record, so the states stay identical.
fn migrate_tags(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    digest: &Sha256,
    record: &mut ManifestRecord,
) -> anyhow::Result<()> {
    for tag in std::mem::take(&mut record.tags) {
        txn.put_raw(
            oci_keys::oci_manifest_tag(repo, image, digest, &tag),
            Vec::new(),
        )?;
        crate::metadata::format::inc(&mut record.tag_count, 1, "a manifest's tags")?;
    }
    Ok(())
}

/// The tags pointing at a manifest, from the tag index (and a not yet migrated record).
fn manifest_tags(
    txn: &Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    digest: &Sha256,
    record: &ManifestRecord,
) -> anyhow::Result<Vec<Tag>> {
    let prefix = oci_keys::oci_manifest_tags_prefix(repo, image, digest);
    let mut tags = record.tags.clone();
    for key in txn.keys_with_prefix(&prefix)? {
        let text =
            std::str::from_utf8(&key[prefix.len()..]).context("a tag index key is not UTF-8")?;
        let tag = Tag::parse(text).map_err(|e| anyhow!("tag index key {text:?}: {e}"))?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// The blobs a new manifest will hold references on (those linked in the image), and the
/// digests it names that the image lacks (blobs must be linked, child manifests stored; the
/// subject need not exist).
fn resolve_references(
    txn: &Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    info: &ManifestInfo,
) -> anyhow::Result<(Vec<Blake3>, Vec<Sha256>)> {
    let mut missing = Vec::new();
    let mut references = Vec::new();
    let mut seen = BTreeSet::new();
    for digest in &info.blobs {
        match txn.get::<BlobLink>(&oci_keys::oci_blob_link(repo, image, digest))? {
            Some(link) => {
                if seen.insert(link.blob) {
                    references.push(link.blob);
                }
            }
            None => missing.push(*digest),
        }
    }
    for digest in &info.manifests {
        if txn
            .get::<ManifestRecord>(&oci_keys::oci_manifest(repo, image, digest))?
            .is_none()
        {
            missing.push(*digest);
        }
    }
    Ok((references, missing))
}

fn create_manifest(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    info: &ManifestInfo,
    references: Vec<Blake3>,
    at_ms: i64,
) -> anyhow::Result<ManifestRecord> {
    let mut totals = txn.totals(repo)?;
    txn.acquire_blob(repo, &info.blob, &mut totals)?;
    for blob in &references {
        let record = txn
            .blob(blob)?
            .with_context(|| format!("linked blob {blob} has no record"))?;
        txn.acquire_blob(repo, &record.descriptor, &mut totals)?;
    }
    totals.grow(1, info.blob.size)?;
    txn.save_totals(repo, &totals)?;
    if let Some(subject) = &info.subject {
        txn.put_raw(
            oci_keys::oci_referrer(repo, image, subject, &info.digest),
            Vec::new(),
        )?;
    }
    update_image(txn, repo, image, at_ms, |image| {
        image.manifests = image.manifests.checked_add(1)?;
        Some(())
    })?;
    Ok(ManifestRecord {
        media_type: info.media_type.clone(),
        size: info.blob.size,
        blob: info.blob.blake3,
        references,
        manifests: info.manifests.clone(),
        subject: info.subject,
        artifact_type: info.artifact_type.clone(),
        annotations: info.annotations.clone(),
        tags: Vec::new(),
        tag_count: 0,
        created_at_ms: at_ms,
    })
}

fn delete_manifest(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    digest: &Sha256,
) -> anyhow::Result<OciOutcome> {
    let key = oci_keys::oci_manifest(repo, image, digest);
    let Some(record) = txn.get::<ManifestRecord>(&key)? else {
        return Ok(OciOutcome::ManifestUnknown);
    };
    let mut totals = txn.totals(repo)?;
    txn.release_blob(repo, &record.blob, &mut totals)?;
    for blob in &record.references {
        txn.release_blob(repo, blob, &mut totals)?;
    }
    totals.shrink(1, record.size)?;
    txn.save_totals(repo, &totals)?;
    let tags = manifest_tags(txn, repo, image, digest, &record)?;
    for tag in &tags {
        txn.delete(oci_keys::oci_tag(repo, image, tag))?;
        txn.delete(oci_keys::oci_manifest_tag(repo, image, digest, tag))?;
    }
    if let Some(subject) = &record.subject {
        txn.delete(oci_keys::oci_referrer(repo, image, subject, digest))?;
    }
    txn.delete(key)?;
    let tags = tags.len() as u64;
    update_image(txn, repo, image, 0, |image| {
        image.manifests = image.manifests.checked_sub(1)?;
        image.tags = image.tags.checked_sub(tags)?;
        Some(())
    })?;
    Ok(OciOutcome::ManifestDeleted { seq: txn.seq() })
}

fn delete_tag(
    txn: &mut Txn<'_, '_, '_>,
    repo: &RepoName,
    image: &ImageName,
    tag: &Tag,
) -> anyhow::Result<OciOutcome> {
    let key = oci_keys::oci_tag(repo, image, tag);
    let Some(current) = txn.get::<TagRecord>(&key)? else {
        return Ok(OciOutcome::TagUnknown);
    };
    let manifest_key = oci_keys::oci_manifest(repo, image, &current.digest);
    let mut manifest: ManifestRecord = txn
        .get(&manifest_key)?
        .with_context(|| format!("tag {tag} points at a missing manifest"))?;
    migrate_tags(txn, repo, image, &current.digest, &mut manifest)?;
    manifest.tag_count = manifest
        .tag_count
        .checked_sub(1)
        .with_context(|| format!("manifest {} counts no tag {tag}", current.digest))?;
    txn.delete(oci_keys::oci_manifest_tag(
        repo,
        image,
        &current.digest,
        tag,
    ))?;
    txn.put(manifest_key, &manifest)?;
    txn.delete(key)?;
    update_image(txn, repo, image, 0, |image| {
        image.tags = image.tags.checked_sub(1)?;
        Some(())
    })?;
    Ok(OciOutcome::TagDeleted { seq: txn.seq() })
}
