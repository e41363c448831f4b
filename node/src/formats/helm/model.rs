//! The Helm format's commands, outcomes and records.
//!
//! Fields are only ever added with `#[serde(default)]`; a new command is a new variant (and a
//! new payload version).

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, Sha256};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// A chart of a repository; its versions are [`VersionRecord`]s under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartRecord {
    pub name: String,
    pub versions: u64,
    /// The chart's `index.yaml` entries, newest semver first: JSON objects joined by `,`,
    /// rebuilt when one of its versions changes (so a publish renders one chart, not the
    /// index).
    pub entries: String,
    /// The highest version, in semver order.
    pub latest: String,
    pub created_at_ms: i64,
    pub modified_at_ms: i64,
}

/// A stored file (the chart archive or its provenance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub blob: Blake3,
    pub sha256: Sha256,
    pub size: u64,
}

/// One uploaded chart version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    /// The `index.yaml` entry: `Chart.yaml`'s fields as JSON, `created`, `digest`, `urls`.
    pub entry: String,
    pub chart: StoredFile,
    pub prov: Option<StoredFile>,
    pub created_at_ms: i64,
}

/// The repository's change marker: the index is re-assembled only when it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub seq: u64,
    pub at_ms: i64,
}

/// A change to a Helm repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelmCommand {
    /// Store one chart version and its archive (the first creates the chart).
    Upload {
        repo: RepoName,
        name: String,
        version: Box<VersionRecord>,
        blob: BlobDescriptor,
        at_ms: i64,
    },
    /// Attach a provenance file to a stored version.
    Provenance {
        repo: RepoName,
        name: String,
        version: String,
        blob: BlobDescriptor,
        at_ms: i64,
    },
}

impl HelmCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            HelmCommand::Upload { at_ms, .. } | HelmCommand::Provenance { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            HelmCommand::Upload { repo, .. } | HelmCommand::Provenance { repo, .. } => repo,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            HelmCommand::Upload { name, .. } | HelmCommand::Provenance { name, .. } => name,
        }
    }
}

/// What applying a [`HelmCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelmOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    Changed {
        seq: u64,
    },
    /// Nothing to change (the same archive or provenance again).
    Unchanged,
    /// The version (or its provenance) exists with other bytes: uploads never change.
    Exists {
        digest: String,
    },
    VersionNotFound,
    TooManyVersions {
        limit: u64,
    },
}

impl HelmOutcome {
    pub fn changed(&self) -> bool {
        matches!(self, HelmOutcome::Changed { .. })
    }
}
