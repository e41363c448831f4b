//! The metadata side of the format seam: what the state machine knows about a repository
//! format, and the restricted transaction a format applies its commands through.
//!
//! A format (generic files, OCI, and every package format after them) owns its commands. The
//! core carries them opaque, inside one versioned envelope, [`Command::Format`]: the state
//! machine finds the format by name in the [`FormatSet`] it was built with and calls
//! [`FormatApply::apply`] with a [`FormatTxn`]. That transaction exposes only what every
//! format shares (repository records, reference counting of blobs, running totals) and the
//! key ranges the format declared ([`FormatApply::key_prefixes`]): a format cannot write
//! another's keys, the change log or the region's role.
//!
//! The HTTP side of a format (routes, error body, metrics) is [`crate::formats::Format`],
//! which extends this trait; the core never depends on it.
//!
//! [`Command::Format`]: crate::metadata::model::Command::Format

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
pub use crate::metadata::model::FormatName;
use crate::metadata::model::{
    BlobDescriptor, ChunkRef, Command, GlobalStats, RepoStats, Repository,
};
use crate::metadata::state_machine::Txn;
pub use crate::metadata::state_machine::{dec, inc};
use crate::names::RepoName;

/// What applying one format command did, as the format reports it to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOutcome {
    /// Whether repository state changed (the command then gets a change-log entry, with the
    /// seq [`FormatTxn::seq`] announced).
    pub changed: bool,
    /// The format's own outcome, encoded; the proposer's side of the format decodes it.
    pub payload: Vec<u8>,
}

impl FormatOutcome {
    /// Encodes a format's typed outcome.
    pub fn encode<T: Serialize>(outcome: &T, changed: bool) -> anyhow::Result<Self> {
        Ok(Self {
            changed,
            payload: rmp_serde::to_vec_named(outcome)?,
        })
    }
}

/// The metadata side of a repository format: everything the state machine needs.
///
/// Every method runs identically on every node of a region (inside Raft's apply loop, or on
/// commands read back from the change log), so it may read nothing but its arguments.
pub trait FormatApply: Send + Sync + 'static {
    /// The name repositories of this format record (`generic`, `oci`, …): lowercase, stable.
    fn name(&self) -> FormatName;

    /// The newest command payload version this build proposes and applies. A leader proposes
    /// a payload version only once every voter of its region reports knowing it.
    fn version(&self) -> u32;

    /// The state-machine key ranges this format's commands may write (each ends in `/`; no
    /// two formats' ranges overlap, and none overlaps the core's: `formats::tests` checks).
    fn key_prefixes(&self) -> &'static [&'static [u8]];

    /// Applies one command payload of `version` (at most [`FormatApply::version`]).
    /// Refusals are outcomes; an `Err` refuses the command with none of its writes (the same
    /// way on every node).
    fn apply(
        &self,
        txn: &mut FormatTxn<'_, '_, '_>,
        version: u32,
        payload: &[u8],
    ) -> anyhow::Result<FormatOutcome>;

    /// The blobs a payload makes live: a region must hold their chunks before applying it
    /// (so a mirror replays the command from the command and the chunks alone).
    fn blobs(&self, version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>>;

    /// The time the proposer chose for the command (change-log entries carry it).
    fn at_ms(&self, version: u32, payload: &[u8]) -> anyhow::Result<i64>;

    /// One line for an operator: what the command does (divergent writes, logs).
    fn describe(&self, version: u32, payload: &[u8]) -> String;

    /// Checks a repository name against the format's own rules, at creation (the OCI
    /// registry's names are lowercase, for example).
    fn check_repo_name(&self, _name: &RepoName) -> Result<()> {
        Ok(())
    }

    /// Whether repositories of this format can be created (the core's own record kinds,
    /// accounts and the audit log, travel through the seam too but host none).
    fn hosts_repositories(&self) -> bool {
        true
    }

    /// Whether its repositories can be remote (pull-through caches of an upstream): the
    /// format's read paths fill from the upstream on a miss.
    fn proxies(&self) -> bool {
        false
    }

    /// Whether its commands change accounts, credentials or roles: the node's in-memory
    /// copy of them reloads after such a command is applied.
    fn holds_credentials(&self) -> bool {
        false
    }
}

/// Decodes a format's command payload (MessagePack, as every envelope carries).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> anyhow::Result<T> {
    Ok(rmp_serde::from_slice(payload)?)
}

/// The formats a node knows, by name: the state machine and the write path are built with it.
#[derive(Clone)]
pub struct FormatSet {
    formats: Vec<&'static dyn FormatApply>,
}

