//! The metadata model: repositories, blobs, artifacts, and the commands that change them.
//!
//! Every type here is stored in the state machine (MessagePack) and travels in the Raft log and
//! the change log, so fields are only ever added with `#[serde(default)]`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3, ChunkId, Sha256};
use crate::names::{ArtifactPath, RepoName};

mod legacy;

pub use legacy::Legacy;

/// A repository format's name, as repository records and command envelopes store it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FormatName(Cow<'static, str>);

impl FormatName {
    pub const fn new(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FormatName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for FormatName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A repository's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: RepoName,
    /// Which format's API serves it (a name in the node's [`FormatSet`]).
    pub format: FormatName,
    /// Once written, a path never changes (re-sending identical content is accepted).
    pub immutable: bool,
    pub created_at_ms: i64,
    /// A push is acknowledged only once a mirror region has applied it.
    #[serde(default)]
    pub sync_replication: bool,
    /// Set for a remote (pull-through) repository: the upstream it caches. Its content is
    /// written only by cache fills, never by clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::metadata::remote_spec::RemoteSpec>,
}

impl Repository {
    /// `REMOTE_READ_ONLY` for a remote repository: clients read it, only fills write it.
    pub fn require_local(&self) -> crate::error::Result<()> {
        if self.remote.is_some() {
            return Err(crate::error::Error::RemoteReadOnly {
                repo: self.name.to_string(),
            });
        }
        Ok(())
    }

    /// `WRONG_FORMAT` unless the repository is of `format` (a format's routes serve only its
    /// own repositories).
    pub fn require_format(&self, format: FormatName) -> crate::error::Result<()> {
        if self.format != format {
            return Err(crate::error::Error::WrongFormat {
                repo: self.name.to_string(),
                format: self.format.to_string(),
                expected: format.to_string(),
            });
        }
        Ok(())
    }
}

/// A repository's running totals, maintained by the state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStats {
    pub artifacts: u64,
    /// Sum of artifact sizes.
    pub logical_bytes: u64,
    /// Sum of the sizes of the distinct chunks the repository's artifacts use.
    pub physical_bytes: u64,
}

/// Node-wide totals, maintained by the state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalStats {
    pub repositories: u64,
    pub artifacts: u64,
    pub blobs: u64,
    /// Distinct chunks referenced by at least one blob.
    pub chunks: u64,
    pub logical_bytes: u64,
    pub physical_bytes: u64,
}

/// One chunk of a blob, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A blob's content description: what a command carries and what the state machine stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDescriptor {
    pub blake3: Blake3,
    pub sha256: Sha256,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// A stored blob with its reference count (how many artifacts point at it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub descriptor: BlobDescriptor,
    pub refs: u64,
}

/// An entry of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub repo: RepoName,
    pub path: ArtifactPath,
    pub blob: Blake3,
    pub sha256: Sha256,
    pub size: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A metadata change, proposed through Raft and applied deterministically.
