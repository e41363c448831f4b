//! The state-machine driver: applies committed entries to the `sm` column family, and builds
//! and installs snapshots of it.
//!
//! The application's writes for a whole `apply` call, `last_applied` and the last membership go
//! into one RocksDB write batch, so a crash either keeps all of them or none; the log (synced)
//! replays whatever the batch did not make durable. The application sees its own uncommitted
//! writes through [`ApplyBatch`]'s overlay, so several commands in one call compose.
//!
//! Snapshots are streamed, never held in memory (see [`crate::snapshot`]). Installing one
//! replaces the whole column family, which at a million artifacts is GiBs, so it is done in
//! bounded write batches rather than one: the received file is first made the current snapshot,
//! then a synced marker key (`\0installing`, holding the snapshot's meta) is written, then the
//! application key space is range-deleted and refilled from the file, and the last (synced)
//! batch sets `last_applied` and the membership and removes the marker. A crash in between
//! leaves the marker; [`StateMachineStore::new`] then redoes the install from the current
//! snapshot before anything reads the state.
//!
//! The file is longer than the others (about 640 lines of code) because the apply batch, the
//! snapshot build and the crash-safe install are one durability argument over one write-batch
//! discipline: split, the reasoning above would span three files that must change together.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftLogId, RaftSnapshotBuilder};
use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};

use crate::snapshot::{
    write_pair, PairReader, SnapshotFile, SnapshotFiles, BUILD_PREFIX, IO_BUFFER, RECV_PREFIX,
};
use crate::storage::{decode, encode, missing_cf, read_err, write_err, CF_STATE_MACHINE};
use crate::types::{
    CommandResponse, Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// Driver-owned keys in the state-machine column family start with this byte.
pub(crate) const DRIVER_PREFIX: u8 = 0;
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"\0last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"\0membership";
/// Present while a snapshot install is in progress; holds the snapshot's meta.
pub(crate) const KEY_INSTALLING: &[u8] = b"\0installing";
/// Upper bound of one write batch of a snapshot install: bounds the install's memory whatever
/// the snapshot's size, while keeping batches large enough to amortize RocksDB's per-write cost.
pub(crate) const INSTALL_BATCH_BYTES: usize = 8 << 20;

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

/// Brings `keys` (those starting with `prefix` in some committed state) up to date with an
/// overlay of pending writes over that state: puts add keys, deletes remove them.
pub fn apply_overlay(
    keys: &mut std::collections::BTreeSet<Vec<u8>>,
    overlay: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    prefix: &[u8],
) {
    for (key, value) in overlay.range(prefix.to_vec()..) {
        if !key.starts_with(prefix) {
            break;
        }
        match value {
            Some(_) => keys.insert(key.clone()),
            None => keys.remove(key),
        };
    }
}

/// Key/value pairs in key order from a base iterator, as an overlay of pending writes over it
/// would leave them: a put replaces or adds a pair, a delete hides one. Lazy, so a bounded scan
/// of a large state costs only what it reads.
pub struct Overlaid<'o, I: Iterator> {
    base: std::iter::Peekable<I>,
    overlay: std::iter::Peekable<std::collections::btree_map::Range<'o, Vec<u8>, Option<Vec<u8>>>>,
}

/// Pairs from `base` (in key order, starting at `start`) under `overlay`'s writes from `start`.
pub fn overlaid<'o, I>(
    base: I,
    overlay: &'o BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    start: &[u8],
) -> Overlaid<'o, I>
where
    I: Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>>,
{
    Overlaid {
        base: base.peekable(),
        overlay: overlay.range(start.to_vec()..).peekable(),
    }
}

