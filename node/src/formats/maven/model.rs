//! The Maven format's commands, outcomes and records.
//!
//! Fields are only ever added with `#[serde(default)]`; a new command is a new variant (and a
//! new payload version).

use serde::{Deserialize, Serialize};

use super::coords::Build;
use crate::digest::{Blake3, Sha256};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// An artifact (`groupId:artifactId`) of a repository; its versions are [`VersionRecord`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub group: String,
    pub artifact: String,
    pub versions: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A version of an artifact (`1.0.0`, `1.1.0-SNAPSHOT`); its files are [`MavenFile`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    pub files: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One stored file of a version, with the digests its checksum siblings are served from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MavenFile {
    pub filename: String,
    pub classifier: Option<String>,
    pub extension: String,
    /// The build, for a timestamped SNAPSHOT file.
    pub build: Option<Build>,
    pub blob: Blake3,
    pub sha256: Sha256,
    /// Lowercase hex, as `.sha1`, `.md5` and `.sha512` serve them.
    pub sha1: String,
    pub md5: String,
    pub sha512: String,
    pub size: u64,
    pub uploaded_at_ms: i64,
}

/// A plugin prefix of a group (`mvn hello:greet` finds `com.acme:hello-maven-plugin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub prefix: String,
    pub artifact: String,
    pub name: String,
}

/// A change to a Maven repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MavenCommand {
    /// Store a file of a version (the artifact and version are created by their first file).
    Deploy {
        repo: RepoName,
        group: String,
        artifact: String,
        version: String,
        file: Box<MavenFile>,
        blob: BlobDescriptor,
        at_ms: i64,
    },
    /// Add or move plugin prefixes of a group (from a group-level `maven-metadata.xml`).
    SetPlugins {
        repo: RepoName,
        group: String,
        plugins: Vec<PluginRecord>,
        at_ms: i64,
    },
}

impl MavenCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            MavenCommand::Deploy { at_ms, .. } | MavenCommand::SetPlugins { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            MavenCommand::Deploy { repo, .. } | MavenCommand::SetPlugins { repo, .. } => repo,
        }
    }
}

/// What applying a [`MavenCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MavenOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    /// A new file.
    Stored {
        seq: u64,
    },
    /// A plain `-SNAPSHOT` file got new bytes.
    Replaced {
        seq: u64,
    },
    /// The file already holds these exact bytes (a retried deploy), or the plugins were
    /// already known: nothing changed.
    Unchanged,
    /// The file holds other bytes and never changes (a release or a timestamped build).
    FileExists {
        sha256: Sha256,
    },
    TooManyVersions {
        limit: u64,
    },
    TooManyFiles {
        limit: u64,
    },
    TooManyPlugins {
        limit: u64,
    },
    /// A plugin names an artifact the group does not hold.
    NoSuchArtifact {
        artifact: String,
    },
    PluginsSet {
        seq: u64,
    },
}

impl MavenOutcome {
    pub fn changed(&self) -> bool {
        matches!(
            self,
            MavenOutcome::Stored { .. }
                | MavenOutcome::Replaced { .. }
                | MavenOutcome::PluginsSet { .. }
        )
    }
}
