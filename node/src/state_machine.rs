//! The metadata state machine: applies [`Command`]s deterministically.
//!
//! Everything here runs inside openraft's apply loop, identically on every node of a region, so
//! it reads nothing but the state machine itself and the command (times come from the
//! proposer). It maintains the reference counts that garbage collection trusts: blob → artifacts
//! (and OCI blob links and manifests) using it, chunk → blobs using it, per repository and
//! globally, plus running size totals. A format's commands (`Command::Format`) are applied by
//! the format ([`crate::format::FormatApply`]) through a [`crate::format::FormatTxn`] over the
//! same [`Txn`].
//!
//! Layout: this file holds the apply handler, the transaction and its reference counting
//! (what every format shares); `repos.rs` repository creation, `history.rs` epochs,
//! promotion, demotion, replicated entries and retention, `snapshot.rs` a mirror's snapshot
//! install. The dispatch in `Txn::apply` is the one place that names every command. The file
//! is longer than the others because the transaction and the reference counting it guards are
//! one unit (format commands already leave it: each format applies its own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arca_raft::types::LogId;
use arca_raft::{ApplyBatch, ApplyHandler};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::catalog::Catalog;
use crate::digest::{Blake3, ChunkId};
use crate::format::{FormatSet, FormatTxn};
use crate::keys::{self, ChunkRefCount};
use crate::model::{
    BlobDescriptor, BlobRecord, ChangeLogHead, ChangeRecord, Command, GlobalStats, InstallCursor,
    InstallPhase, Outcome, RegionRole, ReplicatedEntry, RepoStats, Staging,
};
use crate::names::RepoName;

