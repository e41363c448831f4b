//! The metadata state machine: applies [`Command`]s deterministically.
//!
//! Everything here runs inside openraft's apply loop, identically on every node of a region, so
//! it reads nothing but the state machine itself and the command (times come from the
//! proposer). It maintains the reference counts that garbage collection trusts: blob → artifacts
//! (and OCI blob links and manifests) using it, chunk → blobs using it, per repository and
//! globally, plus running size totals. A format's commands (`Command::Format`) are applied by
//! the format ([`crate::metadata::format::FormatApply`]) through a [`crate::metadata::format::FormatTxn`] over the
//! same [`Txn`].
//!
//! Layout: this file holds the apply handler, the transaction and its reference counting
//! (what every format shares); `repos.rs` repository creation, `history.rs` epochs,
//! promotion, demotion, replicated entries and retention, `snapshot.rs` a mirror's snapshot
//! install. The dispatch in `Txn::apply` is the one place that names every command. The file
//! is longer than the others because the transaction and the reference counting it guards are
//! one unit (format commands already leave it: each format applies its own).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arca_raft::types::LogId;
use arca_raft::{ApplyBatch, ApplyHandler};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::digest::ChunkId;
use crate::metadata::catalog::Catalog;
use crate::metadata::format::{FormatSet, FormatTxn};
use crate::metadata::keys;
use crate::metadata::model::{
    ChangeLogHead, ChangeRecord, Command, GlobalStats, Outcome, RegionRole, ReplicatedEntry,
};

pub mod format;
mod history;
mod refs;
mod repos;
mod snapshot;

pub use refs::{dec, inc};

/// The first key of the application's state (keys from `\0` are the Raft driver's).
const FIRST_APPLICATION_KEY: &[u8] = &[1];

/// What the node learns from the state machine after each committed apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedPosition {
    pub raft_index: u64,
    pub seq: u64,
}

/// The [`ApplyHandler`] for Arca's metadata.
pub struct MetadataStateMachine {
    /// Chunks whose last reference went away in the apply call in progress.
    freed: Mutex<Vec<ChunkId>>,
    /// Chunks of blobs that became live in the apply call in progress.
    referenced: Mutex<Vec<ChunkId>>,
    /// A snapshot replaced the state in the apply call in progress.
    reset_chunks: Mutex<bool>,
    referenced_tx: ReferencedSender,
    catalog: Catalog,
    /// The formats whose commands this node applies.
    formats: FormatSet,
    freed_tx: mpsc::UnboundedSender<FreedChunks>,
    applied_tx: watch::Sender<AppliedPosition>,
    /// Refusal reasons already logged at error level.
    refusals_logged: Mutex<std::collections::HashSet<RefusalReason>>,
    /// The batch being applied changed auth records (see [`Catalog::auth_generation`]).
    auth_touched: std::sync::atomic::AtomicBool,
}

/// A message to the resync queue.
#[derive(Debug)]
pub enum ReferencedChunks {
    /// Blobs using these chunks became live: this node must hold them.
    Chunks(Vec<ChunkId>),
    /// The state was replaced by a snapshot: check every referenced chunk.
    All,
}

/// Sends [`ReferencedChunks`] and counts those not yet handled, so readiness can wait until
/// every announced chunk is at least queued for resync.
#[derive(Clone)]
pub struct ReferencedSender {
    tx: mpsc::UnboundedSender<ReferencedChunks>,
    pending: Arc<AtomicU64>,
}

/// The receiving end: call [`ReferencedReceiver::handled`] after each message is processed.
pub struct ReferencedReceiver {
    rx: mpsc::UnboundedReceiver<ReferencedChunks>,
    pending: Arc<AtomicU64>,
}

/// A channel for [`ReferencedChunks`] and the count of messages sent but not yet handled.
pub fn referenced_channel() -> (ReferencedSender, ReferencedReceiver, Arc<AtomicU64>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicU64::new(0));
    (
        ReferencedSender {
            tx,
            pending: pending.clone(),
        },
        ReferencedReceiver {
            rx,
            pending: pending.clone(),
        },
        pending,
    )
}

