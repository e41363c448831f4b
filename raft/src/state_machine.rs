//! The state-machine driver: applies committed entries to the `sm` column family.
//!
//! The application's writes for a whole `apply` call, `last_applied` and the last membership go
//! into one RocksDB write batch, so a crash either keeps all of them or none; the log (synced)
//! replays whatever the batch did not make durable. The application sees its own uncommitted
//! writes through [`ApplyBatch`]'s overlay, so several commands in one call compose.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftLogId, RaftSnapshotBuilder};
use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};

use crate::snapshot::{self, SnapshotFiles};
use crate::storage::{decode, encode, missing_cf, read_err, write_err, CF_STATE_MACHINE};
use crate::types::{
    CommandResponse, Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// Driver-owned keys in the state-machine column family start with this byte.
pub(crate) const DRIVER_PREFIX: u8 = 0;
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"\0last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"\0membership";

/// The application side of the state machine.
pub trait ApplyHandler: Send + Sync + 'static {
    /// Applies one committed command and returns the response for the proposer.
    ///
    /// Must be deterministic: the same state and command must produce the same writes and the
    /// same response on every node, at every replay. Business failures (a missing repository,
    /// say) are part of the response; an `Err` means storage is broken and stops the node.
    fn apply(
        &self,
        batch: &mut ApplyBatch<'_>,
        log_id: &LogId,
        command: &[u8],
    ) -> anyhow::Result<Vec<u8>>;

    /// Called once the writes of an `apply` call are committed to RocksDB.
    fn applied(&self, _last_applied: &LogId) {}

    /// Called after the whole state was replaced by an installed snapshot.
    fn reset(&self) {}
}

/// The writes of one `apply` call, with read-your-own-writes over the committed state.
pub struct ApplyBatch<'a> {
    db: &'a DB,
    cf: &'a ColumnFamily,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> ApplyBatch<'a> {
    fn new(db: &'a DB, cf: &'a ColumnFamily) -> Self {
        Self {
            db,
            cf,
            overlay: BTreeMap::new(),
        }
    }

    /// Reads a key, seeing this batch's own writes first.
    pub fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(pending) = self.overlay.get(key) {
            return Ok(pending.clone());
        }
        Ok(self.db.get_cf(self.cf, key)?)
    }

    /// Writes a key. Keys must not start with `\0` (reserved for the driver).
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) -> anyhow::Result<()> {
        let key = key.into();
        anyhow::ensure!(
            key.first() != Some(&DRIVER_PREFIX),
            "application keys must not start with \\0"
        );
        self.overlay.insert(key, Some(value));
        Ok(())
    }

    /// Deletes a key. Keys must not start with `\0` (reserved for the driver).
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        let key = key.into();
        anyhow::ensure!(
            key.first() != Some(&DRIVER_PREFIX),
            "application keys must not start with \\0"
        );
        self.overlay.insert(key, None);
        Ok(())
    }

    /// Every key starting with `prefix`, in order, as this batch would leave them (committed
    /// keys plus this batch's puts, minus its deletes).
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut keys = std::collections::BTreeSet::new();
        let iter = self.db.iterator_cf(
            self.cf,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            keys.insert(key.to_vec());
        }
        for (key, value) in self.overlay.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(keys.into_iter().collect())
    }

    fn into_write_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in self.overlay {
            match value {
                Some(value) => batch.put_cf(self.cf, key, value),
                None => batch.delete_cf(self.cf, key),
            }
        }
        batch
    }
}

/// RocksDB-backed [`RaftStateMachine`].
pub struct StateMachineStore {
    db: Arc<DB>,
    handler: Arc<dyn ApplyHandler>,
    snapshots: SnapshotFiles,
}

impl StateMachineStore {
    /// Opens the driver over `db`; snapshots are kept as files in `snapshot_dir`.
    pub fn new(
        db: Arc<DB>,
        handler: Arc<dyn ApplyHandler>,
        snapshot_dir: impl Into<std::path::PathBuf>,
    ) -> Result<Self, StorageError> {
        db.cf_handle(CF_STATE_MACHINE)
            .ok_or_else(|| missing_cf(CF_STATE_MACHINE))?;
        let snapshots = SnapshotFiles::new(snapshot_dir.into()).map_err(write_err)?;
        Ok(Self {
            db,
            handler,
            snapshots,
        })
    }

    fn cf(&self) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(CF_STATE_MACHINE)
            .ok_or_else(|| missing_cf(CF_STATE_MACHINE))
    }
}

