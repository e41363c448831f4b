//! The key layout of the state-machine column family.
//!
//! | key | value |
//! |---|---|
//! | `r/{repo}` | [`Repository`](crate::metadata::model::Repository) |
//! | `s/{repo}` | [`RepoStats`](crate::metadata::model::RepoStats) |
//! | `a/{repo}/{path}` | [`Artifact`](crate::metadata::model::Artifact) |
//! | `b/{blake3}` | [`BlobRecord`](crate::metadata::model::BlobRecord) |
//! | `h/{sha256}` | blake3 of the blob with that sha256 |
//! | `c/{chunk}` | global chunk reference count (u64) and chunk length (u32) |
//! | `rb/{repo}/{blob}` | how many of the repository's artifacts use the blob (u64) |
//! | `rc/{repo}/{chunk}` | how many of the repository's blobs use the chunk (u64) |
//! | `g/stats` | [`GlobalStats`](crate::metadata::model::GlobalStats) |
//! | `m/changelog` | [`ChangeLogHead`](crate::metadata::model::ChangeLogHead) |
//! | `m/role` | [`RegionRole`](crate::metadata::model::RegionRole) (absent: primary) |
//! | `m/fork` | [`Fork`](crate::metadata::model::Fork): where a promoted region's epoch began |
//! | `m/forks` | every [`Fork`](crate::metadata::model::Fork) of the region's history, oldest first |
//! | `d/{seq}` | [`DivergentWrite`](crate::metadata::model::DivergentWrite), seq big-endian |
//! | `x/{key}` | a primary snapshot being staged, keyed by the key it will replace |
//! | `m/staging` | [`Staging`](crate::metadata::model::Staging): which catch-up `x/` holds |
//! | `m/max_epoch` | the highest epoch this region has seen (u64) |
//! | `m/cluster_id` | the region's cluster id (UTF-8) |
//! | `dc/{chunk}` | divergent writes using the chunk (u64): kept until acknowledged |
//! | `fr/{seq}{chunk}` | a chunk change `seq` freed, and when (i64 ms): reclaimed by `ReleaseFreed` |
//! | `l/{seq}` | [`ChangeRecord`](crate::metadata::model::ChangeRecord), seq big-endian |
//!
//! A format's own keys are in its folder (`formats/<name>/keys.rs`), inside the ranges it
//! declares (`FormatApply::key_prefixes`); the OCI registry's start with `o`.
//!
//! Repository names never contain `/`, so `{repo}/` delimits a repository's keys exactly; image
//! names never contain `:`, so `{image}:` delimits an image's. Digests are raw 32-byte values.

use crate::digest::{Blake3, ChunkId, Sha256};
use crate::names::{ArtifactPath, RepoName};

pub const REPO_PREFIX: &[u8] = b"r/";
pub const GLOBAL_STATS: &[u8] = b"g/stats";
pub const CHANGELOG_HEAD: &[u8] = b"m/changelog";
pub const CHANGELOG_PREFIX: &[u8] = b"l/";
pub const CHUNK_REFS_PREFIX: &[u8] = b"c/";
/// This region's [`RegionRole`](crate::metadata::model::RegionRole).
pub const ROLE: &[u8] = b"m/role";
/// The [`Fork`](crate::metadata::model::Fork) where this region's epoch began, if it was promoted.
pub const FORK: &[u8] = b"m/fork";
/// Every [`Fork`](crate::metadata::model::Fork) of this region's history, oldest first: promotions it
/// made, and those it learned from its primary's log or snapshot.
pub const FORKS: &[u8] = b"m/forks";
/// [`DivergentWrite`](crate::metadata::model::DivergentWrite)s, by big-endian seq.
pub const DIVERGENT_PREFIX: &[u8] = b"d/";
/// A snapshot of the primary being staged: `x/` + the key it will replace.
pub const STAGING_PREFIX: &[u8] = b"x/";
/// The [`Staging`](crate::metadata::model::Staging) record of the catch-up whose pairs `x/` holds.
pub const STAGING: &[u8] = b"m/staging";
/// The region's cluster id (UTF-8), fixed when the region was created.
pub const CLUSTER_ID: &[u8] = b"m/cluster_id";
/// The highest epoch this region has seen anywhere (u64): a promotion goes past it.
pub const MAX_EPOCH: &[u8] = b"m/max_epoch";
/// `fr/{seq}{chunk}`: a chunk change `seq` freed, with the time it was freed (i64 ms); kept
/// until a `ReleaseFreed` passes it (retention window, mirrors' progress).
pub const FREED_PREFIX: &[u8] = b"fr/";

pub fn freed(seq: u64, chunk: &ChunkId) -> Vec<u8> {
    join(&[FREED_PREFIX, &seq.to_be_bytes(), chunk.as_bytes()])
}

/// `dc/{chunk}`: how many divergent writes' blobs use the chunk (u64); such chunks are kept.
pub const DIVERGENT_CHUNK_PREFIX: &[u8] = b"dc/";

pub fn divergent_chunk(id: &ChunkId) -> Vec<u8> {
    join(&[DIVERGENT_CHUNK_PREFIX, id.as_bytes()])
}