///
/// Times are chosen by the proposer so that every replica applies the same values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    CreateRepo {
        repo: Repository,
    },
    /// A change to a repository of a format: the format's own command, opaque to the core,
    /// applied by the format (see [`crate::metadata::format`]).
    Format {
        format: FormatName,
        /// The payload's version (the format's, see [`crate::metadata::format::FormatApply::version`]).
        version: u32,
        payload: serde_bytes::ByteBuf,
    },
    /// Before command version 4, a generic file write (`put_artifact`): decoded from old Raft
    /// logs, change logs and primaries, applied as the `generic` format's version 1 payload.
    PutArtifact(Legacy),
    /// Before command version 4, a generic file delete (`delete_artifact`), likewise.
    DeleteArtifact(Legacy),
    /// Before command version 4, a change to an `oci` repository: its payload is the `oci`
    /// format's version 1 payload.
    Oci(Legacy),
    /// Primary change-log entries, applied in order on a mirror (see `crate::geo`).
    Replicated {
        entries: Vec<ReplicatedEntry>,
    },
    /// Makes this region a mirror of another, or re-points it.
    SetRole {
        role: RegionRole,
    },
    /// Makes this mirror the primary: a new epoch starts after its last applied entry.
    Promote {
        at_ms: i64,
    },
    /// A former primary learned it was replaced: records its writes after the fork point as
    /// divergent, becomes a mirror of the new primary, and marks its state for replacement.
    Demote {
        role: RegionRole,
        /// The new primary's epoch.
        epoch: u64,
        /// The last entry of this region's epoch that the new primary had applied.
        fork_seq: u64,
        at_ms: i64,
    },
    /// The start of replacing the state with a snapshot of the primary at `head`. `id` names
    /// this catch-up (proposed by the mirror leader that runs it): parts and the finish of any
    /// other catch-up are ignored. Without an id (nodes before command version 2), parts are
    /// taken as they come.
    SnapshotBegin {
        head: StreamHead,
        #[serde(default)]
        id: Option<String>,
    },
    /// Key/value pairs of that snapshot, staged until [`Command::SnapshotFinish`].
    SnapshotPart {
        #[serde(default)]
        id: Option<String>,
        pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    },
    /// Replaces the state with the staged snapshot, if it is the catch-up `id` and holds the
    /// `pairs` its parts carried. With `step_keys` (command version 3) it only starts the
    /// replacement, which [`Command::SnapshotInstall`] steps carry out; without, the whole
    /// state is replaced in this one apply (as nodes before version 3 do).
    SnapshotFinish {
        head: StreamHead,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        pairs: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_keys: Option<u32>,
    },
    /// One bounded step of installing the staged snapshot `id`: visits at most `max_keys`
    /// keys, deleting the old state's and then moving staged ones into place. Any leader of
    /// the region proposes these until the install is done.
    SnapshotInstall {
        id: Option<String>,
        max_keys: u32,
    },
    /// Drops a staged snapshot nobody is sending any more (its leader lost leadership).
    SnapshotAbort {
        id: Option<String>,
    },
    /// Records that a region at `epoch` exists, so a later promotion starts a newer one.
    ObserveEpoch {
        epoch: u64,
    },
    /// The operator has dealt with these divergent writes: forget them and release their
    /// content (an empty list: all of them).
    AckDivergent {
        seqs: Vec<u64>,
    },
    /// Records the region's cluster id, once: the first one proposed stays.
    SetClusterId {
        id: String,
    },
    /// Reclaims chunks freed by changes up to `through_seq` that were freed before
    /// `before_ms`, unless something references them again (at most `limit` of them).
    ReleaseFreed {
        through_seq: u64,
        before_ms: i64,
        limit: u64,
    },
    /// Drops change-log entries before `before_seq` (retention).
    TrimChangeLog {
        before_seq: u64,
    },
}

/// The newest command format this binary applies. Every kind of [`Command`] has the version
/// that introduced it ([`Command::required_version`]); a leader proposes a kind only once every
/// voter of its region reports at least that version, so during a rolling upgrade no node is
/// ever asked to apply a command it cannot decode. (A command a node cannot decode anyway is
/// applied as a refusal, never an error that stops Raft.) Version 4 brought the format
/// envelope, [`Command::Format`]: until every voter has it, format commands are proposed in
/// their earlier encodings ([`Command::legacy_form`]).
pub const COMMAND_VERSION: u32 = 4;

/// The version every node since the first release applies.
pub const BASE_COMMAND_VERSION: u32 = 1;

/// The command version that brought [`Command::Format`].
pub const ENVELOPE_VERSION: u32 = 4;

/// Largest encoded command a node proposes or accepts at the proposal boundary. A command
/// carries a blob's chunk list (47 bytes a chunk): 16 MiB is a 64 GiB blob of 256 KiB chunks.
pub const MAX_COMMAND_BYTES: usize = 16 << 20;

impl Command {
    /// A format's command in the envelope.
    pub fn format(format: FormatName, version: u32, payload: Vec<u8>) -> Self {
        Command::Format {
            format,
            version,
            payload: serde_bytes::ByteBuf::from(payload),
        }
    }

    /// The `(format, payload version)` of every format command in this one (a replicated
    /// batch holds several), in the envelope only: earlier encodings need no format check.
    pub fn formats_used(&self) -> Vec<(String, u32)> {
        match self {
            Command::Format {
                format, version, ..
            } => vec![(format.to_string(), *version)],
            Command::Replicated { entries } => {
                let mut used: Vec<(String, u32)> = Vec::new();
                for entry in entries {
                    for used_one in entry.command.formats_used() {
                        if !used.contains(&used_one) {
                            used.push(used_one);
                        }
                    }
                }
                used
            }
            _ => Vec::new(),
        }
    }