/// Reads `last_applied` and the membership as committed in the state machine.
pub fn read_applied_state(db: &DB) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let cf = db
        .cf_handle(CF_STATE_MACHINE)
        .ok_or_else(|| missing_cf(CF_STATE_MACHINE))?;
    let last_applied = match db.get_cf(cf, KEY_LAST_APPLIED).map_err(read_err)? {
        Some(bytes) => decode(&bytes).map_err(read_err)?,
        None => None,
    };
    let membership = match db.get_cf(cf, KEY_MEMBERSHIP).map_err(read_err)? {
        Some(bytes) => decode(&bytes).map_err(read_err)?,
        None => StoredMembership::default(),
    };
    Ok((last_applied, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        read_applied_state(&self.db)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.cf()?;
        let mut batch = ApplyBatch::new(&self.db, cf);
        let mut responses = Vec::new();
        let mut last_applied: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        for entry in entries {
            let log_id = *entry.get_log_id();
            let response = match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(command) => {
                    match self.handler.apply(&mut batch, &log_id, &command.0) {
                        Ok(response) => response,
                        Err(e) => {
                            let source = openraft::AnyError::error(format!("{e:#}"));
                            return Err(
                                openraft::StorageIOError::<NodeId>::apply(log_id, source).into()
                            );
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m.clone()));
                    Vec::new()
                }
            };
            last_applied = Some(log_id);
            responses.push(CommandResponse(response));
        }
        let Some(last_applied) = last_applied else {
            return Ok(responses);
        };
        let mut write = batch.into_write_batch();
        write.put_cf(
            cf,
            KEY_LAST_APPLIED,
            encode(&Some(last_applied)).map_err(write_err)?,
        );
        if let Some(membership) = &membership {
            write.put_cf(cf, KEY_MEMBERSHIP, encode(membership).map_err(write_err)?);
        }
        // Not synced: the synced Raft log replays anything this batch loses in a crash.
        self.db.write(write).map_err(write_err)?;
        self.handler.applied(&last_applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let pairs = snapshot::decode_pairs(&data).map_err(read_err)?;
        let cf = self.cf()?;
        let mut write = WriteBatch::default();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (key, _) = item.map_err(read_err)?;
            write.delete_cf(cf, key);
        }
        for (key, value) in pairs {
            write.put_cf(cf, key, value);
        }
        write.put_cf(
            cf,
            KEY_LAST_APPLIED,
            encode(&meta.last_log_id).map_err(write_err)?,
        );
        write.put_cf(
            cf,
            KEY_MEMBERSHIP,
            encode(&meta.last_membership).map_err(write_err)?,
        );
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(write, &opts).map_err(write_err)?;
        self.snapshots.save(meta, &data).map_err(write_err)?;
        metrics::counter!("arca_raft_snapshots_installed_total").increment(1);
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "installed raft snapshot");
        self.handler.reset();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some((meta, data)) = self.snapshots.load().map_err(read_err)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot from a consistent RocksDB view of the state machine.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshots: SnapshotFiles,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Make the state durable first: once the snapshot exists, logs up to it may be purged,
        // and the state machine must never be older than the snapshot after a crash.
        self.db.flush_wal(true).map_err(write_err)?;
        let cf = self
            .db
            .cf_handle(CF_STATE_MACHINE)
            .ok_or_else(|| missing_cf(CF_STATE_MACHINE))?;
        let view = self.db.snapshot();
        let mut read_opts = rocksdb::ReadOptions::default();
        read_opts.set_snapshot(&view);
        let last_applied: Option<LogId> =
            match view.get_cf(cf, KEY_LAST_APPLIED).map_err(read_err)? {
                Some(bytes) => decode(&bytes).map_err(read_err)?,
                None => None,
            };
        let membership: StoredMembership =
            match view.get_cf(cf, KEY_MEMBERSHIP).map_err(read_err)? {
                Some(bytes) => decode(&bytes).map_err(read_err)?,
                None => StoredMembership::default(),
            };
        let mut data = Vec::new();
        for item in self
            .db
            .iterator_cf_opt(cf, read_opts, rocksdb::IteratorMode::Start)
        {
            let (key, value) = item.map_err(read_err)?;
            snapshot::encode_pair(&mut data, &key, &value);
        }
        let snapshot_id = match &last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id.term,
                log_id.index,
                unique_suffix()
            ),
            None => format!("empty-{}", unique_suffix()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.snapshots.save(&meta, &data).map_err(write_err)?;
        metrics::counter!("arca_raft_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }
}

/// A suffix that makes snapshot ids unique across rebuilds at the same log id.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}