impl FormatSet {
    pub fn new(formats: Vec<&'static dyn FormatApply>) -> Self {
        Self { formats }
    }

    pub fn find(&self, name: &str) -> Option<&'static dyn FormatApply> {
        self.formats
            .iter()
            .copied()
            .find(|format| format.name() == *name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static dyn FormatApply> + '_ {
        self.formats.iter().copied()
    }

    /// The known format names, for an error that lists them.
    pub fn names(&self) -> String {
        self.formats
            .iter()
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The names of the formats repositories can be created with.
    pub fn repository_formats(&self) -> String {
        self.formats
            .iter()
            .filter(|f| f.hosts_repositories())
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The formats whose repositories can be remote, for messages.
    pub fn remote_formats(&self) -> String {
        self.formats
            .iter()
            .filter(|f| f.proxies())
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The format called `name`, or `UNSUPPORTED_FORMAT` listing the known ones.
    pub fn must_find(&self, name: &str) -> Result<&'static dyn FormatApply> {
        self.find(name).ok_or_else(|| Error::UnsupportedFormat {
            format: name.chars().take(40).collect(),
            supported: self.names(),
        })
    }

    /// The blobs a format command makes live (see [`FormatApply::blobs`]).
    pub fn blobs(&self, command: &Command) -> Result<Vec<BlobDescriptor>> {
        let Some((format, version, payload)) = command.envelope() else {
            return Ok(Vec::new());
        };
        self.must_find(format.as_str())?
            .blobs(version, &payload)
            .map_err(|e| Error::internal("read a format command", e))
    }

    /// The content a write stores (a file, an OCI blob, a manifest's bytes), if any.
    pub fn content(&self, command: &Command) -> Option<BlobDescriptor> {
        self.blobs(command).ok()?.into_iter().next()
    }

    /// The chunks a region must hold before applying this command (with their lengths).
    pub fn chunks(&self, command: &Command) -> Result<Vec<ChunkRef>> {
        match command {
            Command::Replicated { entries } => {
                let mut chunks = Vec::new();
                for entry in entries {
                    chunks.extend(self.chunks(&entry.command)?);
                }
                Ok(chunks)
            }
            _ => Ok(self
                .blobs(command)?
                .into_iter()
                .flat_map(|b| b.chunks)
                .collect()),
        }
    }

    /// One line for an operator: what the command does.
    pub fn describe(&self, command: &Command) -> String {
        match command.envelope() {
            Some((format, version, payload)) => match self.find(format.as_str()) {
                Some(f) => f.describe(version, &payload),
                None => format!("a command of format {format} this node does not know"),
            },
            None => match command {
                Command::CreateRepo { repo } => format!("create repository {}", repo.name),
                other => format!("{other:?}").chars().take(120).collect(),
            },
        }
    }

    /// `name@version` of every format, as a node advertises what it can apply.
    pub fn advertised(&self) -> Vec<String> {
        self.formats
            .iter()
            .map(|f| format!("{}@{}", f.name(), f.version()))
            .collect()
    }
}

/// Whether an advertised list (see [`FormatSet::advertised`]) covers `format` at `version`.
pub fn advertises(list: &[String], format: &str, version: u32) -> bool {
    list.iter().any(|entry| {
        entry
            .rsplit_once('@')
            .is_some_and(|(name, v)| name == format && v.parse::<u32>().is_ok_and(|v| v >= version))
    })
}

/// A repository's and the region's running totals, loaded once per command and saved at its
/// end. Every change is checked: a count that would go below zero or past `u64::MAX` refuses
/// the command.
pub struct Totals {
    pub repo: RepoStats,
    pub global: GlobalStats,
}

impl Totals {
    /// `artifacts` more entries holding `bytes` more logical bytes.
    pub fn grow(&mut self, artifacts: u64, bytes: u64) -> anyhow::Result<()> {
        inc(&mut self.repo.artifacts, artifacts, "repository artifacts")?;
        inc(&mut self.global.artifacts, artifacts, "artifacts")?;
        inc(&mut self.repo.logical_bytes, bytes, "repository bytes")?;
        inc(&mut self.global.logical_bytes, bytes, "logical bytes")
    }

    /// `artifacts` fewer entries holding `bytes` fewer logical bytes.
    pub fn shrink(&mut self, artifacts: u64, bytes: u64) -> anyhow::Result<()> {
        dec(&mut self.repo.artifacts, artifacts, "repository artifacts")?;
        dec(&mut self.global.artifacts, artifacts, "artifacts")?;
        dec(&mut self.repo.logical_bytes, bytes, "repository bytes")?;
        dec(&mut self.global.logical_bytes, bytes, "logical bytes")
    }
}

/// One format command's view of the state machine.
pub struct FormatTxn<'t, 'b, 'a> {
    txn: &'t mut Txn<'b, 'a>,
    prefixes: &'static [&'static [u8]],
    format: FormatName,
    seq: u64,
}

