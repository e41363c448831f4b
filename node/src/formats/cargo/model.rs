//! The cargo format's commands, outcomes and records.
//!
//! Fields are only ever added with `#[serde(default)]`; a new command is a new variant (and a
//! new payload version).

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, Sha256};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// A crate of a repository, keyed by its normalized name (see [`super::names`]); its versions
/// are [`VersionRecord`]s under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrateRecord {
    /// The name as first published (every later publish must spell it the same way).
    pub name: String,
    /// Account names that may publish, yank and change owners (the first publisher).
    pub owners: Vec<String>,
    /// The latest publish's description (bounded).
    pub description: String,
    /// The highest published version (yanked ones included), in semver order.
    pub max_version: String,
    pub versions: u64,
    pub created_at_ms: i64,
    pub modified_at_ms: i64,
    /// The state machine's sequence number of the crate's last change: its index file's
    /// `ETag` and cache key.
    #[serde(default)]
    pub seq: u64,
}

/// One published version: its line of the index file (without `yanked`, which is rendered
/// from [`VersionRecord::yanked`]) and its `.crate` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub vers: String,
    /// The index line as a JSON object, without `yanked`.
    pub line: String,
    pub blob: Blake3,
    /// The `.crate`'s sha256: the index line's `cksum`, checked by cargo on download.
    pub sha256: Sha256,
    pub size: u64,
    pub yanked: bool,
    pub published_at_ms: i64,
    /// The state machine's sequence number of the publish: index lines are in publish order.
    pub seq: u64,
}

/// A change to a cargo repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CargoCommand {
    /// Store one version and its `.crate` (the first creates the crate, owned by `publisher`).
    Publish {
        repo: RepoName,
        name: String,
        version: Box<VersionRecord>,
        blob: BlobDescriptor,
        description: String,
        publisher: Option<String>,
        at_ms: i64,
    },
    /// Yank (`true`) or unyank a version.
    Yank {
        repo: RepoName,
        name: String,
        vers: String,
        yanked: bool,
        at_ms: i64,
    },
    /// Add or remove owners.
    Owners {
        repo: RepoName,
        name: String,
        add: Vec<String>,
        remove: Vec<String>,
        at_ms: i64,
    },
}

impl CargoCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            CargoCommand::Publish { at_ms, .. }
            | CargoCommand::Yank { at_ms, .. }
            | CargoCommand::Owners { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            CargoCommand::Publish { repo, .. }
            | CargoCommand::Yank { repo, .. }
            | CargoCommand::Owners { repo, .. } => repo,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            CargoCommand::Publish { name, .. }
            | CargoCommand::Yank { name, .. }
            | CargoCommand::Owners { name, .. } => name,
        }
    }
}

/// What applying a [`CargoCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CargoOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    Changed {
        seq: u64,
    },
    /// Nothing to change (a retried publish of the same bytes, a yank of a yanked version).
    Unchanged,
    /// The version was published before with other bytes: published versions never change.
    VersionExists {
        cksum: String,
    },
    /// A crate of the same name modulo case and `-`/`_` exists under another spelling.
    NameTaken {
        existing: String,
    },
    CrateNotFound,
    VersionNotFound,
    TooManyVersions {
        limit: u64,
    },
    TooManyOwners {
        limit: usize,
    },
    /// Removing these owners would leave the crate without one.
    LastOwner,
}

impl CargoOutcome {
    pub fn changed(&self) -> bool {
        matches!(self, CargoOutcome::Changed { .. })
    }
}
