//! The npm format's commands, outcomes and records.
//!
//! Fields are only ever added with `#[serde(default)]`; a new command is a new variant (and a
//! new payload version).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, Sha256};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// A package of a repository; its versions are [`VersionRecord`]s under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    pub dist_tags: BTreeMap<String, String>,
    /// The latest publish's description and readme (the readme bounded).
    pub description: String,
    pub readme: String,
    /// Published versions that are not unpublished.
    pub versions: u64,
    /// Bumped by every change: the `_rev` npm sends back on unpublish.
    pub rev: u64,
    pub created_at_ms: i64,
    pub modified_at_ms: i64,
}

/// One published version: its manifest as published (without `dist`, which the server
/// writes) and its tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    /// The version's `package.json` document as published, a JSON object without `dist`,
    /// `deprecated` and `readme` (inserted when a packument is rendered).
    pub manifest: String,
    /// The abbreviated ("corgi") subset of `manifest`, a JSON object.
    pub abbreviated: String,
    pub blob: Blake3,
    pub sha256: Sha256,
    /// `sha512-<base64>`, checked against the bytes at publish.
    pub integrity: String,
    /// SHA-1 hex, checked against the bytes at publish.
    pub shasum: String,
    pub size: u64,
    pub published_at_ms: i64,
    pub deprecated: Option<String>,
    /// Set when the version was unpublished: it then holds no tarball, and the version can
    /// only ever be published again with the same bytes.
    #[serde(default)]
    pub unpublished_at_ms: Option<i64>,
}

impl VersionRecord {
    pub fn live(&self) -> bool {
        self.unpublished_at_ms.is_none()
    }
}

/// A change to an npm repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NpmCommand {
    /// Store one version and its tarball (the first creates the package), and point `tags`
    /// at it.
    Publish {
        repo: RepoName,
        name: String,
        version: Box<VersionRecord>,
        blob: BlobDescriptor,
        tags: Vec<String>,
        description: String,
        readme: String,
        at_ms: i64,
    },
    /// Set (`Some`) or clear (`None`) the deprecation message of versions.
    Deprecate {
        repo: RepoName,
        name: String,
        changes: BTreeMap<String, Option<String>>,
        at_ms: i64,
    },
    /// Point a dist-tag at a version (`Some`) or remove it (`None`).
    SetTag {
        repo: RepoName,
        name: String,
        tag: String,
        version: Option<String>,
        at_ms: i64,
    },
    /// Unpublish versions (all of them when `versions` is empty). `rev`, when given, must
    /// be the package's current one.
    Unpublish {
        repo: RepoName,
        name: String,
        versions: Vec<String>,
        rev: Option<u64>,
        at_ms: i64,
    },
}

impl NpmCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            NpmCommand::Publish { at_ms, .. }
            | NpmCommand::Deprecate { at_ms, .. }
            | NpmCommand::SetTag { at_ms, .. }
            | NpmCommand::Unpublish { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            NpmCommand::Publish { repo, .. }
            | NpmCommand::Deprecate { repo, .. }
            | NpmCommand::SetTag { repo, .. }
            | NpmCommand::Unpublish { repo, .. } => repo,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            NpmCommand::Publish { name, .. }
            | NpmCommand::Deprecate { name, .. }
            | NpmCommand::SetTag { name, .. }
            | NpmCommand::Unpublish { name, .. } => name,
        }
    }
}

/// What applying an [`NpmCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NpmOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    /// The package changed; `rev` is its new revision.
    Changed {
        seq: u64,
        rev: u64,
    },
    /// Nothing to change (a retried publish of the same bytes, a tag already there).
    Unchanged,
    /// The version was published before with other bytes: released versions never change.
    VersionExists {
        integrity: String,
    },
    PackageNotFound,
    VersionNotFound {
        version: String,
    },
    /// The `_rev` the client sent is not the package's current one.
    RevMismatch {
        current: u64,
    },
    TooManyVersions {
        limit: u64,
    },
    /// `latest` can be moved but not removed.
    LatestRequired,
}

impl NpmOutcome {
    pub fn changed(&self) -> bool {
        matches!(self, NpmOutcome::Changed { .. })
    }
}