impl<I> Iterator for Overlaid<'_, I>
where
    I: Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>>,
{
    type Item = anyhow::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => return self.base.next(),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((base, _))), Some((pending, _))) => {
                    base.as_slice().cmp(pending.as_slice())
                }
            };
            if order == std::cmp::Ordering::Less {
                return self.base.next();
            }
            if order == std::cmp::Ordering::Equal {
                self.base.next();
            }
            let (key, value) = self.overlay.next()?;
            if let Some(value) = value {
                return Some(Ok((key.clone(), value.clone())));
            }
        }
    }
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
        apply_overlay(&mut keys, &self.overlay, prefix);
        Ok(keys.into_iter().collect())
    }

    /// Pairs from `start` on, in key order, as this batch would leave them.
    pub fn iter_from<'s>(
        &'s self,
        start: &[u8],
    ) -> impl Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>> + 's {
        let base = self
            .db
            .iterator_cf(
                self.cf,
                rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
            )
            .map(|item| {
                item.map(|(key, value)| (key.into_vec(), value.into_vec()))
                    .map_err(anyhow::Error::from)
            });
        overlaid(base, &self.overlay, start)
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
    /// Opens the driver over `db`; snapshots are kept as files in `snapshot_dir`. Finishes a
    /// snapshot install that a crash interrupted before returning.
    pub fn new(
        db: Arc<DB>,
        handler: Arc<dyn ApplyHandler>,
        snapshot_dir: impl Into<std::path::PathBuf>,
    ) -> Result<Self, StorageError> {
        db.cf_handle(CF_STATE_MACHINE)
            .ok_or_else(|| missing_cf(CF_STATE_MACHINE))?;
        let snapshots = SnapshotFiles::open(snapshot_dir.into()).map_err(write_err)?;
        resume_interrupted_install(&db, &snapshots)?;
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

fn join_err(e: tokio::task::JoinError) -> StorageError {
    write_err(io::Error::other(format!("snapshot task failed: {e}")))
}

fn sm_cf(db: &DB) -> Result<&ColumnFamily, StorageError> {
    db.cf_handle(CF_STATE_MACHINE)
        .ok_or_else(|| missing_cf(CF_STATE_MACHINE))
}

/// How an install writes its batches. Tests lower the batch size and stop early to simulate a
/// crash in the middle of an install.
#[derive(Debug, Clone)]
pub(crate) struct InstallLimits {
    pub(crate) batch_bytes: usize,
    /// Stop (as a crash would) after this many data batches, leaving the marker in place.
    pub(crate) stop_after_batches: Option<usize>,
}

impl Default for InstallLimits {
    fn default() -> Self {
        Self {
            batch_bytes: INSTALL_BATCH_BYTES,
            stop_after_batches: None,
        }
    }
}

/// What an install wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct InstallStats {
    pub(crate) pairs: u64,
    /// Write batches, not counting the marker.
    pub(crate) batches: usize,
    pub(crate) largest_batch_bytes: usize,
    /// False when stopped by [`InstallLimits::stop_after_batches`].
    pub(crate) finished: bool,
}

struct BatchWriter<'a> {
    db: &'a DB,
    limits: &'a InstallLimits,
    stats: InstallStats,
}

impl BatchWriter<'_> {
    /// Writes `batch` (unsynced: the final synced batch makes every earlier one durable, and
    /// until then the marker makes a restart redo the install). Returns false when the limits
    /// say to stop here.
    fn write(&mut self, batch: &mut WriteBatch) -> Result<bool, StorageError> {
        let batch = std::mem::take(batch);
        self.stats.largest_batch_bytes = self.stats.largest_batch_bytes.max(batch.size_in_bytes());
        self.db.write(batch).map_err(write_err)?;
        self.stats.batches += 1;
        Ok(self.limits.stop_after_batches != Some(self.stats.batches))
    }
}

