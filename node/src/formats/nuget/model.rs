//! The NuGet format's commands, outcomes and records.
//!
//! Fields are only ever added with `#[serde(default)]`; a new command is a new variant (and a
//! new payload version).

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, Sha256};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// A package id of a repository (keyed lowercased); its versions are [`VersionRecord`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// The id as first pushed.
    pub id: String,
    pub versions: u64,
    /// The description and authors of the latest push (for search).
    pub description: String,
    pub authors: String,
    pub created_at_ms: i64,
    pub modified_at_ms: i64,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub blob: Blake3,
    pub sha256: Sha256,
    pub size: u64,
}

impl From<&BlobDescriptor> for StoredFile {
    fn from(blob: &BlobDescriptor) -> Self {
        Self {
            blob: blob.blake3,
            sha256: blob.sha256,
            size: blob.size,
        }
    }
}

/// One pushed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The normalized version (`1.0.0`, `1.0.0-beta.1`), as the flat container names it.
    pub version: String,
    /// The version as the nuspec spells it.
    pub original: String,
    pub semver2: bool,
    pub listed: bool,
    /// The registration leaf's `catalogEntry` fields, a JSON object (without URLs).
    pub entry: String,
    pub nupkg: StoredFile,
    pub nuspec: StoredFile,
    pub published_at_ms: i64,
}

/// A change to a NuGet repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NugetCommand {
    /// Store one version, its `.nupkg` and its `.nuspec` (the first creates the package).
    Push {
        repo: RepoName,
        id: String,
        version: Box<VersionRecord>,
        nupkg: Box<BlobDescriptor>,
        nuspec: Box<BlobDescriptor>,
        description: String,
        authors: String,
        at_ms: i64,
    },
    /// Unlist (`false`) or relist (`true`) a version.
    SetListed {
        repo: RepoName,
        id: String,
        version: String,
        listed: bool,
        at_ms: i64,
    },
}

impl NugetCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            NugetCommand::Push { at_ms, .. } | NugetCommand::SetListed { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            NugetCommand::Push { repo, .. } | NugetCommand::SetListed { repo, .. } => repo,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            NugetCommand::Push { id, .. } | NugetCommand::SetListed { id, .. } => id,
        }
    }
}

/// What applying a [`NugetCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NugetOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    Changed {
        seq: u64,
    },
    Unchanged,
    /// The version was pushed before (NuGet answers every duplicate push with 409).
    Exists {
        identical: bool,
    },
    PackageNotFound,
    VersionNotFound,
    TooManyVersions {
        limit: u64,
    },
}

impl NugetOutcome {
    pub fn changed(&self) -> bool {
        matches!(self, NugetOutcome::Changed { .. })
    }
}