impl ReferencedSender {
    pub fn send(&self, message: ReferencedChunks) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(message).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl ReferencedReceiver {
    pub async fn recv(&mut self) -> Option<ReferencedChunks> {
        self.rx.recv().await
    }

    pub fn handled(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A message to the garbage collector.
#[derive(Debug)]
pub enum FreedChunks {
    /// These chunks lost their last reference.
    Chunks(Vec<ChunkId>),
    /// The state was replaced by a snapshot: any chunk may have become unreferenced.
    All,
}

impl MetadataStateMachine {
    pub fn new(
        catalog: Catalog,
        formats: FormatSet,
        freed_tx: mpsc::UnboundedSender<FreedChunks>,
        referenced_tx: ReferencedSender,
        applied_tx: watch::Sender<AppliedPosition>,
    ) -> Arc<Self> {
        Arc::new(Self {
            freed: Mutex::new(Vec::new()),
            referenced: Mutex::new(Vec::new()),
            reset_chunks: Mutex::new(false),
            referenced_tx,
            catalog,
            formats,
            freed_tx,
            applied_tx,
            refusals_logged: Mutex::new(std::collections::HashSet::new()),
            auth_touched: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

impl ApplyHandler for MetadataStateMachine {
    fn apply(
        &self,
        batch: &mut ApplyBatch<'_>,
        log_id: &LogId,
        command: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let outcome = match rmp_serde::from_slice::<Command>(command) {
            Err(e) => self.refuse(
                log_id,
                RefusalReason::Undecodable,
                format!(
                    "{} bytes that are not a command this node knows: {e}",
                    command.len()
                ),
            ),
            Ok(command) => {
                let mut txn = Txn::new(batch, self.formats.clone());
                match txn
                    .apply(&command, log_id.index)
                    .and_then(|outcome| txn.record_versions(&command).map(|()| outcome))
                {
                    Ok(outcome) => {
                        if touches_auth(&self.formats, &command) {
                            self.auth_touched
                                .store(true, std::sync::atomic::Ordering::Release);
                        }
                        let effects = txn.commit()?;
                        self.freed.lock().extend(effects.freed);
                        self.referenced.lock().extend(effects.referenced);
                        if effects.reset_chunks {
                            *self.reset_chunks.lock() = true;
                        }
                        outcome
                    }
                    // The disk failed: this node cannot go on applying.
                    Err(e) if is_storage_error(&e) => return Err(e),
                    // The command contradicts the state (a replicated entry for a blob this
                    // region never had, a counter that would go negative): every node holds the
                    // same state and refuses it the same way; the command's writes are dropped.
                    Err(e) => self.refuse(log_id, RefusalReason::Invalid, format!("{e:#}")),
                }
            }
        };
        Ok(rmp_serde::to_vec_named(&outcome)?)
    }

    fn applied(&self, last_applied: &LogId) {
        if std::mem::take(&mut *self.reset_chunks.lock()) {
            self.freed.lock().clear();
            self.referenced.lock().clear();
            let _ = self.freed_tx.send(FreedChunks::All);
            self.referenced_tx.send(ReferencedChunks::All);
        }
        let freed = std::mem::take(&mut *self.freed.lock());
        if !freed.is_empty() {
            // The collector re-checks every chunk against committed state before deleting.
            let _ = self.freed_tx.send(FreedChunks::Chunks(freed));
        }
        let referenced = std::mem::take(&mut *self.referenced.lock());
        if !referenced.is_empty() {
            self.referenced_tx
                .send(ReferencedChunks::Chunks(referenced));
        }
        if self
            .auth_touched
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.catalog.bump_auth_generation();
        }
        self.publish_position(last_applied.index);
    }

    fn reset(&self) {
        self.auth_touched
            .store(false, std::sync::atomic::Ordering::Release);
        self.catalog.bump_auth_generation();
        self.freed.lock().clear();
        self.referenced.lock().clear();
        let _ = self.freed_tx.send(FreedChunks::All);
        self.referenced_tx.send(ReferencedChunks::All);
        if let Ok((Some(last_applied), _)) =
            arca_raft::state_machine::read_applied_state(self.catalog.db())
        {
            self.publish_position(last_applied.index);
        }
    }
}

/// Whether a command may change the auth records: an auth command (directly, or replicated
/// from the primary), or a core command other than a repository's creation (they are rare,
/// and some replace the whole state: a mirror installing its primary's snapshot).
fn touches_auth(formats: &FormatSet, command: &Command) -> bool {
    match command {
        Command::Replicated { entries } => {
            entries.iter().any(|e| touches_auth(formats, &e.command))
        }
        Command::CreateRepo { .. } => false,
        command => command.envelope().is_none_or(|(format, _, _)| {
            formats
                .find(format.as_str())
                .is_some_and(|f| f.holds_credentials())
        }),
    }
}

/// Why a committed command was refused instead of applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RefusalReason {
    /// The bytes are not a command this node can decode (a newer node's kind, corruption).
    Undecodable,
    /// The command does not fit the state it met.
    Invalid,
}

impl RefusalReason {
    fn label(self) -> &'static str {
        match self {
            RefusalReason::Undecodable => "undecodable",
            RefusalReason::Invalid => "invalid",
        }
    }
}

/// Whether an apply error came from the disk rather than from the command.
fn is_storage_error(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref::<rocksdb::Error>().is_some())
}

impl MetadataStateMachine {
    /// A deterministic refusal: counted, logged the first time for each reason (then at debug,
    /// so a flood of bad entries cannot flood the log), never an error that would stop Raft.
    fn refuse(&self, log_id: &LogId, reason: RefusalReason, detail: String) -> Outcome {
        metrics::counter!("arca_state_machine_refused_commands_total", "reason" => reason.label())
            .increment(1);
        if self.refusals_logged.lock().insert(reason) {
            tracing::error!(
                log_index = log_id.index,
                reason = reason.label(),
                %detail,
                "refused a committed command (later refusals for this reason are logged at debug)"
            );
        } else {
            tracing::debug!(log_index = log_id.index, reason = reason.label(), %detail, "refused a committed command");
        }
        Outcome::Refused {
            reason: format!("{}: {detail}", reason.label()),
        }
    }

    fn publish_position(&self, raft_index: u64) {
        let seq = match self.catalog.changelog_head() {
            Ok(head) => head.last_seq,
            Err(e) => {
                tracing::error!(error = %e, "read change log head after apply");
                return;
            }
        };
        self.applied_tx
            .send_replace(AppliedPosition { raft_index, seq });
    }
}

/// One command's view of the state machine. Formats apply their commands through it (by way
/// of a [`FormatTxn`]), so reference counting and the change log exist once.
///
/// Writes stay in the transaction's own overlay until [`Txn::commit`]: a command that fails
/// half-way is refused with none of its writes, whatever it had done before it failed.
pub(crate) struct Txn<'b, 'a> {
    batch: &'b mut ApplyBatch<'a>,
    formats: FormatSet,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    freed: Vec<ChunkId>,
    /// Chunks this command left unreferenced, queued under its seq for later reclaim.
    deferred: Vec<ChunkId>,
    referenced: Vec<ChunkId>,
    /// The whole state was replaced: every chunk must be rechecked.
    reset_chunks: bool,
}

/// What a committed transaction tells the node's background work.
pub(crate) struct Effects {
    pub freed: Vec<ChunkId>,
    pub referenced: Vec<ChunkId>,
    pub reset_chunks: bool,
}

impl<'b, 'a> Txn<'b, 'a> {
    pub(crate) fn new(batch: &'b mut ApplyBatch<'a>, formats: FormatSet) -> Self {
        Self {
            batch,
            formats,
            writes: BTreeMap::new(),
            freed: Vec::new(),
            deferred: Vec::new(),
            referenced: Vec::new(),
            reset_chunks: false,
        }
    }

    /// Moves this command's writes into the apply batch.
    pub(crate) fn commit(self) -> anyhow::Result<Effects> {
        for (key, value) in self.writes {
            match value {
                Some(value) => self.batch.put(key, value)?,
                None => self.batch.delete(key)?,
            }
        }
        Ok(Effects {
            freed: self.freed,
            referenced: self.referenced,
            reset_chunks: self.reset_chunks,
        })
    }
}

impl Txn<'_, '_> {
    pub(crate) fn get_raw(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.batch.get(key),
        }
    }

    pub(crate) fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
        anyhow::ensure!(
            key.first() != Some(&0),
            "application keys must not start with \\0"
        );
        self.writes.insert(key, Some(value));
        Ok(())
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) -> anyhow::Result<()> {
        anyhow::ensure!(
            key.first() != Some(&0),
            "application keys must not start with \\0"
        );
        self.writes.insert(key, None);
        Ok(())
    }

    /// Pairs from `start` on, in key order, as this command would leave them.
    pub(crate) fn iter_from<'s>(
        &'s self,
        start: &[u8],
    ) -> impl Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>> + 's {
        arca_raft::state_machine::overlaid(self.batch.iter_from(start), &self.writes, start)
    }

    /// Every key starting with `prefix` as this command would leave them.
    pub(crate) fn keys_with_prefix(&self, prefix: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> =
            self.batch.keys_with_prefix(prefix)?.into_iter().collect();
        arca_raft::state_machine::apply_overlay(&mut keys, &self.writes, prefix);
        Ok(keys.into_iter().collect())
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> anyhow::Result<Option<T>> {
        match self.get_raw(key)? {
            Some(bytes) => Ok(Some(rmp_serde::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> anyhow::Result<()> {
        self.put_raw(key, rmp_serde::to_vec_named(value)?)
    }

    fn get_count(&self, key: &[u8]) -> anyhow::Result<u64> {
        match self.get_raw(key)? {
            Some(bytes) => {
                keys::decode_count(&bytes).ok_or_else(|| anyhow::anyhow!("corrupt counter"))
            }
            None => Ok(0),
        }
    }

    /// Adds `delta` to a counter, deleting it at zero; returns the new value.
    fn add_count(&mut self, key: Vec<u8>, delta: i64) -> anyhow::Result<u64> {
        let current = self.get_count(&key)?;
        let next = current
            .checked_add_signed(delta)
            .ok_or_else(|| anyhow::anyhow!("reference count underflow"))?;
        if next == 0 {
            self.delete(key)?;
        } else {
            self.put_raw(key, keys::encode_count(next))?;
        }
        Ok(next)
    }

    fn apply(&mut self, command: &Command, raft_index: u64) -> anyhow::Result<Outcome> {
        if command.is_client_write() && self.role()? != RegionRole::Primary {
            return Ok(Outcome::ReadOnlyMirror);
        }
        match command {
            Command::Replicated { entries } => self.apply_replicated(entries, raft_index),
            Command::SetRole { role } => {
                self.put(keys::ROLE.to_vec(), role)?;
                Ok(Outcome::RoleSet)
            }
            Command::Promote { at_ms } => self.promote(*at_ms),
            Command::Demote {
                role,
                epoch,
                fork_seq,
                at_ms,
            } => self.demote(role, *epoch, *fork_seq, *at_ms),
            Command::SnapshotBegin { .. }
            | Command::SnapshotPart { .. }
            | Command::SnapshotFinish { .. }
            | Command::SnapshotInstall { .. }
            | Command::SnapshotAbort { .. } => self.apply_snapshot(command),
            Command::ObserveEpoch { epoch } => {
                let max_epoch = self.raise_max_epoch(*epoch)?;
                Ok(Outcome::EpochObserved { max_epoch })
            }
            Command::AckDivergent { seqs } => self.ack_divergent(seqs),
            Command::ReleaseFreed {
                through_seq,
                before_ms,
                limit,
            } => self.release_freed(*through_seq, *before_ms, *limit),
            Command::SetClusterId { id } => {
                if let Some(current) = self.get_raw(keys::CLUSTER_ID)? {
                    return Ok(Outcome::ClusterId {
                        id: String::from_utf8_lossy(&current).into_owned(),
                    });
                }
                self.put_raw(keys::CLUSTER_ID.to_vec(), id.as_bytes().to_vec())?;
                Ok(Outcome::ClusterId { id: id.clone() })
            }
            Command::TrimChangeLog { before_seq } => {
                if self.installing()?.is_some() {
                    return Ok(Outcome::Trimmed { removed: 0 });
                }
                self.trim_change_log(*before_seq)
            }
            client => self.apply_change(client, raft_index, None),
        }
    }

    /// Records the command and format versions a committed command used (see
    /// [`keys::APPLIED_VERSIONS_PREFIX`]); written only when they grow.
    fn record_versions(&mut self, command: &Command) -> anyhow::Result<()> {
        let raise = |txn: &mut Self, key: Vec<u8>, version: u32| -> anyhow::Result<()> {
            let current = txn
                .get_raw(&key)?
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map_or(0, u32::from_be_bytes);
            if version > current {
                txn.put_raw(key, version.to_be_bytes().to_vec())?;
            }
            Ok(())
        };
        raise(
            self,
            keys::APPLIED_COMMAND_VERSION.to_vec(),
            command.required_version(),
        )?;
        for (format, version) in command.formats_used() {
            raise(self, keys::applied_format_version(&format), version)?;
        }
        Ok(())
    }

    pub(crate) fn role(&self) -> anyhow::Result<RegionRole> {
        Ok(self.get(keys::ROLE)?.unwrap_or_default())
    }

    /// Applies a repository change and records it in the change log: with the next local seq,
    /// or, for a replicated entry, with the primary's epoch and seq.
    fn apply_change(
        &mut self,
        command: &Command,
        raft_index: u64,
        replicated: Option<&ReplicatedEntry>,
    ) -> anyhow::Result<Outcome> {
        let head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
        // The seq this change gets if it changes anything.
        let next_seq = match replicated {
            Some(entry) => entry.seq,
            None => head.last_seq.saturating_add(1),
        };
        let (outcome, changed, at_ms) = match command {
            Command::CreateRepo { repo } => {
                let outcome = self.create_repo(repo)?;
                let changed = outcome.changed();
                (outcome, changed, repo.created_at_ms)
            }
            command => {
                let Some((name, version, payload)) = command.envelope() else {
                    anyhow::bail!("{} is not a repository change", command.kind());
                };
                let format = self.formats.find(name.as_str()).ok_or_else(|| {
                    anyhow::anyhow!("a command of format {name}, which this node does not know")
                })?;
                anyhow::ensure!(
                    version >= 1 && version <= format.version(),
                    "a command of format {name} version {version}; this node applies up to {}",
                    format.version()
                );
                let at_ms = format.at_ms(version, &payload)?;
                let answer = format.apply(
                    &mut FormatTxn::new(self, format, next_seq),
                    version,
                    &payload,
                )?;
                let changed = answer.changed;
                let outcome = match command {
                    Command::Format { .. } => Outcome::Format {
                        format: name,
                        changed,
                        payload: serde_bytes::ByteBuf::from(answer.payload),
                    },
                    legacy => Outcome::legacy(legacy, name, changed, answer.payload),
                };
                (outcome, changed, at_ms)
            }
        };
        // A replicated entry is recorded even if it changed nothing here: the mirror's log must
        // stay the primary's, entry for entry (a refusal here would mean the states differ,
        // which `arca cluster verify` reports).
        if !changed && replicated.is_none() {
            return Ok(outcome);
        }
        if !changed {
            tracing::error!(
                ?outcome,
                seq = replicated.map(|e| e.seq),
                "a replicated entry changed nothing on this mirror"
            );
        }
        let seq = self.append_change(command, raft_index, at_ms, replicated)?;
        anyhow::ensure!(
            seq == next_seq,
            "change got seq {seq}, its format was told {next_seq}"
        );
        for chunk in std::mem::take(&mut self.deferred) {
            self.put_raw(keys::freed(seq, &chunk), at_ms.to_be_bytes().to_vec())?;
        }
        Ok(outcome)
    }

    fn append_change(
        &mut self,
        command: &Command,
        raft_index: u64,
        at_ms: i64,
        replicated: Option<&ReplicatedEntry>,
    ) -> anyhow::Result<u64> {
        let mut head: ChangeLogHead = self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default();
        match replicated {
            Some(entry) => {
                head.epoch = entry.epoch;
                head.last_seq = entry.seq;
            }
            None => inc(&mut head.last_seq, 1, "change-log seq")?,
        }
        head.last_at_ms = at_ms;
        let record = ChangeRecord {
            epoch: head.epoch,
            seq: head.last_seq,
            raft_index,
            at_ms,
            command: command.clone(),
        };
        self.put(keys::change(head.last_seq), &record)?;
        self.put(keys::CHANGELOG_HEAD.to_vec(), &head)?;
        Ok(head.last_seq)
    }

    pub(crate) fn stats(&self) -> anyhow::Result<GlobalStats> {
        Ok(self.get(keys::GLOBAL_STATS)?.unwrap_or_default())
    }
}