/// The staged copy of a chunk reference count, while a snapshot is staged.
pub fn staged_chunk_refs(id: &ChunkId) -> Vec<u8> {
    join(&[STAGING_PREFIX, CHUNK_REFS_PREFIX, id.as_bytes()])
}

/// Where a snapshot's `key` is staged until the snapshot is installed.
pub fn staged(key: &[u8]) -> Vec<u8> {
    join(&[STAGING_PREFIX, key])
}

/// `av/command` (u32) and `av/f/{format}` (u32): the highest command version and format
/// payload versions this region has applied. Every voter applied them (a leader proposed them
/// only once every voter reported knowing them), so a new leader that cannot ask a voter that
/// is down still knows that voter applies them (see `Region::require_version`).
pub const APPLIED_VERSIONS_PREFIX: &[u8] = b"av/";
pub const APPLIED_COMMAND_VERSION: &[u8] = b"av/command";

pub fn applied_format_version(format: &str) -> Vec<u8> {
    join(&[APPLIED_VERSIONS_PREFIX, b"f/", format.as_bytes()])
}

/// Keys that describe this region rather than the repository data: they are neither taken from
/// a primary's snapshot nor replaced by one, and they are left out of state digests.
pub fn is_region_local(key: &[u8]) -> bool {
    key == ROLE
        || key == STAGING
        || key == MAX_EPOCH
        || key == CLUSTER_ID
        || region_local_prefix(key).is_some()
}

/// Whole key ranges that are region-local (see [`is_region_local`]).
const REGION_LOCAL_PREFIXES: [&[u8]; 5] = [
    APPLIED_VERSIONS_PREFIX,
    DIVERGENT_PREFIX,
    DIVERGENT_CHUNK_PREFIX,
    FREED_PREFIX,
    STAGING_PREFIX,
];

/// The region-local range `key` is in, if any.
pub fn region_local_prefix(key: &[u8]) -> Option<&'static [u8]> {
    REGION_LOCAL_PREFIXES
        .into_iter()
        .find(|prefix| key.starts_with(prefix))
}

/// The first key after every key that starts with `prefix` (which ends in `/`).
pub fn after_prefix(prefix: &[u8]) -> Vec<u8> {
    debug_assert_eq!(prefix.last(), Some(&b'/'));
    let mut next = prefix.to_vec();
    if let Some(last) = next.last_mut() {
        *last += 1;
    }
    next
}

/// Whether a key of the repository state counts in the state digest two regions compare
/// (`arca cluster verify`). The change log and its head describe how a region got to its
/// state, and the fork history only what this region saw of promotions (a region that followed
/// a new primary through its log never records its fork), so neither counts.
pub fn in_state_digest(key: &[u8]) -> bool {
    !(key.starts_with(CHANGELOG_PREFIX)
        || key == CHANGELOG_HEAD
        || key == FORK
        || key == FORKS
        || is_region_local(key))
}

pub fn divergent(seq: u64) -> Vec<u8> {
    join(&[DIVERGENT_PREFIX, &seq.to_be_bytes()])
}

pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

pub fn repo(name: &RepoName) -> Vec<u8> {
    join(&[REPO_PREFIX, name.as_str().as_bytes()])
}

pub fn repo_stats(name: &RepoName) -> Vec<u8> {
    join(&[b"s/", name.as_str().as_bytes()])
}

pub fn artifact(repo: &RepoName, path: &ArtifactPath) -> Vec<u8> {
    join(&[
        b"a/",
        repo.as_str().as_bytes(),
        b"/",
        path.as_str().as_bytes(),
    ])
}

/// Prefix of the artifacts of `repo` whose path starts with `path_prefix`.
pub fn artifact_prefix(repo: &RepoName, path_prefix: &str) -> Vec<u8> {
    join(&[
        b"a/",
        repo.as_str().as_bytes(),
        b"/",
        path_prefix.as_bytes(),
    ])
}

pub fn blob(id: &Blake3) -> Vec<u8> {
    join(&[b"b/", id.as_bytes()])
}

pub fn sha256_index(sha: &Sha256) -> Vec<u8> {
    join(&[b"h/", sha.as_bytes()])
}

pub fn chunk_refs(id: &ChunkId) -> Vec<u8> {
    join(&[CHUNK_REFS_PREFIX, id.as_bytes()])
}

pub fn repo_blob(repo: &RepoName, blob: &Blake3) -> Vec<u8> {
    join(&[b"rb/", repo.as_str().as_bytes(), b"/", blob.as_bytes()])
}

pub fn repo_chunk(repo: &RepoName, chunk: &ChunkId) -> Vec<u8> {
    join(&[b"rc/", repo.as_str().as_bytes(), b"/", chunk.as_bytes()])
}

pub fn change(seq: u64) -> Vec<u8> {
    join(&[CHANGELOG_PREFIX, &seq.to_be_bytes()])
}

/// A global chunk reference: how many live blobs use the chunk, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRefCount {
    pub count: u64,
    pub len: u32,
}

impl ChunkRefCount {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let count = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        Some(Self { count, len })
    }
}

pub fn encode_count(count: u64) -> Vec<u8> {
    count.to_be_bytes().to_vec()
}

pub fn decode_count(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}
