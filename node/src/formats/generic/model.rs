//! The generic format's commands and outcomes.
//!
//! Version 1 payloads are encoded exactly as the core's `Command::PutArtifact` and
//! `Command::DeleteArtifact` were before the format envelope (variant names and fields), and
//! the outcomes as the core's outcomes of then: a command or an answer of either encoding
//! converts to the other without knowing more than the variant name (see
//! `Command::legacy_form`). Fields are only ever added with `#[serde(default)]`.

use serde::{Deserialize, Serialize};

use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::{ArtifactPath, RepoName};

/// A change to a generic repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenericCommand {
    /// Store `blob` at `path` (a new version of the path in a mutable repository).
    PutArtifact {
        repo: RepoName,
        path: ArtifactPath,
        blob: BlobDescriptor,
        at_ms: i64,
    },
    DeleteArtifact {
        repo: RepoName,
        path: ArtifactPath,
        at_ms: i64,
    },
}

impl GenericCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            GenericCommand::PutArtifact { at_ms, .. }
            | GenericCommand::DeleteArtifact { at_ms, .. } => *at_ms,
        }
    }
}

/// What applying a [`GenericCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenericOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    /// A new artifact, or a new version of a path in a mutable repository.
    ArtifactStored {
        replaced: bool,
        seq: u64,
    },
    /// The path already held byte-identical content; nothing changed.
    ArtifactUnchanged,
    ArtifactDeleted {
        seq: u64,
    },
    ArtifactNotFound,
    Immutable,
}

impl GenericOutcome {
    pub fn changed(&self) -> bool {
        matches!(
            self,
            GenericOutcome::ArtifactStored { .. } | GenericOutcome::ArtifactDeleted { .. }
        )
    }
}
