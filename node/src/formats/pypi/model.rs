//! The PyPI format's commands, outcomes and records.
//!
//! Fields are only ever added with `#[serde(default)]`; a new command is a new variant (and a
//! new payload version).

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, Sha256};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// A project of a repository (its files are [`DistFile`] records under it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    /// The name as first uploaded (`Arca-Hello`); keys use the normal form.
    pub name: String,
    pub files: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The core metadata file (PEP 658) extracted from a distribution at upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataFile {
    pub blob: Blake3,
    pub sha256: Sha256,
    pub size: u64,
}

/// One distribution file (a wheel or an sdist) of a project version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistFile {
    pub filename: String,
    /// The version as uploaded.
    pub version: String,
    /// `sdist` or `bdist_wheel`.
    pub filetype: String,
    pub requires_python: Option<String>,
    pub blob: Blake3,
    pub sha256: Sha256,
    pub size: u64,
    pub metadata: MetadataFile,
    pub uploaded_at_ms: i64,
    /// PEP 592: `Some(reason)` (possibly empty) once the version is yanked.
    pub yanked: Option<String>,
}

/// A change to a PyPI repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PypiCommand {
    /// Store a distribution file and its core metadata under the project (created by the
    /// first upload).
    Upload {
        repo: RepoName,
        /// The project name as uploaded.
        project: String,
        file: Box<DistFile>,
        blob: BlobDescriptor,
        metadata: BlobDescriptor,
        at_ms: i64,
    },
    /// Yank (PEP 592) or un-yank every file of a version.
    Yank {
        repo: RepoName,
        project: String,
        version: String,
        /// `Some` yanks with that reason; `None` un-yanks.
        reason: Option<String>,
        at_ms: i64,
    },
}

impl PypiCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            PypiCommand::Upload { at_ms, .. } | PypiCommand::Yank { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            PypiCommand::Upload { repo, .. } | PypiCommand::Yank { repo, .. } => repo,
        }
    }
}

/// What applying a [`PypiCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PypiOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    Stored {
        seq: u64,
    },
    /// The file name already holds these exact bytes (a retried upload): nothing changed.
    Unchanged,
    /// The file name already holds different bytes (released files never change).
    FileExists {
        sha256: Sha256,
    },
    /// The project has as many files as a project may.
    TooManyFiles {
        limit: u64,
    },
    Yanked {
        files: u64,
        seq: u64,
    },
    /// The version was already in the state the yank asked for.
    YankUnchanged,
    VersionNotFound,
}

impl PypiOutcome {
    pub fn changed(&self) -> bool {
        matches!(
            self,
            PypiOutcome::Stored { .. } | PypiOutcome::Yanked { .. }
        )
    }
}