    /// The oldest command version that knows this kind (see [`COMMAND_VERSION`]).
    pub fn required_version(&self) -> u32 {
        match self {
            Command::Format { .. } => ENVELOPE_VERSION,
            Command::Replicated { entries } => entries
                .iter()
                .map(|e| e.command.required_version())
                .max()
                .unwrap_or(BASE_COMMAND_VERSION),
            Command::SnapshotFinish {
                step_keys: Some(_), ..
            }
            | Command::SnapshotInstall { .. } => 3,
            Command::CreateRepo { .. }
            | Command::PutArtifact(_)
            | Command::DeleteArtifact(_)
            | Command::Oci(_)
            | Command::SetRole { .. }
            | Command::Promote { .. }
            | Command::Demote { .. }
            | Command::SnapshotBegin { id: None, .. }
            | Command::SnapshotPart { id: None, .. }
            | Command::SnapshotFinish { id: None, .. }
            | Command::TrimChangeLog { .. } => BASE_COMMAND_VERSION,
            Command::SnapshotBegin { id: Some(_), .. }
            | Command::SnapshotPart { id: Some(_), .. }
            | Command::SnapshotFinish { id: Some(_), .. }
            | Command::SnapshotAbort { .. }
            | Command::ObserveEpoch { .. }
            | Command::AckDivergent { .. }
            | Command::SetClusterId { .. }
            | Command::ReleaseFreed { .. } => 2,
        }
    }

    /// A short name of the kind, for errors, logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateRepo { .. } => "create_repo",
            Command::Format { .. } => "format",
            Command::PutArtifact(_) => "put_artifact",
            Command::DeleteArtifact(_) => "delete_artifact",
            Command::Oci(_) => "oci",
            Command::Replicated { .. } => "replicated",
            Command::SetRole { .. } => "set_role",
            Command::Promote { .. } => "promote",
            Command::Demote { .. } => "demote",
            Command::SnapshotBegin { .. } => "snapshot_begin",
            Command::SnapshotPart { .. } => "snapshot_part",
            Command::SnapshotFinish { .. } => "snapshot_finish",
            Command::SnapshotInstall { .. } => "snapshot_install",
            Command::SnapshotAbort { .. } => "snapshot_abort",
            Command::ObserveEpoch { .. } => "observe_epoch",
            Command::AckDivergent { .. } => "ack_divergent",
            Command::SetClusterId { .. } => "set_cluster_id",
            Command::ReleaseFreed { .. } => "release_freed",
            Command::TrimChangeLog { .. } => "trim_change_log",
        }
    }

    /// Whether the command comes from a client (and so is refused on a mirror). Only client
    /// writes may cross the proposal boundary (`ClusterService.Propose`): every other kind is
    /// proposed by the node itself, on the leader, never forwarded.
    pub fn is_client_write(&self) -> bool {
        matches!(self, Command::CreateRepo { .. }) || self.envelope().is_some()
    }
}

/// A position in a primary's change log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    pub epoch: u64,
    pub seq: u64,
    pub at_ms: i64,
}

/// One primary change-log entry as a mirror applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedEntry {
    pub epoch: u64,
    pub seq: u64,
    pub at_ms: i64,
    pub command: Command,
}

/// Whether this region accepts writes, and whom a mirror follows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionRole {
    #[default]
    Primary,
    Mirror {
        /// The primary region's name, once known.
        primary: String,
        /// Replication (QUIC) addresses of the primary's nodes.
        replication_addrs: Vec<String>,
        /// HTTP addresses of the primary's nodes, for redirecting writes.
        http_addrs: Vec<String>,
    },
}

/// Where a promoted region's epoch began: after `after_seq` of the previous epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub epoch: u64,
    pub after_seq: u64,
    pub at_ms: i64,
}

/// A write a former primary accepted after the fork point, kept for the operator. Its content
/// (the chunks its blobs name) is kept too, until the operator acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivergentWrite {
    pub epoch: u64,
    pub seq: u64,
    pub at_ms: i64,
    /// What the write did; `None` for entries trimmed from the change log before the
    /// demotion (see `through_seq`).
    pub command: Option<Command>,
    /// When this region learned it had been replaced.
    pub recorded_at_ms: i64,
    /// For a record of trimmed entries: the last seq of the range `seq..=through_seq`.
    #[serde(default)]
    pub through_seq: Option<u64>,
}

/// A snapshot of the primary being staged on a mirror (`m/staging`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    pub id: Option<String>,
    pub head: StreamHead,
    /// Pairs the accepted parts carried.
    pub pairs: u64,
    /// Set once the finish was accepted: the state is being replaced, step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallCursor>,
}

