//! The registry's records and the commands that change them.
//!
//! The registry's commands travel inside the core's format envelope (`Command::Format`,
//! payload version 1, which is how `Command::Oci` encoded them before the envelope). Like
//! [`crate::metadata::model`], everything here is stored in the state machine and travels in the
//! Raft log and the change log (MessagePack with field names), so fields are only ever added
//! with `#[serde(default)]`. A command carries everything its apply needs besides the state
//! machine itself — facts parsed from a manifest at push time, blob descriptors — so a mirror
//! replays it from the command and the chunks alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, Sha256};
use crate::formats::oci::names::{ImageName, Tag};
use crate::metadata::format::FormatName;
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;

/// A blob made visible in an image (`ob/` key). Holds one reference on the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLink {
    pub blob: Blake3,
    pub size: u64,
    pub linked_at_ms: i64,
}

/// What a manifest push records, derived from the manifest's bytes by the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInfo {
    /// sha256 of the exact bytes the client sent.
    pub digest: Sha256,
    /// The manifest's media type (its `mediaType`, else the request's `Content-Type`).
    pub media_type: String,
    /// The manifest's bytes, stored as a blob like any other.
    pub blob: BlobDescriptor,
    /// Blobs it references (config, layers), each once; each must be linked in the image.
    pub blobs: Vec<Sha256>,
    /// Manifests it references (an index's entries), each once; each must be in the image.
    pub manifests: Vec<Sha256>,
    /// The manifest it is attached to (signatures, SBOMs); need not exist.
    pub subject: Option<Sha256>,
    /// The `artifactType` the referrers API reports: the manifest's own, else (for an image
    /// manifest) its config's media type.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// A stored manifest (`om/` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    /// The blob holding the manifest's bytes (one reference).
    pub blob: Blake3,
    /// The blobs this manifest holds a reference on (its config and layers, each once), so
    /// their chunks outlive an unlinked blob as long as the manifest exists.
    pub references: Vec<Blake3>,
    pub manifests: Vec<Sha256>,
    pub subject: Option<Sha256>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// Tags recorded by nodes before tags got their own index (`otr/` keys); moved to the
    /// index the first time the record changes, empty in every record written since.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// How many tags point at this manifest (each has an `otr/` key).
    #[serde(default)]
    pub tag_count: u64,
    pub created_at_ms: i64,
}

/// A tag (`ot/` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub tag: Tag,
    pub digest: Sha256,
    pub updated_at_ms: i64,
}

/// An image of a repository (`oi/` key): exists while it has a blob or a manifest; this is
/// what `/v2/_catalog` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub blobs: u64,
    pub manifests: u64,
    pub tags: u64,
    pub created_at_ms: i64,
}

/// A change to an `oci` repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OciCommand {
    /// Make a freshly uploaded blob visible in an image.
    LinkBlob {
        repo: RepoName,
        image: ImageName,
        blob: BlobDescriptor,
        at_ms: i64,
    },
    /// Make a blob linked in another image visible in this one, without moving bytes. Refused
    /// unless the source link still exists when the command applies.
    MountBlob {
        repo: RepoName,
        image: ImageName,
        from_repo: RepoName,
        from_image: ImageName,
        blob: BlobDescriptor,
        at_ms: i64,
    },
    UnlinkBlob {
        repo: RepoName,
        image: ImageName,
        digest: Sha256,
        at_ms: i64,
    },
    /// Store a manifest and optionally point a tag at it.
    PutManifest {
        repo: RepoName,
        image: ImageName,
        tag: Option<Tag>,
        manifest: ManifestInfo,
        at_ms: i64,
    },
    /// Delete a manifest and every tag pointing at it.
    DeleteManifest {
        repo: RepoName,
        image: ImageName,
        digest: Sha256,
        at_ms: i64,
    },
    DeleteTag {
        repo: RepoName,
        image: ImageName,
        tag: Tag,
        at_ms: i64,
    },
}