mod history;
mod repos;
mod snapshot;

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
                match txn.apply(&command, log_id.index) {
                    Ok(outcome) => {
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
        self.publish_position(last_applied.index);
    }

    fn reset(&self) {
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
            Command::SnapshotBegin { head, id } => {
                if let Some(installing) = self.installing()? {
                    // A half-replaced state is finished first, whoever began it.
                    return Ok(installing);
                }
                self.clear_staging()?;
                let staging = Staging {
                    id: id.clone(),
                    head: *head,
                    pairs: 0,
                    install: None,
                };
                self.put(keys::STAGING.to_vec(), &staging)?;
                Ok(Outcome::SnapshotStaged)
            }
            Command::SnapshotPart { id, pairs } => {
                let Some(mut staging) = self.get::<Staging>(keys::STAGING)? else {
                    // Legacy proposers (no ids) began without a staging record.
                    if id.is_some() {
                        return Ok(Outcome::SnapshotIgnored);
                    }
                    self.stage_pairs(pairs)?;
                    return Ok(Outcome::SnapshotStaged);
                };
                if staging.id != *id || staging.install.is_some() {
                    return Ok(Outcome::SnapshotIgnored);
                }
                self.stage_pairs(pairs)?;
                staging.pairs += pairs.len() as u64;
                self.put(keys::STAGING.to_vec(), &staging)?;
                Ok(Outcome::SnapshotStaged)
            }
            Command::SnapshotFinish {
                head,
                id,
                pairs,
                step_keys,
            } => {
                let staging = self.get::<Staging>(keys::STAGING)?;
                match (&staging, id) {
                    (Some(staging), Some(_)) if staging.id != *id => {
                        return Ok(Outcome::SnapshotIgnored)
                    }
                    (None, Some(_)) => return Ok(Outcome::SnapshotIgnored),
                    _ => {}
                }
                if let Some(installing) = staging.as_ref().and_then(snapshot::installing) {
                    return Ok(installing);
                }
                if let (Some(staging), Some(expected)) = (&staging, pairs) {
                    if staging.pairs != *expected {
                        return Ok(Outcome::SnapshotIncomplete {
                            staged: staging.pairs,
                            expected: *expected,
                        });
                    }
                }
                if self.role()? == RegionRole::Primary {
                    return Ok(Outcome::NotAMirror);
                }
                let cursor = InstallCursor {
                    head: *head,
                    phase: InstallPhase::Clear,
                    next: serde_bytes::ByteBuf::from(FIRST_APPLICATION_KEY.to_vec()),
                    staged_head: self.get_raw(&keys::staged(keys::CHANGELOG_HEAD))?.is_some(),
                    steps: 0,
                };
                match (staging, step_keys) {
                    (Some(mut staging), Some(_)) => {
                        staging.install = Some(cursor);
                        self.put(keys::STAGING.to_vec(), &staging)?;
                        Ok(Outcome::SnapshotInstalling {
                            steps: 0,
                            visited: 0,
                        })
                    }
                    // Nodes before command version 3 replace the whole state in this apply.
                    (staging, _) => self.install_step(staging, cursor, usize::MAX),
                }
            }
            Command::SnapshotInstall { id, max_keys } => {
                let Some(staging) = self.get::<Staging>(keys::STAGING)? else {
                    return Ok(Outcome::SnapshotIgnored);
                };
                let Some(cursor) = staging.install.clone() else {
                    return Ok(Outcome::SnapshotIgnored);
                };
                if staging.id != *id {
                    return Ok(Outcome::SnapshotIgnored);
                }
                self.install_step(Some(staging), cursor, (*max_keys).max(1) as usize)
            }
            Command::SnapshotAbort { id } => {
                match self.get::<Staging>(keys::STAGING)? {
                    // A half-replaced state cannot be given back: it is finished instead.
                    Some(staging) if staging.id == *id && staging.install.is_none() => {}
                    _ => return Ok(Outcome::SnapshotIgnored),
                }
                self.clear_staging()?;
                Ok(Outcome::SnapshotAborted)
            }
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

    /// Reclaims queued freed chunks in seq order, up to `through_seq` and freed before
    /// `before_ms`, at most `limit`: those nothing references again go to the collector.
    fn release_freed(
        &mut self,
        through_seq: u64,
        before_ms: i64,
        limit: u64,
    ) -> anyhow::Result<Outcome> {
        let mut released = 0;
        let mut more = false;
        for key in self.keys_with_prefix(keys::FREED_PREFIX)? {
            let rest = &key[keys::FREED_PREFIX.len()..];
            let (Some(seq), Some(chunk)) = (
                rest.get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes),
                rest.get(8..).and_then(ChunkId::from_slice),
            ) else {
                anyhow::bail!("corrupt freed-chunk key");
            };
            let freed_at = self
                .get_raw(&key)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if seq > through_seq || freed_at > before_ms {
                break;
            }
            if released == limit {
                more = true;
                break;
            }
            self.delete(key)?;
            let staged = self.get_raw(&keys::staged_chunk_refs(&chunk))?.is_some();
            let divergent = self.get_count(&keys::divergent_chunk(&chunk))? > 0;
            if self.chunk_refs(&chunk)? == 0 && !staged && !divergent {
                self.freed.push(chunk);
            }
            released += 1;
        }
        Ok(Outcome::FreedReleased { released, more })
    }

    fn chunk_refs(&self, id: &ChunkId) -> anyhow::Result<u64> {
        Ok(match self.get_raw(&keys::chunk_refs(id))? {
            Some(raw) => {
                ChunkRefCount::decode(&raw)
                    .ok_or_else(|| anyhow::anyhow!("corrupt chunk reference count"))?
                    .count
            }
            None => 0,
        })
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
                    legacy => Outcome::legacy(legacy, name, answer),
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

    /// One more reference from `repo` to `descriptor`'s blob: an artifact, or in an `oci`
    /// repository a blob link or a manifest (its own bytes, or a blob it references).
    pub(crate) fn acquire_blob(
        &mut self,
        repo: &RepoName,
        descriptor: &BlobDescriptor,
        repo_stats: &mut RepoStats,
        stats: &mut GlobalStats,
    ) -> anyhow::Result<()> {
        let blob_key = keys::blob(&descriptor.blake3);
        let record = match self.get::<BlobRecord>(&blob_key)? {
            Some(mut record) => {
                inc(&mut record.refs, 1, "blob references")?;
                record
            }
            None => {
                inc(&mut stats.blobs, 1, "blobs")?;
                self.referenced
                    .extend(descriptor.chunks.iter().map(|c| c.id));
                for chunk in distinct_chunks(descriptor) {
                    let refs_key = keys::chunk_refs(&chunk.0);
                    let mut refs = match self.get_raw(&refs_key)? {
                        Some(raw) => ChunkRefCount::decode(&raw)
                            .ok_or_else(|| anyhow::anyhow!("corrupt chunk reference count"))?,
                        None => ChunkRefCount {
                            count: 0,
                            len: chunk.1,
                        },
                    };
                    if refs.count == 0 {
                        inc(&mut stats.chunks, 1, "chunks")?;
                        inc(
                            &mut stats.physical_bytes,
                            u64::from(chunk.1),
                            "physical bytes",
                        )?;
                    }
                    inc(&mut refs.count, 1, "chunk references")?;
                    self.put_raw(refs_key, refs.encode())?;
                }
                self.put_raw(
                    keys::sha256_index(&descriptor.sha256),
                    descriptor.blake3.as_bytes().to_vec(),
                )?;
                BlobRecord {
                    descriptor: descriptor.clone(),
                    refs: 1,
                }
            }
        };
        let chunks = distinct_chunks(&record.descriptor);
        self.put(blob_key, &record)?;
        if self.add_count(keys::repo_blob(repo, &descriptor.blake3), 1)? == 1 {
            for (chunk, len) in chunks {
                if self.add_count(keys::repo_chunk(repo, &chunk), 1)? == 1 {
                    inc(
                        &mut repo_stats.physical_bytes,
                        u64::from(len),
                        "repository physical bytes",
                    )?;
                }
            }
        }
        Ok(())
    }

    /// One fewer reference from `repo` to the blob (see [`Txn::acquire_blob`]).
    pub(crate) fn release_blob(
        &mut self,
        repo: &RepoName,
        blob: &Blake3,
        repo_stats: &mut RepoStats,
        stats: &mut GlobalStats,
    ) -> anyhow::Result<()> {
        let blob_key = keys::blob(blob);
        let mut record: BlobRecord = self
            .get(&blob_key)?
            .ok_or_else(|| anyhow::anyhow!("artifact references unknown blob {blob}"))?;
        let chunks = distinct_chunks(&record.descriptor);
        if self.add_count(keys::repo_blob(repo, blob), -1)? == 0 {
            for (chunk, len) in &chunks {
                if self.add_count(keys::repo_chunk(repo, chunk), -1)? == 0 {
                    dec(
                        &mut repo_stats.physical_bytes,
                        u64::from(*len),
                        "repository physical bytes",
                    )?;
                }
            }
        }
        dec(&mut record.refs, 1, "blob references")?;
        if record.refs > 0 {
            return self.put(blob_key, &record);
        }
        self.delete(blob_key)?;
        self.delete(keys::sha256_index(&record.descriptor.sha256))?;
        dec(&mut stats.blobs, 1, "blobs")?;
        for (chunk, len) in chunks {
            let refs_key = keys::chunk_refs(&chunk);
            let mut refs = self
                .get_raw(&refs_key)?
                .and_then(|raw| ChunkRefCount::decode(&raw))
                .ok_or_else(|| anyhow::anyhow!("blob {blob} references uncounted chunk {chunk}"))?;
            dec(&mut refs.count, 1, "chunk references")?;
            if refs.count == 0 {
                self.delete(refs_key)?;
                dec(&mut stats.chunks, 1, "chunks")?;
                dec(&mut stats.physical_bytes, u64::from(len), "physical bytes")?;
                // Kept until a ReleaseFreed passes this change (see keys::FREED_PREFIX).
                self.deferred.push(chunk);
            } else {
                self.put_raw(refs_key, refs.encode())?;
            }
        }
        Ok(())
    }
}

/// Adds to a stored counter. Past `u64::MAX` the state and the command disagree: the command is
/// refused (the same way on every node, counted and logged by the caller), never wrapped.
pub fn inc(counter: &mut u64, by: u64, what: &str) -> anyhow::Result<()> {
    *counter = counter
        .checked_add(by)
        .ok_or_else(|| anyhow::anyhow!("the count of {what} would overflow"))?;
    Ok(())
}

/// Subtracts from a stored counter; below zero the command is refused (see [`inc`]), never a
/// panic that would stop Raft on every node at the same entry.
pub fn dec(counter: &mut u64, by: u64, what: &str) -> anyhow::Result<()> {
    *counter = counter
        .checked_sub(by)
        .ok_or_else(|| anyhow::anyhow!("the count of {what} would go below zero"))?;
    Ok(())
}

impl Txn<'_, '_> {
    /// The chunks of every blob a command names, each once.
    fn distinct_command_chunks(&self, command: &Command) -> anyhow::Result<Vec<ChunkId>> {
        let mut seen = BTreeSet::new();
        Ok(command
            .chunks(&self.formats)?
            .into_iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| c.id)
            .collect())
    }
}

/// The chunks of a blob, each once, with their lengths.
fn distinct_chunks(descriptor: &BlobDescriptor) -> Vec<(ChunkId, u32)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for chunk in &descriptor.chunks {
        if seen.insert(chunk.id) {
            out.push((chunk.id, chunk.len));
        }
    }
    out
}