/// How far the install of a staged snapshot has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallCursor {
    /// The primary's position the snapshot is at.
    pub head: StreamHead,
    pub phase: InstallPhase,
    /// The key the next step starts at.
    pub next: serde_bytes::ByteBuf,
    /// Whether the snapshot holds a change-log head (one from a primary that never wrote
    /// does not).
    pub staged_head: bool,
    pub steps: u64,
}

/// The two halves of an install: the old state's keys are deleted, then the staged keys are
/// moved into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallPhase {
    Clear,
    Move,
}

/// What applying a command did. Refusals are outcomes, not errors: they are as deterministic as
/// successes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    RepoCreated,
    RepoExists,
    /// What a format command did: the format's own outcome, encoded (its side of the write
    /// path decodes it, see [`Outcome::format_payload`]).
    Format {
        format: FormatName,
        changed: bool,
        payload: serde_bytes::ByteBuf,
    },
    // The answers to commands in the encodings of before the envelope, which a node gives for
    // such a command so that an older node that forwarded it can read the answer. They are
    // the `generic` format's version 1 outcomes (same names) and the `oci` format's.
    RepoNotFound,
    WrongFormat {
        format: FormatName,
    },
    ArtifactStored {
        replaced: bool,
        seq: u64,
    },
    ArtifactUnchanged,
    ArtifactDeleted {
        seq: u64,
    },
    ArtifactNotFound,
    Immutable,
    Oci(Legacy),
    /// A client write reached a mirror region.
    ReadOnlyMirror,
    /// Replicated entries applied up to `seq`.
    Replicated {
        seq: u64,
    },
    /// A replicated entry did not follow the applied position.
    ReplicationGap {
        expected: u64,
        got: u64,
    },
    RoleSet,
    Promoted {
        epoch: u64,
        after_seq: u64,
    },
    NotAMirror,
    Demoted {
        divergent: u64,
    },
    SnapshotStaged,
    /// A part or finish of a catch-up that is not the one staged: ignored.
    SnapshotIgnored,
    /// The finish named the staged catch-up but the staged pairs are not what its parts carried.
    SnapshotIncomplete {
        staged: u64,
        expected: u64,
    },
    SnapshotInstalled {
        seq: u64,
    },
    /// The staged snapshot is being installed (this region refuses reads until it is): the
    /// step `steps` visited `visited` keys.
    SnapshotInstalling {
        steps: u64,
        visited: u64,
    },
    /// The staged snapshot was dropped.
    SnapshotAborted,
    /// A replicated entry is not from this region's lineage (an older epoch than one already
    /// applied, or another epoch's entry at a seq already applied): the region must catch up
    /// from a snapshot of its primary.
    ReplicationDiverged {
        seq: u64,
        epoch: u64,
        applied_epoch: u64,
    },
    EpochObserved {
        max_epoch: u64,
    },
    DivergentAcknowledged {
        removed: u64,
    },
    /// The region's cluster id (the one recorded first).
    ClusterId {
        id: String,
    },
    /// Freed chunks reclaimed (`released`) and whether more were due than `limit`.
    FreedReleased {
        released: u64,
        more: bool,
    },
    Trimmed {
        removed: u64,
    },
    /// The command was committed but not applied, the same way on every node: its bytes are
    /// not a command this node knows (a newer node's kind, a corrupted entry), or it does not
    /// fit the state it met. Nothing changed.
    Refused {
        reason: String,
    },
}

impl Outcome {
    /// Whether the command changed the repository state (and so has a change-log entry).
    pub fn changed(&self) -> bool {
        matches!(
            self,
            Outcome::RepoCreated | Outcome::Format { changed: true, .. }
        )
    }
}

/// One entry of the change log: an applied command that changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub epoch: u64,
    pub seq: u64,
    /// The Raft log index that carried the command (for diagnosis only: it differs by region).
    pub raft_index: u64,
    pub at_ms: i64,
    pub command: Command,
}

/// Where the change log stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLogHead {
    pub epoch: u64,
    pub last_seq: u64,
    /// Commit time of the entry at `last_seq`.
    #[serde(default)]
    pub last_at_ms: i64,
    /// The oldest retained entry (entries before it were trimmed).
    #[serde(default = "first_seq_default")]
    pub first_seq: u64,
    /// The state is waiting to be replaced by a snapshot of the primary (after a demotion).
    #[serde(default)]
    pub needs_snapshot: bool,
}

fn first_seq_default() -> u64 {
    1
}

impl Default for ChangeLogHead {
    fn default() -> Self {
        Self {
            epoch: 1,
            last_seq: 0,
            last_at_ms: 0,
            first_seq: 1,
            needs_snapshot: false,
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
