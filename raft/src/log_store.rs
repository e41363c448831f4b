//! The Raft log and vote, stored in the node's RocksDB.
//!
//! Durability: votes are written with `sync`; appended entries are written to RocksDB at once
//! (so they are readable when `append` returns) and handed to a WAL-sync thread that fsyncs the
//! WAL and then fires the flush callbacks in order. Appends that arrive while an fsync is in
//! flight share the next one (group commit).

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogId, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::storage::{
    decode, encode, index_key, key_index, missing_cf, read_err, write_err, CF_RAFT_LOG,
    CF_RAFT_META,
};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// RocksDB-backed [`RaftLogStorage`]. Cheap to clone; clones share the database and sync thread.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<Syncer>,
}

/// The WAL-sync thread. Dropping the last handle stops the thread and waits for it, so the
/// database is never used by a thread that outlives its owners (RocksDB aborts the process
/// when a background user races its shutdown).
struct Syncer {
    tx: parking_lot::Mutex<Option<std_mpsc::Sender<LogFlushed<TypeConfig>>>>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Syncer {
    fn send(&self, callback: LogFlushed<TypeConfig>) -> Result<(), LogFlushed<TypeConfig>> {
        match self.tx.lock().as_ref() {
            Some(tx) => tx.send(callback).map_err(|unsent| unsent.0),
            None => Err(callback),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl LogStore {
    /// Opens the log store over `db`, which must have been opened with
    /// [`crate::storage::column_families`].
    pub fn new(db: Arc<DB>) -> Result<Self, StorageError> {
        db.cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| missing_cf(CF_RAFT_LOG))?;
        db.cf_handle(CF_RAFT_META)
            .ok_or_else(|| missing_cf(CF_RAFT_META))?;
        let (tx, rx) = std_mpsc::channel::<LogFlushed<TypeConfig>>();
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("raft-wal-sync".into())
            .spawn(move || wal_sync_loop(sync_db, rx))
            .map_err(write_err)?;
        let syncer = Arc::new(Syncer {
            tx: parking_lot::Mutex::new(Some(tx)),
            thread: parking_lot::Mutex::new(Some(thread)),
        });
        Ok(Self { db, syncer })
    }

    fn meta_get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let cf = self
            .db
            .cf_handle(CF_RAFT_META)
            .ok_or_else(|| missing_cf(CF_RAFT_META))?;
        match self.db.get_cf(cf, key).map_err(read_err)? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn meta_put_sync<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError> {
        let cf = self
            .db
            .cf_handle(CF_RAFT_META)
            .ok_or_else(|| missing_cf(CF_RAFT_META))?;
        let bytes = encode(value).map_err(write_err)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(cf, key, bytes, &opts).map_err(write_err)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| missing_cf(CF_RAFT_LOG))?;
        let mut iter = self.db.iterator_cf(cf, IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                let entry: Entry = decode(&value).map_err(read_err)?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }
}

fn wal_sync_loop(db: Arc<DB>, rx: std_mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = db.flush_wal(true);
        for callback in waiting {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| missing_cf(CF_RAFT_LOG))?;
        let start_key = index_key(start);
        let iter = self
            .db
            .iterator_cf(cf, IteratorMode::From(&start_key, Direction::Forward));
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let Some(index) = key_index(&key) else {
                continue;
            };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode(&value).map_err(read_err)?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta_get(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.meta_put_sync(KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta_get(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: the committed index is a hint that lets a restarted node apply sooner;
        // losing it only delays apply until the leader repeats it.
        let cf = self
            .db
            .cf_handle(CF_RAFT_META)
            .ok_or_else(|| missing_cf(CF_RAFT_META))?;
        let bytes = encode(&committed).map_err(write_err)?;
        self.db
            .put_cf(cf, KEY_COMMITTED, bytes)
            .map_err(write_err)?;
        crate::metrics::set_commit_index(committed.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta_get::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| missing_cf(CF_RAFT_LOG))?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = encode(&entry).map_err(write_err)?;
            batch.put_cf(cf, index_key(entry.get_log_id().index), bytes);
        }
        self.db.write(batch).map_err(write_err)?;
        if let Err(unsent) = self.syncer.send(callback) {
            // The sync thread is gone only if it panicked; sync inline rather than lose the ack.
            let result = self
                .db
                .flush_wal(true)
                .map_err(|e| std::io::Error::other(e.to_string()));
            unsent.log_io_completed(result);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| missing_cf(CF_RAFT_LOG))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        // delete_range's end is exclusive; u64::MAX is never a real index.
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let log_cf = self
            .db
            .cf_handle(CF_RAFT_LOG)
            .ok_or_else(|| missing_cf(CF_RAFT_LOG))?;
        let meta_cf = self
            .db
            .cf_handle(CF_RAFT_META)
            .ok_or_else(|| missing_cf(CF_RAFT_META))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            meta_cf,
            KEY_LAST_PURGED,
            encode(&log_id).map_err(write_err)?,
        );
        batch.delete_range_cf(log_cf, index_key(0), index_key(log_id.index + 1));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(write_err)
    }
}
