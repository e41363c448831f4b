//! Reads of the registry's applied state, as more [`Catalog`] methods.

use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::formats::oci::keys as oci_keys;
use crate::formats::oci::model::{BlobLink, ImageRecord, ManifestRecord, TagRecord};
use crate::formats::oci::names::{ImageName, Tag};
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::metadata::model::BlobRecord;
use crate::names::RepoName;

impl Catalog {
    pub fn oci_image(&self, repo: &RepoName, image: &ImageName) -> Result<Option<ImageRecord>> {
        self.get(&oci_keys::oci_image(repo, image))
    }

    pub fn oci_blob_link(
        &self,
        repo: &RepoName,
        image: &ImageName,
        digest: &Sha256,
    ) -> Result<Option<BlobLink>> {
        self.get(&oci_keys::oci_blob_link(repo, image, digest))
    }

    /// A blob linked in the image, with its record.
    pub fn oci_blob(
        &self,
        repo: &RepoName,
        image: &ImageName,
        digest: &Sha256,
    ) -> Result<Option<(BlobLink, BlobRecord)>> {
        let Some(link) = self.oci_blob_link(repo, image, digest)? else {
            return Ok(None);
        };
        let record = self.blob(&link.blob)?.ok_or_else(|| {
            Error::Internal(format!(
                "blob link {repo}/{image}@{digest} has no blob record"
            ))
        })?;
        Ok(Some((link, record)))
    }

    pub fn oci_manifest(
        &self,
        repo: &RepoName,
        image: &ImageName,
        digest: &Sha256,
    ) -> Result<Option<ManifestRecord>> {
        self.get(&oci_keys::oci_manifest(repo, image, digest))
    }

    pub fn oci_tag(
        &self,
        repo: &RepoName,
        image: &ImageName,
        tag: &Tag,
    ) -> Result<Option<TagRecord>> {
        self.get(&oci_keys::oci_tag(repo, image, tag))
    }

    /// Tags of an image in the spec's order (case-insensitive), strictly after `last` if
    /// given; at most `limit`, and whether more follow.
    pub fn oci_tags(
        &self,
        repo: &RepoName,
        image: &ImageName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Tag>, bool)> {
        let prefix = oci_keys::oci_tag_prefix(repo, image);
        // `last` is only a position: build its key without requiring it to be a valid tag.
        let after = last.map(|last| {
            let mut key = prefix.clone();
            key.extend_from_slice(last.to_ascii_lowercase().as_bytes());
            key.push(0);
            key.extend_from_slice(last.as_bytes());
            key
        });
        self.scan(&prefix, after.as_deref(), limit, |_, value| {
            Ok(decode::<TagRecord>(value)?.tag)
        })
    }

    /// `<repository>/<image>` names of every image of every `oci` repository, in lexical order,
    /// strictly after `last`; at most `limit`, and whether more follow.
    pub fn oci_images(&self, last: Option<&str>, limit: usize) -> Result<(Vec<String>, bool)> {
        let after = last.map(|last| [oci_keys::OCI_IMAGE_PREFIX, last.as_bytes()].concat());
        self.scan(
            oci_keys::OCI_IMAGE_PREFIX,
            after.as_deref(),
            limit,
            |key, _| {
                let name = key
                    .get(oci_keys::OCI_IMAGE_PREFIX.len()..)
                    .unwrap_or_default();
                String::from_utf8(name.to_vec())
                    .map_err(|_| Error::Internal("image key is not UTF-8".into()))
            },
        )
    }

    /// Manifests of the image whose subject is `subject`, in digest order, strictly after
    /// `last`; at most `limit`, and whether more follow.
    pub fn oci_referrers(
        &self,
        repo: &RepoName,
        image: &ImageName,
        subject: &Sha256,
        last: Option<&Sha256>,
        limit: usize,
    ) -> Result<(Vec<(Sha256, ManifestRecord)>, bool)> {
        let prefix = oci_keys::oci_referrer_prefix(repo, image, subject);
        let after = last.map(|last| oci_keys::oci_referrer(repo, image, subject, last));
        let (digests, more) = self.scan(&prefix, after.as_deref(), limit, |key, _| {
            key.get(prefix.len()..)
                .and_then(Sha256::from_slice)
                .ok_or_else(|| Error::Internal("corrupt referrer key".into()))
        })?;
        let mut referrers = Vec::with_capacity(digests.len());
        for digest in digests {
            let record = self.oci_manifest(repo, image, &digest)?.ok_or_else(|| {
                Error::Internal(format!("referrer {digest} of {subject} has no manifest"))
            })?;
            referrers.push((digest, record));
        }
        Ok((referrers, more))
    }
}