/// Replaces the state machine's contents by the snapshot whose data is `data`, in batches of at
/// most `limits.batch_bytes` (or one pair, if larger). The snapshot must already be current, so
/// that a restart can find it to redo the install the marker announces.
pub(crate) fn replace_state(
    db: &DB,
    meta: &SnapshotMeta,
    data: &Path,
    limits: &InstallLimits,
) -> Result<InstallStats, StorageError> {
    let cf = sm_cf(db)?;
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.put_cf_opt(
        cf,
        KEY_INSTALLING,
        encode(meta).map_err(write_err)?,
        &synced,
    )
    .map_err(write_err)?;
    let mut writer = BatchWriter {
        db,
        limits,
        stats: InstallStats::default(),
    };
    let mut batch = WriteBatch::default();
    // The application key space is every key not starting with `\0`. A range end must be a
    // finite key, so keys starting with 0xFF (none today) are deleted one by one.
    batch.delete_range_cf(cf, [DRIVER_PREFIX + 1], [0xFF]);
    {
        let mut iter = db.raw_iterator_cf(cf);
        iter.seek([0xFF]);
        while iter.valid() {
            if let Some(key) = iter.key() {
                if batch.size_in_bytes() + key.len() > limits.batch_bytes
                    && !writer.write(&mut batch)?
                {
                    return Ok(writer.stats);
                }
                batch.delete_cf(cf, key);
            }
            iter.next();
        }
        iter.status().map_err(read_err)?;
    }
    let file = fs::File::open(data).map_err(read_err)?;
    let mut reader = PairReader::new(BufReader::with_capacity(IO_BUFFER, file));
    let (mut key, mut value) = (Vec::new(), Vec::new());
    while reader.next_pair(&mut key, &mut value).map_err(read_err)? {
        if key.first() == Some(&DRIVER_PREFIX) {
            // The driver's keys are set from the meta below (a snapshot of an older version
            // carries them in its data).
            continue;
        }
        if !batch.is_empty()
            && batch.size_in_bytes() + key.len() + value.len() > limits.batch_bytes
            && !writer.write(&mut batch)?
        {
            return Ok(writer.stats);
        }
        batch.put_cf(cf, &key, &value);
        writer.stats.pairs += 1;
    }
    batch.put_cf(
        cf,
        KEY_LAST_APPLIED,
        encode(&meta.last_log_id).map_err(write_err)?,
    );
    batch.put_cf(
        cf,
        KEY_MEMBERSHIP,
        encode(&meta.last_membership).map_err(write_err)?,
    );
    batch.delete_cf(cf, KEY_INSTALLING);
    let batch_bytes = batch.size_in_bytes();
    db.write_opt(batch, &synced).map_err(write_err)?;
    writer.stats.batches += 1;
    writer.stats.largest_batch_bytes = writer.stats.largest_batch_bytes.max(batch_bytes);
    writer.stats.finished = true;
    Ok(writer.stats)
}

/// Redoes an install that a crash interrupted (the marker is still there), from the current
/// snapshot, which the install had made current before its first batch.
fn resume_interrupted_install(db: &DB, files: &SnapshotFiles) -> Result<(), StorageError> {
    let cf = sm_cf(db)?;
    let Some(bytes) = db.get_cf(cf, KEY_INSTALLING).map_err(read_err)? else {
        return Ok(());
    };
    let meta: SnapshotMeta = decode(&bytes).map_err(read_err)?;
    let current = files.open_current().map_err(read_err)?;
    let path = match current {
        Some((current, _, path)) if current.snapshot_id == meta.snapshot_id => path,
        other => {
            let found = other.map(|(m, _, _)| m.snapshot_id);
            return Err(read_err(io::Error::other(format!(
                "an install of snapshot {} was interrupted, but the current snapshot is {found:?}",
                meta.snapshot_id
            ))));
        }
    };
    tracing::warn!(snapshot_id = %meta.snapshot_id, "resuming a snapshot install interrupted by a crash");
    let _gate = files.gate();
    let stats = replace_state(db, &meta, &path, &InstallLimits::default())?;
    tracing::info!(snapshot_id = %meta.snapshot_id, pairs = stats.pairs, "resumed snapshot install finished");
    Ok(())
}

/// Copies a snapshot handed over from outside the snapshot directory into a synced temp file
/// of it.
fn copy_into_dir(files: &SnapshotFiles, mut source: fs::File) -> io::Result<PathBuf> {
    source.seek(io::SeekFrom::Start(0))?;
    let temp = files.temp_path(RECV_PREFIX);
    let mut out = fs::File::create(&temp)?;
    io::copy(&mut source, &mut out)?;
    out.sync_all()?;
    Ok(temp)
}