impl<'t, 'b, 'a> FormatTxn<'t, 'b, 'a> {
    pub(crate) fn new(
        txn: &'t mut Txn<'b, 'a>,
        format: &dyn FormatApply,
        seq: u64,
    ) -> FormatTxn<'t, 'b, 'a> {
        FormatTxn {
            txn,
            prefixes: format.key_prefixes(),
            format: format.name(),
            seq,
        }
    }
}

impl FormatTxn<'_, '_, '_> {
    /// The change-log seq the command gets if it changes state.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn check(&self, key: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.prefixes.iter().any(|prefix| key.starts_with(prefix)),
            "format {} may not touch key {:?}",
            self.format,
            String::from_utf8_lossy(key)
        );
        Ok(())
    }

    /// The repository `name`, if it exists.
    pub fn repo(&self, name: &RepoName) -> anyhow::Result<Option<Repository>> {
        self.txn.get(&crate::metadata::keys::repo(name))
    }

    /// The repository `name` if it exists and is of this format; otherwise the reason.
    pub fn own_repo(
        &self,
        name: &RepoName,
    ) -> anyhow::Result<std::result::Result<Repository, RepoRefusal>> {
        Ok(match self.repo(name)? {
            None => Err(RepoRefusal::NotFound),
            Some(repo) if repo.format != self.format => Err(RepoRefusal::WrongFormat(repo.format)),
            Some(repo) => Ok(repo),
        })
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> anyhow::Result<Option<T>> {
        self.check(key)?;
        self.txn.get(key)
    }

    pub fn get_raw(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        self.check(key)?;
        self.txn.get_raw(key)
    }

    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> anyhow::Result<()> {
        self.check(&key)?;
        self.txn.put(key, value)
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
        self.check(&key)?;
        self.txn.put_raw(key, value)
    }

    pub fn delete(&mut self, key: Vec<u8>) -> anyhow::Result<()> {
        self.check(&key)?;
        self.txn.delete(key)
    }

    /// Every key starting with `prefix` (inside the format's ranges), as this command would
    /// leave them.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        self.check(prefix)?;
        self.txn.keys_with_prefix(prefix)
    }

    /// The repository's and the region's totals (save them with [`FormatTxn::save_totals`]).
    pub fn totals(&self, repo: &RepoName) -> anyhow::Result<Totals> {
        Ok(Totals {
            repo: self
                .txn
                .get(&crate::metadata::keys::repo_stats(repo))?
                .unwrap_or_default(),
            global: self.txn.stats()?,
        })
    }

    pub fn save_totals(&mut self, repo: &RepoName, totals: &Totals) -> anyhow::Result<()> {
        self.txn
            .put(crate::metadata::keys::repo_stats(repo), &totals.repo)?;
        self.txn
            .put(crate::metadata::keys::GLOBAL_STATS.to_vec(), &totals.global)
    }

    /// One more reference from `repo` to the blob (an entry, a link, a manifest's reference):
    /// the first one makes its chunks live.
    pub fn acquire_blob(
        &mut self,
        repo: &RepoName,
        descriptor: &BlobDescriptor,
        totals: &mut Totals,
    ) -> anyhow::Result<()> {
        self.txn
            .acquire_blob(repo, descriptor, &mut totals.repo, &mut totals.global)
    }

    /// One fewer reference from `repo` to the blob: the last one frees its chunks (reclaimed
    /// once no mirror or retention window needs them).
    pub fn release_blob(
        &mut self,
        repo: &RepoName,
        blob: &crate::digest::Blake3,
        totals: &mut Totals,
    ) -> anyhow::Result<()> {
        self.txn
            .release_blob(repo, blob, &mut totals.repo, &mut totals.global)
    }

    /// The stored blob `id`, if any blob record holds it.
    pub fn blob(
        &self,
        id: &crate::digest::Blake3,
    ) -> anyhow::Result<Option<crate::metadata::model::BlobRecord>> {
        self.txn.get(&crate::metadata::keys::blob(id))
    }
}

/// Why a repository cannot take a format's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoRefusal {
    NotFound,
    WrongFormat(FormatName),
}