impl OciCommand {
    pub fn at_ms(&self) -> i64 {
        match self {
            OciCommand::LinkBlob { at_ms, .. }
            | OciCommand::MountBlob { at_ms, .. }
            | OciCommand::UnlinkBlob { at_ms, .. }
            | OciCommand::PutManifest { at_ms, .. }
            | OciCommand::DeleteManifest { at_ms, .. }
            | OciCommand::DeleteTag { at_ms, .. } => *at_ms,
        }
    }

    pub fn repo(&self) -> &RepoName {
        match self {
            OciCommand::LinkBlob { repo, .. }
            | OciCommand::MountBlob { repo, .. }
            | OciCommand::UnlinkBlob { repo, .. }
            | OciCommand::PutManifest { repo, .. }
            | OciCommand::DeleteManifest { repo, .. }
            | OciCommand::DeleteTag { repo, .. } => repo,
        }
    }

    /// What the command does, in one line.
    pub fn describe(&self) -> String {
        match self {
            OciCommand::LinkBlob {
                repo, image, blob, ..
            } => format!("oci blob {repo}/{image}@sha256:{}", blob.sha256),
            OciCommand::MountBlob {
                repo, image, blob, ..
            } => format!("oci mount {repo}/{image}@sha256:{}", blob.sha256),
            OciCommand::UnlinkBlob {
                repo,
                image,
                digest,
                ..
            } => format!("oci delete blob {repo}/{image}@sha256:{digest}"),
            OciCommand::PutManifest {
                repo,
                image,
                tag,
                manifest,
                ..
            } => format!(
                "oci manifest {repo}/{image}{}@sha256:{}",
                tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default(),
                manifest.digest
            ),
            OciCommand::DeleteManifest {
                repo,
                image,
                digest,
                ..
            } => format!("oci delete manifest {repo}/{image}@sha256:{digest}"),
            OciCommand::DeleteTag {
                repo, image, tag, ..
            } => format!("oci delete tag {repo}/{image}:{tag}"),
        }
    }

    /// The blobs whose chunks this command needs: what a mirror must hold before applying it.
    pub fn blobs(&self) -> Vec<&BlobDescriptor> {
        match self {
            OciCommand::LinkBlob { blob, .. } | OciCommand::MountBlob { blob, .. } => vec![blob],
            OciCommand::PutManifest { manifest, .. } => vec![&manifest.blob],
            OciCommand::UnlinkBlob { .. }
            | OciCommand::DeleteManifest { .. }
            | OciCommand::DeleteTag { .. } => Vec::new(),
        }
    }
}

/// What applying an [`OciCommand`] did. Refusals are outcomes, as deterministic as successes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OciOutcome {
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    /// The repository is immutable and the command would change or remove content.
    Immutable,
    BlobLinked {
        seq: u64,
    },
    /// The blob was already linked in the image; nothing changed.
    BlobUnchanged,
    BlobUnlinked {
        seq: u64,
    },
    BlobUnknown,
    ManifestStored {
        /// False when only a tag moved onto an existing manifest.
        created: bool,
        seq: u64,
    },
    /// The manifest existed and the tag (if any) already pointed at it; nothing changed.
    ManifestUnchanged,
    ManifestBlobUnknown {
        digests: Vec<Sha256>,
    },
    /// The repository is immutable and the tag already points at another manifest.
    TagImmutable {
        current: Sha256,
    },
    ManifestDeleted {
        seq: u64,
    },
    ManifestUnknown,
    TagDeleted {
        seq: u64,
    },
    TagUnknown,
}

impl OciOutcome {
    /// Whether state changed (and so the command goes to the change log).
    pub fn changed(&self) -> bool {
        matches!(
            self,
            OciOutcome::BlobLinked { .. }
                | OciOutcome::BlobUnlinked { .. }
                | OciOutcome::ManifestStored { .. }
                | OciOutcome::ManifestDeleted { .. }
                | OciOutcome::TagDeleted { .. }
        )
    }
}