/// Makes a received snapshot current and replaces the state by it; returns its size.
fn install_received(
    db: &DB,
    files: &SnapshotFiles,
    meta: &SnapshotMeta,
    file: fs::File,
    path: PathBuf,
) -> Result<(u64, InstallStats), StorageError> {
    let own = if files.is_own_receive_file(&path) {
        path
    } else {
        copy_into_dir(files, file).map_err(write_err)?
    };
    let bytes = fs::metadata(&own).map_err(read_err)?.len();
    let gate = files.gate();
    let data = files
        .commit(&gate, meta, &own, true)
        .map_err(write_err)?
        .ok_or_else(|| write_err(io::Error::other("forced snapshot commit refused")))?;
    let stats = replace_state(db, meta, &data, &InstallLimits::default())?;
    Ok((bytes, stats))
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self.snapshots.temp_path(RECV_PREFIX);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(write_err)?;
        self.snapshots
            .remove_receive_files_except(&path)
            .map_err(write_err)?;
        Ok(Box::new(SnapshotFile::new(file, path)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let (file, path) = snapshot.into_parts();
        // Waits for tokio's in-flight writes too; the data must be on disk before it becomes
        // the current snapshot.
        file.sync_all().await.map_err(write_err)?;
        let file = file.into_std().await;
        let (db, files, owned_meta) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        // Minutes for a large snapshot: off the async worker threads.
        let (bytes, stats) = tokio::task::spawn_blocking(move || {
            install_received(&db, &files, &owned_meta, file, path)
        })
        .await
        .map_err(join_err)??;
        metrics::counter!("arca_raft_snapshots_installed_total").increment(1);
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            bytes,
            pairs = stats.pairs,
            batches = stats.batches,
            "installed raft snapshot"
        );
        self.handler.reset();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some((meta, file, path)) = self.snapshots.open_current().map_err(read_err)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::new(tokio::fs::File::from_std(file), path)),
        }))
    }
}

/// Builds a snapshot from a consistent RocksDB view of the state machine.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshots: SnapshotFiles,
}

