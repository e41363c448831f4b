//! The OCI registry's keys in the state machine (inside its ranges: `oi/`, `ob/`, `om/`,
//! `ot/`, `or/`, `otr/`).
//!
//! | key | value |
//! |---|---|
//! | `oi/{repo}/{image}` | [`ImageRecord`](super::model::ImageRecord) of an `oci` repository |
//! | `ob/{repo}/{image}:{sha256}` | [`BlobLink`](super::model::BlobLink): a blob visible in the image |
//! | `om/{repo}/{image}:{sha256}` | [`ManifestRecord`](super::model::ManifestRecord) |
//! | `ot/{repo}/{image}:{lowercase tag}\0{tag}` | [`TagRecord`](super::model::TagRecord) (case-insensitive order) |
//! | `or/{repo}/{image}:{subject sha256}{referrer sha256}` | empty: the referrer has that subject |
//! | `otr/{repo}/{image}:{manifest sha256}{tag}` | empty: the tag points at the manifest |
//!
//! Image names never contain `:`, so `{image}:` delimits an image's keys.

use super::names::{ImageName, Tag};
use crate::digest::Sha256;
use crate::metadata::keys::join;
use crate::names::RepoName;

/// The ranges the registry's commands write.
pub const PREFIXES: &[&[u8]] = &[b"oi/", b"ob/", b"om/", b"ot/", b"or/", b"otr/"];

pub const OCI_IMAGE_PREFIX: &[u8] = b"oi/";

pub fn oci_image(repo: &RepoName, image: &ImageName) -> Vec<u8> {
    join(&[
        OCI_IMAGE_PREFIX,
        repo.as_str().as_bytes(),
        b"/",
        image.as_str().as_bytes(),
    ])
}

/// `{kind}/{repo}/{image}:`, the prefix of one image's keys of a kind.
fn oci_image_scope(kind: &[u8], repo: &RepoName, image: &ImageName) -> Vec<u8> {
    join(&[
        kind,
        repo.as_str().as_bytes(),
        b"/",
        image.as_str().as_bytes(),
        b":",
    ])
}

pub fn oci_blob_link(repo: &RepoName, image: &ImageName, digest: &Sha256) -> Vec<u8> {
    join(&[&oci_image_scope(b"ob/", repo, image), digest.as_bytes()])
}

pub fn oci_manifest(repo: &RepoName, image: &ImageName, digest: &Sha256) -> Vec<u8> {
    join(&[&oci_image_scope(b"om/", repo, image), digest.as_bytes()])
}

pub fn oci_tag_prefix(repo: &RepoName, image: &ImageName) -> Vec<u8> {
    oci_image_scope(b"ot/", repo, image)
}

pub fn oci_tag(repo: &RepoName, image: &ImageName, tag: &Tag) -> Vec<u8> {
    join(&[&oci_tag_prefix(repo, image), &tag.sort_key()])
}

/// The tags pointing at one manifest: `otr/{repo}/{image}:{digest}`.
pub fn oci_manifest_tags_prefix(repo: &RepoName, image: &ImageName, digest: &Sha256) -> Vec<u8> {
    join(&[&oci_image_scope(b"otr/", repo, image), digest.as_bytes()])
}

pub fn oci_manifest_tag(repo: &RepoName, image: &ImageName, digest: &Sha256, tag: &Tag) -> Vec<u8> {
    join(&[
        &oci_manifest_tags_prefix(repo, image, digest),
        tag.as_str().as_bytes(),
    ])
}

pub fn oci_referrer_prefix(repo: &RepoName, image: &ImageName, subject: &Sha256) -> Vec<u8> {
    join(&[&oci_image_scope(b"or/", repo, image), subject.as_bytes()])
}

pub fn oci_referrer(
    repo: &RepoName,
    image: &ImageName,
    subject: &Sha256,
    referrer: &Sha256,
) -> Vec<u8> {
    join(&[
        &oci_referrer_prefix(repo, image, subject),
        referrer.as_bytes(),
    ])
}