/// Streams the state machine into a snapshot file and makes it current (unless a newer
/// snapshot became current meanwhile). Returns the meta and the opened data file.
fn build(
    db: &DB,
    files: &SnapshotFiles,
) -> Result<(SnapshotMeta, fs::File, PathBuf), StorageError> {
    // Make the state durable first: once the snapshot exists, logs up to it may be purged,
    // and the state machine must never be older than the snapshot after a crash.
    db.flush_wal(true).map_err(write_err)?;
    let cf = sm_cf(db)?;
    let view = {
        let _gate = files.gate();
        db.snapshot()
    };
    let last_applied: Option<LogId> = match view.get_cf(cf, KEY_LAST_APPLIED).map_err(read_err)? {
        Some(bytes) => decode(&bytes).map_err(read_err)?,
        None => None,
    };
    let membership: StoredMembership = match view.get_cf(cf, KEY_MEMBERSHIP).map_err(read_err)? {
        Some(bytes) => decode(&bytes).map_err(read_err)?,
        None => StoredMembership::default(),
    };
    let temp = files.temp_path(BUILD_PREFIX);
    let written = (|| -> Result<u64, StorageError> {
        let file = fs::File::create(&temp).map_err(write_err)?;
        let mut out = BufWriter::with_capacity(IO_BUFFER, file);
        let mut read_opts = rocksdb::ReadOptions::default();
        // A full scan: keep it from evicting the block cache that serves reads.
        read_opts.fill_cache(false);
        read_opts.set_readahead_size(2 << 20);
        let mut iter = view.raw_iterator_cf_opt(cf, read_opts);
        // Only the application's keys; the driver's travel in the meta.
        iter.seek([DRIVER_PREFIX + 1]);
        let mut pairs = 0u64;
        while iter.valid() {
            if let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                write_pair(&mut out, key, value).map_err(write_err)?;
                pairs += 1;
            }
            iter.next();
        }
        iter.status().map_err(read_err)?;
        let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        Ok(pairs)
    })();
    drop(view);
    let pairs = match written {
        Ok(pairs) => pairs,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
    };
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
    let gate = files.gate();
    let committed = files
        .commit(&gate, &meta, &temp, false)
        .map_err(write_err)?;
    drop(gate);
    let path = match committed {
        Some(path) => path,
        None => {
            // A newer snapshot (installed from the leader) became current while this one was
            // built: hand this one to openraft, which only needs its meta, but do not keep it.
            tracing::info!(snapshot_id = %meta.snapshot_id, "built snapshot superseded before it was committed");
            let file = fs::File::open(&temp).map_err(read_err)?;
            fs::remove_file(&temp).map_err(write_err)?;
            return Ok((meta, file, temp));
        }
    };
    let file = fs::File::open(&path).map_err(read_err)?;
    let bytes = file.metadata().map_err(read_err)?.len();
    tracing::info!(last_log_id = ?meta.last_log_id, bytes, pairs, "built raft snapshot");
    Ok((meta, file, path))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (db, files) = (self.db.clone(), self.snapshots.clone());
        // Minutes for a large state machine: off the async worker threads.
        let (meta, file, path) = tokio::task::spawn_blocking(move || build(&db, &files))
            .await
            .map_err(join_err)??;
        metrics::counter!("arca_raft_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::new(tokio::fs::File::from_std(file), path)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::column_families;

    struct NoApp;

    impl ApplyHandler for NoApp {
        fn apply(
            &self,
            _batch: &mut ApplyBatch<'_>,
            _log_id: &LogId,
            _command: &[u8],
        ) -> anyhow::Result<Vec<u8>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn an_overlay_replaces_adds_and_hides_base_pairs_in_key_order() {
        let base: Vec<anyhow::Result<(Vec<u8>, Vec<u8>)>> = ["a", "c", "e", "g"]
            .iter()
            .map(|k| Ok((k.as_bytes().to_vec(), b"base".to_vec())))
            .collect();
        let overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            ("b", Some("new")),
            ("c", None),
            ("e", Some("put")),
            ("h", Some("new")),
            ("i", None),
        ]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
        .collect();
        let merged: Vec<(String, String)> = overlaid(base.into_iter(), &overlay, b"")
            .map(|item| {
                let (k, v) = item.expect("pair");
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("a", "base"),
            ("b", "new"),
            ("e", "put"),
            ("g", "base"),
            ("h", "new"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(merged, expected);
    }

    fn open_db(path: &Path) -> Arc<DB> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        Arc::new(DB::open_cf_descriptors(&options, path, column_families()).expect("open rocksdb"))
    }

    fn open_store(dir: &Path, name: &str) -> (Arc<DB>, StateMachineStore) {
        let db = open_db(&dir.join(format!("{name}-db")));
        let store = StateMachineStore::new(
            db.clone(),
            Arc::new(NoApp),
            dir.join(format!("{name}-snapshots")),
        )
        .expect("open store");
        (db, store)
    }

    /// Every application pair of the state machine (the driver's keys are checked through
    /// `applied_state`).
    fn contents(db: &DB) -> Vec<(Vec<u8>, Vec<u8>)> {
        let cf = sm_cf(db).expect("sm cf");
        db.iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.expect("iterate");
                (k.to_vec(), v.to_vec())
            })
            .filter(|(k, _)| k.first() != Some(&DRIVER_PREFIX))
            .collect()
    }

    fn assert_same(a: &[(Vec<u8>, Vec<u8>)], b: &[(Vec<u8>, Vec<u8>)]) {
        // Not assert_eq!: a mismatch would print megabytes.
        assert_eq!(a.len(), b.len(), "pair counts");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("pair {i} differs: key {:?} vs {:?}", a[i].0, b[i].0);
        }
    }

    fn put(db: &DB, key: &[u8], value: &[u8]) {
        let cf = sm_cf(db).expect("sm cf");
        db.put_cf(cf, key, value).expect("put");
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    /// A source state machine with `n` pairs and last_applied (3, 40), and its built snapshot.
    async fn source_with_snapshot(dir: &Path, n: usize) -> (Arc<DB>, Snapshot) {
        let (db, mut store) = open_store(dir, "source");
        for i in 0..n {
            put(&db, format!("k/{i:06}").as_bytes(), &[i as u8; 100]);
        }
        put(&db, b"\xff\xffhigh", b"keys past any finite range end");
        let entry = Entry {
            log_id: log_id(3, 40),
            payload: EntryPayload::Blank,
        };
        store.apply([entry]).await.expect("apply");
        let snapshot = store
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        (db, snapshot)
    }

    /// A target whose state differs from the source: stale keys that must vanish, among them
    /// one past 0xFF and one sorting after every source key.
    fn stale_target(dir: &Path) -> Arc<DB> {
        let (db, _) = open_store(dir, "target");
        put(&db, b"k/000005", b"old value");
        put(&db, b"stale", b"gone after install");
        put(&db, b"\xff\xffstale", b"gone after install");
        put(&db, b"\xff", b"gone after install");
        db
    }

    async fn receive(store: &mut StateMachineStore, snapshot: &mut Snapshot) -> Box<SnapshotFile> {
        use tokio::io::AsyncSeekExt;
        snapshot
            .snapshot
            .seek(io::SeekFrom::Start(0))
            .await
            .expect("rewind");
        let mut received = store.begin_receiving_snapshot().await.expect("begin");
        tokio::io::copy(&mut *snapshot.snapshot, &mut *received)
            .await
            .expect("copy");
        tokio::io::AsyncWriteExt::shutdown(&mut *received)
            .await
            .expect("shutdown");
        received
    }

    #[tokio::test]
    async fn install_replaces_everything_in_bounded_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (source_db, mut snapshot) = source_with_snapshot(dir.path(), 5_000).await;
        let target_db = stale_target(dir.path());
        drop(target_db);
        let (target_db, mut target) = open_store(dir.path(), "target");
        let received = receive(&mut target, &mut snapshot).await;
        let (file, path) = received.into_parts();
        file.sync_all().await.expect("sync");
        let files = target.snapshots.clone();
        let gate = files.gate();
        let data = files
            .commit(&gate, &snapshot.meta, &path, true)
            .expect("commit")
            .expect("forced commit");
        let limits = InstallLimits {
            batch_bytes: 64 << 10,
            stop_after_batches: None,
        };
        let stats = replace_state(&target_db, &snapshot.meta, &data, &limits).expect("install");
        assert!(stats.finished);
        assert_eq!(stats.pairs, 5_001);
        assert!(stats.batches > 5, "{stats:?}");
        assert!(
            stats.largest_batch_bytes <= limits.batch_bytes,
            "{stats:?} within {}",
            limits.batch_bytes
        );
        assert_same(&contents(&target_db), &contents(&source_db));
    }

    #[tokio::test]
    async fn an_install_cut_short_by_a_crash_is_finished_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (source_db, mut snapshot) = source_with_snapshot(dir.path(), 5_000).await;
        let target_db = stale_target(dir.path());
        drop(target_db);
        {
            let (target_db, mut target) = open_store(dir.path(), "target");
            let received = receive(&mut target, &mut snapshot).await;
            let (file, path) = received.into_parts();
            file.sync_all().await.expect("sync");
            let files = target.snapshots.clone();
            let gate = files.gate();
            let data = files
                .commit(&gate, &snapshot.meta, &path, true)
                .expect("commit")
                .expect("forced commit");
            let limits = InstallLimits {
                batch_bytes: 64 << 10,
                stop_after_batches: Some(3),
            };
            let stats =
                replace_state(&target_db, &snapshot.meta, &data, &limits).expect("partial install");
            assert!(!stats.finished);
            assert_eq!(stats.batches, 3);
            // What a crash here leaves: part of the snapshot, the old last_applied, the marker.
            let cf = sm_cf(&target_db).expect("cf");
            assert!(target_db.get_cf(cf, KEY_INSTALLING).expect("get").is_some());
            assert_ne!(contents(&target_db).len(), contents(&source_db).len());
            let (last_applied, _) = read_applied_state(&target_db).expect("state");
            assert_eq!(last_applied, None);
        }
        // Reopening finishes the install before anything can read the state.
        let (target_db, mut target) = open_store(dir.path(), "target");
        assert_same(&contents(&target_db), &contents(&source_db));
        let (last_applied, membership) = target.applied_state().await.expect("state");
        assert_eq!(last_applied, Some(log_id(3, 40)));
        assert_eq!(membership, snapshot.meta.last_membership);
        let current = target
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        assert_eq!(current.meta, snapshot.meta);
    }

    #[tokio::test]
    async fn a_received_snapshot_becomes_current_and_old_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_source_db, mut snapshot) = source_with_snapshot(dir.path(), 100).await;
        let (_target_db, mut target) = open_store(dir.path(), "target");
        // An abandoned receive, then a complete one.
        let abandoned = target.begin_receiving_snapshot().await.expect("begin");
        let abandoned_path = abandoned.path().to_path_buf();
        drop(abandoned);
        let received = receive(&mut target, &mut snapshot).await;
        assert!(
            !abandoned_path.exists(),
            "a new receive removes the abandoned one"
        );
        target
            .install_snapshot(&snapshot.meta, received)
            .await
            .expect("install");
        // A second build replaces the first data file.
        let first = target
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        let first_path = first.snapshot.path().to_path_buf();
        let second = target
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        assert_eq!(second.meta.last_log_id, snapshot.meta.last_log_id);
        assert!(!first_path.exists(), "superseded data file removed");
        let names: Vec<String> = fs::read_dir(dir.path().join("target-snapshots"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "one data file and `current`: {names:?}");
    }
}
