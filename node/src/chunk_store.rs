//! The node-local chunk store: chunk bytes by blake3 name, in RocksDB with integrated BlobDB.
//!
//! Chunks live outside Raft: they are content-addressed, so any node may hold any chunk and
//! writing one twice is harmless. What makes a chunk *live* is a reference count in the state
//! machine; what keeps a chunk that an upload in progress depends on alive is a **pin** here.
//! Deletion ([`ChunkStore::delete_unless`]) holds the pin lock while it checks both, and an
//! upload pins a chunk before it looks for it, so a chunk is never deleted under an upload that
//! decided to reuse it.
//!
//! Presence is not durability: a chunk written a moment ago without the WAL is visible at once
//! and lost on `kill -9` until its memtable is flushed. [`durability::Tracker`] knows which
//! writes have reached the disk; [`ChunkStore::make_durable`] and [`ChunkStore::is_durable`] are
//! what uploads and peers rely on. The database flushes column families atomically, so a chunk's
//! bytes and its index entry are never persisted one without the other.

pub mod durability;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions, WriteBatch, DB,
};

use crate::digest::ChunkId;
use crate::error::{Error, Result};
use crate::metrics;
pub use durability::Durability;
use durability::Tracker;

/// Chunk bytes, keyed by the 32-byte blake3 name. Values go to BlobDB blob files.
pub const CF_CHUNKS: &str = "chunks";
/// Small per-chunk records (length, write time), so presence checks and sweeps never read the
/// chunk bytes.
pub const CF_CHUNK_INDEX: &str = "chunk_index";

/// What the index knows about a stored chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    pub len: u32,
    pub written_at_ms: i64,
}

impl ChunkEntry {
    fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.len.to_be_bytes());
        out[4..].copy_from_slice(&self.written_at_ms.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            len: u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?),
            written_at_ms: i64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?),
        })
    }
}

/// Blob garbage collection waits for garbage of at least 1/this of the blob files' bytes.
const BLOB_GC_STORE_FRACTION: u64 = 10;

/// Share of the oldest blob files whose live chunks a blob garbage collection relocates.
const BLOB_GC_AGE_CUTOFF: f64 = 0.5;

/// Column family options for the chunk store.
pub fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let mut chunks = Options::default();
    chunks.set_enable_blob_files(true);
    chunks.set_min_blob_size(4096);
    chunks.set_blob_file_size(256 << 20);
    // Artifacts are mostly compressed already (tarballs, layers, wheels): don't spend CPU on them.
    chunks.set_blob_compression_type(DBCompressionType::None);
    // Blob garbage collection stays off during normal compactions: with it on, every compaction
    // relocated the live blobs of the oldest files, which cost a third of a large push's CPU
    // and rewrote chunk bytes that nobody had deleted (docs/benchmarks.md). The collector turns
    // it on for one compaction once enough chunks were deleted
    // ([`ChunkStore::collect_blob_garbage`]).
    chunks.set_enable_blob_gc(false);
    chunks.set_blob_gc_age_cutoff(BLOB_GC_AGE_CUTOFF);
    // Bound memtable memory: large chunk values sit in the memtable until flushed to blob files.
    chunks.set_write_buffer_size(16 << 20);
    chunks.set_max_write_buffer_number(2);
    let mut index = Options::default();
    index.set_compression_type(DBCompressionType::Lz4);
    vec![
        ColumnFamilyDescriptor::new(CF_CHUNKS, chunks),
        ColumnFamilyDescriptor::new(CF_CHUNK_INDEX, index),
    ]
}

/// Most leases held at once. A lease is 72 bytes or so, so this bounds the table near 75 MiB;
/// past it, `HasChunks` is refused (the writer retries or fails over to another peer).
pub const MAX_LEASES: usize = 1 << 20;

/// Chunks pending durability past this many trigger a flush and a sync on the next write, so an
/// abandoned upload cannot grow the tracker without bound.
const MAX_PENDING_CHUNKS: usize = 1 << 20;

/// How many times [`ChunkStore::make_durable`] re-checks chunks another thread was still
/// writing when it looked.
const DURABLE_ROUNDS: usize = 4;

/// A page of [`ChunkStore::unindexed_page`].
#[derive(Debug, Default)]
pub struct UnindexedPage {
    /// Chunks whose bytes are stored without an index entry, with their lengths.
    pub unindexed: Vec<(ChunkId, u32)>,
    /// The last chunk visited, where the next page starts; `None` at the end of the store.
    pub last: Option<ChunkId>,
    /// Chunk bytes read for this page.
    pub bytes_read: u64,
}

/// What [`ChunkStore::settle_unindexed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unindexed {
    Kept,
    Reindexed,
    Deleted,
}

impl Unindexed {
    pub fn label(self) -> &'static str {
        match self {
            Unindexed::Kept => "kept",
            Unindexed::Reindexed => "reindexed",
            Unindexed::Deleted => "deleted",
        }
    }
}

/// The node's chunks, with the pin table of uploads in progress and the lease table of peers'
/// writes in flight.
pub struct ChunkStore {
    db: Arc<DB>,
    pins: Mutex<HashMap<ChunkId, u32>>,
    leases: Mutex<Leases>,
    /// Bytes of chunks deleted since the last blob garbage collection.
    deleted_bytes: std::sync::atomic::AtomicU64,
    /// Which writes are known to be on disk.
    tracker: Mutex<Tracker>,
}

/// Chunks leased to peers whose writes rely on this node keeping them, each until a deadline.
/// Expired leases are dropped from the front of the deadline order, so granting a lease costs
/// the leases it expires, never a scan of all of them.
#[derive(Default)]
struct Leases {
    until: HashMap<ChunkId, Instant>,
    by_deadline: BTreeSet<(Instant, ChunkId)>,
}

/// The lease table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasesExhausted;

impl Leases {
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if self.until.get(&id) == Some(&deadline) {
                self.until.remove(&id);
            }
        }
    }

    fn grant(&mut self, ids: &[ChunkId], ttl: Duration) -> Result<(), LeasesExhausted> {
        let now = Instant::now();
        self.expire(now);
        let fresh = ids.iter().filter(|id| !self.until.contains_key(id)).count();
        if self.until.len() + fresh > MAX_LEASES {
            return Err(LeasesExhausted);
        }
        let deadline = now + ttl;
        for id in ids {
            match self.until.insert(*id, deadline) {
                Some(old) if old > deadline => {
                    // Never shorten a lease someone else holds.
                    self.until.insert(*id, old);
                    continue;
                }
                Some(old) => {
                    self.by_deadline.remove(&(old, *id));
                }
                None => {}
            }
            self.by_deadline.insert((deadline, *id));
        }
        Ok(())
    }

    fn holds(&self, id: &ChunkId) -> bool {
        self.until
            .get(id)
            .is_some_and(|deadline| *deadline > Instant::now())
    }

    fn len(&self) -> usize {
        self.until.len()
    }
}

impl ChunkStore {
    pub fn new(db: Arc<DB>) -> Result<Arc<Self>> {
        for cf in [CF_CHUNKS, CF_CHUNK_INDEX] {
            if db.cf_handle(cf).is_none() {
                return Err(Error::Internal(format!("column family {cf} is missing")));
            }
        }
        Ok(Arc::new(Self {
            db,
            pins: Mutex::new(HashMap::new()),
            leases: Mutex::new(Leases::default()),
            deleted_bytes: Default::default(),
            tracker: Mutex::new(Tracker::default()),
        }))
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Internal(format!("column family {name} is missing")))
    }

    /// Whether this node holds the chunk (durably or not: see [`ChunkStore::is_durable`]).
    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes())?
            .is_some())
    }

    pub fn entry(&self, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        let raw = self
            .db
            .get_pinned_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes())?;
        Ok(raw.and_then(|r| ChunkEntry::decode(&r)))
    }

    /// Stores a chunk through the WAL. Not synced: call [`ChunkStore::sync`] or
    /// [`ChunkStore::make_durable`] before relying on it.
    pub fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        self.write(id, data, Durability::Logged)
    }

    /// Stores a chunk, through the WAL or not. Whoever relies on it must call
    /// [`ChunkStore::make_durable`] first; giving up needs nothing (the write stays pending
    /// until a sync or a flush covers it, whoever else relies on it meanwhile).
    pub fn write(&self, id: &ChunkId, data: &[u8], how: Durability) -> Result<()> {
        let too_many = {
            let mut tracker = self.tracker.lock();
            tracker.begin(*id, how);
            tracker.len() > MAX_PENDING_CHUNKS
        };
        let result = self.write_chunk(id, data, how == Durability::Logged);
        self.tracker.lock().complete(*id, how);
        result?;
        if too_many {
            self.flush_and_sync()?;
        }
        Ok(())
    }

    /// Whether every write of the chunk this node made is on disk (a chunk this node did not
    /// write since it started, or never held, counts as durable: check presence separately).
    pub fn is_durable(&self, id: &ChunkId) -> bool {
        self.tracker.lock().is_durable(id)
    }

    /// Makes `ids` durable here: flushes the chunk column families if one of them was written
    /// only without the WAL, else syncs the WAL if one was written through it, else does
    /// nothing. Covers chunks other uploads wrote a moment ago as well as this one's.
    pub fn make_durable(&self, ids: &[ChunkId]) -> Result<()> {
        for _ in 0..DURABLE_ROUNDS {
            let needs = self.tracker.lock().needs(ids);
            if needs.flush {
                self.flush()?;
            } else if needs.sync {
                self.sync()?;
            }
            if !needs.in_flight {
                return Ok(());
            }
            // Another thread was still writing one of them: its write completes in
            // microseconds; cover it with the next round.
            std::thread::yield_now();
        }
        let needs = self.tracker.lock().needs(ids);
        if needs == durability::Needs::default() {
            return Ok(());
        }
        self.flush_and_sync()
    }

    /// Flushes the chunk column families, both in one atomic flush (an index entry is never
    /// persisted without its bytes, nor the bytes without the entry).
    fn flush(&self) -> Result<()> {
        let horizon = self.tracker.lock().horizon();
        let options = rocksdb::FlushOptions::default();
        self.db
            .flush_cfs_opt(&[self.cf(CF_CHUNKS)?, self.cf(CF_CHUNK_INDEX)?], &options)?;
        self.tracker.lock().flushed(horizon);
        metrics::chunk_flush();
        Ok(())
    }

    fn flush_and_sync(&self) -> Result<()> {
        self.flush()?;
        self.sync()
    }

    fn write_chunk(&self, id: &ChunkId, data: &[u8], logged: bool) -> Result<()> {
        let entry = ChunkEntry {
            len: u32::try_from(data.len())
                .map_err(|_| Error::Internal("chunk larger than 4 GiB".into()))?,
            written_at_ms: crate::model::now_ms(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CHUNKS)?, id.as_bytes(), data);
        batch.put_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes(), entry.encode());
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(!logged);
        self.db.write_opt(batch, &options)?;
        metrics::chunk_written(data.len());
        Ok(())
    }

    /// Stores a chunk received from elsewhere after checking it against its name.
    pub fn put_verified(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        if blake3::hash(data).as_bytes() != id.as_bytes() {
            return Err(Error::CorruptChunk { chunk: id.to_hex() });
        }
        self.put(id, data)
    }

    /// Makes every earlier logged chunk write durable (one WAL fsync).
    pub fn sync(&self) -> Result<()> {
        let horizon = self.tracker.lock().horizon();
        self.db.flush_wal(true)?;
        self.tracker.lock().synced(horizon);
        Ok(())
    }

    /// Reads a chunk and checks it against its name. A chunk whose bytes do not hash to its name
    /// is never returned: the read fails with `CORRUPT_CHUNK` and the corruption is counted.
    pub fn read(&self, id: &ChunkId) -> Result<Bytes> {
        // RocksDB's own checksum of the blob record is skipped: the blake3 check below covers
        // every byte and is stronger, and this build's CRC32C is the portable one (no SSE4.2),
        // which cost 42 % of a large download's CPU (docs/benchmarks.md).
        let mut options = ReadOptions::default();
        options.set_verify_checksums(false);
        let Some(data) = self
            .db
            .get_pinned_cf_opt(self.cf(CF_CHUNKS)?, id.as_bytes(), &options)?
        else {
            return Err(Error::MissingChunk { chunk: id.to_hex() });
        };
        if blake3::hash(&data).as_bytes() != id.as_bytes() {
            metrics::corrupt_chunk();
            tracing::error!(chunk = %id, "chunk bytes do not match their blake3 name; refusing to serve");
            return Err(Error::CorruptChunk { chunk: id.to_hex() });
        }
        Ok(Bytes::copy_from_slice(&data))
    }

    /// How many distinct chunks uploads in progress have pinned.
    pub fn pinned(&self) -> usize {
        self.pins.lock().len()
    }

    /// Pins chunks so that no collector deletes them until the guard is dropped.
    pub fn pin_guard(self: &Arc<Self>) -> PinGuard {
        PinGuard {
            store: self.clone(),
            ids: Vec::new(),
        }
    }

    /// Deletes the chunk unless it is pinned, leased, or `referenced` says it is still in use.
    /// The pin and lease locks are held across the check and the delete. Returns whether it
    /// deleted.
    pub fn delete_unless(
        &self,
        id: &ChunkId,
        referenced: impl FnOnce(&ChunkId) -> Result<bool>,
    ) -> Result<bool> {
        let pins = self.pins.lock();
        let leases = self.leases.lock();
        if pins.contains_key(id) || leases.holds(id) || referenced(id)? {
            return Ok(false);
        }
        let len = self.entry(id)?.map_or(0, |e| u64::from(e.len));
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_CHUNKS)?, id.as_bytes());
        batch.delete_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes());
        self.db.write(batch)?;
        self.tracker.lock().forget(id);
        drop(leases);
        drop(pins);
        self.deleted_bytes
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        metrics::chunk_deleted();
        Ok(true)
    }

    /// Bytes in blob files that no chunk uses any more, as far as RocksDB has accounted them,
    /// plus chunks deleted since the last collection (not accounted until a compaction).
    pub fn blob_garbage_bytes(&self) -> Result<u64> {
        let accounted = self
            .db
            .property_int_value_cf(self.cf(CF_CHUNKS)?, "rocksdb.live-blob-file-garbage-size")?
            .unwrap_or(0);
        Ok(accounted
            + self
                .deleted_bytes
                .load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Bytes of blob files on disk.
    pub fn blob_file_bytes(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(CF_CHUNKS)?, "rocksdb.total-blob-file-size")?
            .unwrap_or(0))
    }

    /// Reclaims the disk space of deleted chunks once at least `min_garbage` bytes of them
    /// accumulated: one compaction of the chunk column family with blob garbage collection on,
    /// which relocates the live chunks of the oldest blob files and drops those files. Returns
    /// whether it ran.
    pub fn collect_blob_garbage(&self, min_garbage: u64) -> Result<bool> {
        // The compaction relocates the live chunks of the oldest half of the blob files: worth
        // it only once the garbage is a tenth of the store, so that reclaiming 256 MiB never
        // rewrites terabytes (at most five bytes rewritten per byte reclaimed).
        let threshold = min_garbage
            .max(self.blob_file_bytes()? / BLOB_GC_STORE_FRACTION)
            .max(1);
        if self.blob_garbage_bytes()? < threshold {
            return Ok(false);
        }
        let cf = self.cf(CF_CHUNKS)?;
        self.deleted_bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.db
            .set_options_cf(cf, &[("enable_blob_garbage_collection", "true")])?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        self.db
            .set_options_cf(cf, &[("enable_blob_garbage_collection", "false")])?;
        Ok(true)
    }

    /// Chunk bytes that have no index entry, among the next `limit` stored after `after` (in
    /// id order). Such bytes come only from crashes of versions before the chunk column
    /// families were flushed atomically; every write and delete since covers both. Reading a
    /// page reads the chunks' bytes (BlobDB loads values as it iterates): the page says how
    /// many, so its caller can pace itself. `last` is `None` once the end was reached.
    pub fn unindexed_page(&self, after: Option<&ChunkId>, limit: usize) -> Result<UnindexedPage> {
        let cf = self.cf(CF_CHUNKS)?;
        let index = self.cf(CF_CHUNK_INDEX)?;
        let mode = match after {
            Some(id) => rocksdb::IteratorMode::From(id.as_bytes(), rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        let mut options = ReadOptions::default();
        options.set_verify_checksums(false);
        options.fill_cache(false);
        let mut page = UnindexedPage::default();
        let mut visited = 0;
        for item in self.db.iterator_cf_opt(cf, options, mode) {
            let (key, value) = item?;
            if after.is_some_and(|a| key.as_ref() == a.as_bytes()) {
                continue;
            }
            if visited == limit {
                return Ok(page);
            }
            visited += 1;
            page.bytes_read += value.len() as u64;
            let Some(id) = ChunkId::from_slice(&key) else {
                continue;
            };
            page.last = Some(id);
            if self.db.get_pinned_cf(index, id.as_bytes())?.is_none() {
                page.unindexed.push((id, value.len() as u32));
            }
        }
        page.last = None;
        Ok(page)
    }

    /// Settles chunk bytes found without an index entry: a chunk something references gets its
    /// entry back (it was held all along); one nothing references is deleted. Left alone while
    /// it is pinned, leased, being written, or indexed by now (written again since the page was
    /// read): the pin, lease and durability locks are held across the check and the change, and
    /// every write announces itself to the durability tracker before it writes.
    pub fn settle_unindexed(
        &self,
        id: &ChunkId,
        len: u32,
        referenced: impl FnOnce(&ChunkId) -> Result<bool>,
    ) -> Result<Unindexed> {
        let pins = self.pins.lock();
        let leases = self.leases.lock();
        let tracker = self.tracker.lock();
        if pins.contains_key(id)
            || leases.holds(id)
            || tracker.needs([id]).in_flight
            || self.contains(id)?
        {
            return Ok(Unindexed::Kept);
        }
        let settled = if referenced(id)? {
            let entry = ChunkEntry {
                len,
                written_at_ms: crate::model::now_ms(),
            };
            self.db
                .put_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes(), entry.encode())?;
            Unindexed::Reindexed
        } else {
            self.db.delete_cf(self.cf(CF_CHUNKS)?, id.as_bytes())?;
            self.deleted_bytes
                .fetch_add(u64::from(len), std::sync::atomic::Ordering::Relaxed);
            Unindexed::Deleted
        };
        drop(tracker);
        drop(leases);
        drop(pins);
        metrics::unindexed_chunk(settled);
        Ok(settled)
    }

    /// Up to `limit` chunks this node holds after `after` (in id order), with their index
    /// entries: a page of the index, so a sweep never loads the whole of it.
    pub fn entries_page(
        &self,
        after: Option<&ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, ChunkEntry)>> {
        let cf = self.cf(CF_CHUNK_INDEX)?;
        let mode = match after {
            Some(id) => rocksdb::IteratorMode::From(id.as_bytes(), rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        let mut out = Vec::with_capacity(limit.min(65_536));
        for item in self.db.iterator_cf(cf, mode) {
            let (key, value) = item?;
            if after.is_some_and(|a| key.as_ref() == a.as_bytes()) {
                continue;
            }
            if let (Some(id), Some(entry)) = (ChunkId::from_slice(&key), ChunkEntry::decode(&value))
            {
                out.push((id, entry));
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every chunk this node holds, with its index entry (tests and small stores; the sweep
    /// pages through [`ChunkStore::entries_page`]).
    pub fn entries(&self) -> Result<Vec<(ChunkId, ChunkEntry)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHUNK_INDEX)?, rocksdb::IteratorMode::Start)
        {
            let (key, value) = item?;
            if let (Some(id), Some(entry)) = (ChunkId::from_slice(&key), ChunkEntry::decode(&value))
            {
                out.push((id, entry));
            }
        }
        Ok(out)
    }

    /// RocksDB's estimate of the number of chunks held.
    pub fn estimated_count(&self) -> Option<u64> {
        let cf = self.cf(CF_CHUNK_INDEX).ok()?;
        self.db
            .property_int_value_cf(cf, "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
    }

    /// Keeps these chunks from collection for `ttl`, present or not: a peer is about to rely
    /// on this node holding them. Refused when the lease table is full.
    pub fn lease(
        &self,
        ids: &[ChunkId],
        ttl: Duration,
    ) -> std::result::Result<(), LeasesExhausted> {
        self.leases.lock().grant(ids, ttl)
    }

    /// Leases held now (expired ones may still be counted until the next grant).
    pub fn lease_count(&self) -> usize {
        self.leases.lock().len()
    }

    /// Chunk values in the active memtable (not yet flushed to a blob file).
    #[doc(hidden)]
    pub fn memtable_entries_for_test(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(CF_CHUNKS)?, "rocksdb.num-entries-active-mem-table")?
            .unwrap_or(0))
    }

    /// Makes every chunk written so far part of an SST and blob file (tests).
    #[doc(hidden)]
    pub fn flush_for_test(&self) -> Result<()> {
        Ok(self.db.flush_cf(self.cf(CF_CHUNKS)?)?)
    }

    /// Overwrites a chunk's bytes without updating its name: only for tests that need a corrupt
    /// chunk on disk.
    #[doc(hidden)]
    pub fn overwrite_for_test(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        Ok(self.db.put_cf(self.cf(CF_CHUNKS)?, id.as_bytes(), data)?)
    }
}

/// Chunks pinned by one upload; unpinned on drop.
pub struct PinGuard {
    store: Arc<ChunkStore>,
    ids: Vec<ChunkId>,
}

impl PinGuard {
    pub fn pin(&mut self, id: ChunkId) {
        *self.store.pins.lock().entry(id).or_insert(0) += 1;
        self.ids.push(id);
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self.store.pins.lock();
        for id in &self.ids {
            if let Some(count) = pins.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u64, len: usize) -> (ChunkId, Vec<u8>) {
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        (ChunkId::of(&data), data)
    }

    #[test]
    fn unindexed_bytes_are_settled_only_when_nothing_is_using_or_writing_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            ChunkStore::new(crate::storage::open_db(dir.path()).expect("open")).expect("store");
        let bytes_only = |seed| {
            let (id, data) = chunk(seed, 4 << 10);
            let cf = store.cf(CF_CHUNKS).expect("cf");
            store.db.put_cf(cf, id.as_bytes(), &data).expect("put");
            id
        };
        let (orphan, pinned, referenced, rewritten) =
            (bytes_only(1), bytes_only(2), bytes_only(3), bytes_only(4));
        let (indexed, indexed_bytes) = chunk(5, 4 << 10);
        store.put(&indexed, &indexed_bytes).expect("put");
        let page = store.unindexed_page(None, 100).expect("page");
        assert_eq!(page.last, None);
        let mut found: Vec<ChunkId> = page.unindexed.iter().map(|(id, _)| *id).collect();
        found.sort();
        let mut expected = vec![orphan, pinned, referenced, rewritten];
        expected.sort();
        assert_eq!(found, expected, "only the bytes without an index entry");

        let mut pins = Arc::clone(&store).pin_guard();
        pins.pin(pinned);
        let (_, data) = chunk(4, 4 << 10);
        store
            .put(&rewritten, &data)
            .expect("written again since the page was read");
        let len = 4 << 10;
        let never = |_: &ChunkId| Ok(false);
        assert_eq!(
            store.settle_unindexed(&orphan, len, never).expect("settle"),
            Unindexed::Deleted
        );
        assert_eq!(
            store.settle_unindexed(&pinned, len, never).expect("settle"),
            Unindexed::Kept
        );
        assert_eq!(
            store
                .settle_unindexed(&rewritten, len, never)
                .expect("settle"),
            Unindexed::Kept
        );
        assert_eq!(
            store
                .settle_unindexed(&referenced, len, |_| Ok(true))
                .expect("settle"),
            Unindexed::Reindexed
        );
        assert!(store.read(&orphan).is_err());
        assert_eq!(
            store.entry(&referenced).expect("entry").map(|e| e.len),
            Some(len)
        );
        assert!(store.read(&referenced).is_ok() && store.read(&rewritten).is_ok());
        assert!(store.read(&pinned).is_ok());
        // Paging resumes after the last chunk visited.
        let first = store.unindexed_page(None, 1).expect("page");
        let rest = store
            .unindexed_page(first.last.as_ref(), 100)
            .expect("page");
        assert_eq!(rest.last, None);
        assert_eq!(
            first.unindexed.len() + rest.unindexed.len(),
            1,
            "only the pinned one is left"
        );
    }

    #[test]
    fn uploads_make_exactly_what_they_rely_on_durable() {
        let dir = tempfile::tempdir().expect("chunk store operation");
        let store =
            ChunkStore::new(crate::storage::open_db(dir.path()).expect("chunk store operation"))
                .expect("chunk store operation");
        let (a, a_bytes) = chunk(1, 64 << 10);
        let (b, b_bytes) = chunk(2, 64 << 10);
        let (c, c_bytes) = chunk(3, 64 << 10);

        // A logged write is made durable by a WAL sync: the memtable keeps it.
        store
            .write(&a, &a_bytes, Durability::Logged)
            .expect("chunk store operation");
        assert!(!store.is_durable(&a));
        store.make_durable(&[a]).expect("chunk store operation");
        assert!(store.is_durable(&a));
        assert_eq!(
            store
                .memtable_entries_for_test()
                .expect("chunk store operation"),
            1
        );

        // Upload 1 wrote `b` unlogged; upload 2 found it and relies on it before upload 1 is
        // done: upload 2's make_durable must flush it.
        store
            .write(&b, &b_bytes, Durability::Unlogged)
            .expect("chunk store operation");
        assert!(store.contains(&b).expect("chunk store operation"));
        assert!(!store.is_durable(&b));
        store.make_durable(&[b]).expect("chunk store operation");
        assert_eq!(
            store
                .memtable_entries_for_test()
                .expect("chunk store operation"),
            0,
            "flushed"
        );
        assert!(store.is_durable(&b));

        // Once durable, a chunk costs nothing to rely on again.
        store
            .write(&c, &c_bytes, Durability::Unlogged)
            .expect("chunk store operation");
        store.make_durable(&[c]).expect("chunk store operation");
        store
            .write(&a, &a_bytes, Durability::Logged)
            .expect("chunk store operation");
        store.sync().expect("chunk store operation");
        let flushes = store
            .memtable_entries_for_test()
            .expect("chunk store operation");
        store
            .make_durable(&[a, b, c])
            .expect("chunk store operation");
        assert_eq!(
            store
                .memtable_entries_for_test()
                .expect("chunk store operation"),
            flushes,
            "not flushed again"
        );
        for (id, data) in [(a, a_bytes), (b, b_bytes), (c, c_bytes)] {
            assert_eq!(
                store.read(&id).expect("chunk store operation"),
                data.as_slice()
            );
        }
    }

    #[test]
    fn a_chunk_reused_from_an_abandoned_upload_is_still_made_durable() {
        // Audit D1, scenario A: upload 1 writes a chunk unlogged, upload 2 finds it and
        // reuses it, upload 1 gives up. Upload 2 relies on the chunk, so its make_durable must
        // still flush it: abandoning an upload must not drop the flush obligation.
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            ChunkStore::new(crate::storage::open_db(dir.path()).expect("open")).expect("store");
        let (b, b_bytes) = chunk(2, 64 << 10);
        store
            .write(&b, &b_bytes, Durability::Unlogged)
            .expect("upload 1 writes");
        assert!(store.contains(&b).expect("contains"), "upload 2 finds it");
        // Upload 1 abandons: there is nothing to undo; the write stays pending until a flush.
        store
            .make_durable(&[b])
            .expect("upload 2 makes its chunks durable");
        assert_eq!(
            store.memtable_entries_for_test().expect("memtable"),
            0,
            "the reused chunk sits unflushed in the memtable, a kill -9 away from loss"
        );
    }

    /// A child process of the test binary: writes chunks without the WAL until RocksDB flushes
    /// the index column family on its own, then dies without closing the database (the same
    /// as `kill -9`: RocksDB gets no chance to flush what is left in its memtables).
    #[test]
    fn crash_child_writes_unlogged_chunks_until_rocksdb_flushes_on_its_own() {
        let Ok(path) = std::env::var("ARCA_TEST_CRASH_DB") else {
            return; // only runs as the child of the test below
        };
        let store =
            ChunkStore::new(crate::storage::open_db(std::path::Path::new(&path)).expect("open"))
                .expect("store");
        // Which column family's own flush to wait for: the index (audit D2) or the bytes (L3).
        let watched = match std::env::var("ARCA_TEST_CRASH_WATCH").as_deref() {
            Ok(CF_CHUNKS) => CF_CHUNKS,
            _ => CF_CHUNK_INDEX,
        };
        let index = store.cf(watched).expect("cf");
        let active = |store: &ChunkStore| {
            store
                .db
                .property_int_value_cf(index, "rocksdb.num-entries-active-mem-table")
                .expect("property")
                .unwrap_or(0)
        };
        // Bounded: the index memtable (64 MiB) holds about 1M entries; 3M writes of 100 bytes
        // (300 MB) cover it twice over.
        for seed in 0..3_000_000u64 {
            let (id, data) = chunk(seed, 100);
            let before = active(&store);
            store
                .write(&id, &data, Durability::Unlogged)
                .expect("write");
            if active(&store) >= before {
                continue;
            }
            // RocksDB switched the index memtable and flushes it: stop writing (so the chunks
            // written since the chunk bytes' last flush stay in their memtable), let that one
            // flush finish, then die.
            for _ in 0..3000 {
                let pending = store
                    .db
                    .property_int_value_cf(index, "rocksdb.mem-table-flush-pending")
                    .expect("property")
                    .unwrap_or(1);
                let running = store
                    .db
                    .property_int_value("rocksdb.num-running-flushes")
                    .expect("property")
                    .unwrap_or(1);
                if pending == 0 && running == 0 {
                    std::process::abort();
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("the index flush did not finish");
        }
        panic!("rocksdb never flushed the chunk index on its own");
    }

    #[test]
    fn a_crash_after_rocksdb_flushed_one_column_family_leaves_no_ghost_chunk() {
        // Audit D2: chunk bytes and their index entry are written in one WAL-less batch but
        // flushed as two column families. If RocksDB flushes the index on its own and the node
        // dies before the bytes are flushed, the index says "present" for a chunk that is gone:
        // uploads reuse it, peers count it, resync never fetches it.
        if std::env::var("ARCA_TEST_CRASH_DB").is_ok() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crash_after_own_flush_of(CF_CHUNK_INDEX, &dir.path().join("db"));
        let mut ghosts = 0;
        let entries = store.entries().expect("entries");
        assert!(!entries.is_empty(), "some chunks survived the crash");
        for (id, _) in &entries {
            if matches!(store.read(id), Err(Error::MissingChunk { .. })) {
                ghosts += 1;
            }
        }
        assert_eq!(
            ghosts,
            0,
            "{ghosts} of {} index entries name chunks whose bytes are gone",
            entries.len()
        );
    }

    /// Runs the crashing child above until RocksDB flushed `watched` on its own, then reopens
    /// what it left.
    fn crash_after_own_flush_of(watched: &str, db_path: &std::path::Path) -> Arc<ChunkStore> {
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "chunk_store::tests::crash_child_writes_unlogged_chunks_until_rocksdb_flushes_on_its_own",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ARCA_TEST_CRASH_DB", db_path)
            .env("ARCA_TEST_CRASH_WATCH", watched)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the crashing child");
        assert!(!status.success(), "the child crashed as planned");
        ChunkStore::new(crate::storage::open_db(db_path).expect("reopen")).expect("store")
    }

    #[test]
    fn a_crash_after_rocksdb_flushed_the_chunk_bytes_leaves_no_bytes_without_an_index_entry() {
        // Audit L3, the other half of D2: when the bytes' column family is flushed on its own
        // and the node dies before the index is, the bytes are on disk with no index entry.
        // The sweep walks the index, so nothing would ever delete them.
        if std::env::var("ARCA_TEST_CRASH_DB").is_ok() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crash_after_own_flush_of(CF_CHUNKS, &dir.path().join("db"));
        let indexed: std::collections::HashSet<ChunkId> = store
            .entries()
            .expect("entries")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let chunks = store.cf(CF_CHUNKS).expect("cf");
        let mut stored = 0usize;
        let mut unindexed = 0usize;
        for item in store.db.iterator_cf(chunks, rocksdb::IteratorMode::Start) {
            let (key, _) = item.expect("iterate chunks");
            stored += 1;
            let id = ChunkId::from_slice(&key).expect("32-byte chunk name");
            if !indexed.contains(&id) {
                unindexed += 1;
            }
        }
        assert!(stored > 0, "some chunk bytes survived the crash");
        assert_eq!(
            unindexed, 0,
            "{unindexed} of {stored} stored chunks have no index entry (never swept)"
        );
    }

    #[test]
    fn leases_are_bounded_and_expire_without_scanning_every_lease() {
        // Audit L1: every HasChunks ran `retain` over all leases under the global pin lock, and
        // the map had no bound (an unauthenticated caller could add a million at a time).
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            ChunkStore::new(crate::storage::open_db(dir.path()).expect("open")).expect("store");
        let ids: Vec<ChunkId> = (0..1_200_000u64)
            .map(|i| ChunkId::of(&i.to_le_bytes()))
            .collect();
        let mut refused = 0;
        for batch in ids.chunks(100_000) {
            if store
                .lease(batch, std::time::Duration::from_secs(600))
                .is_err()
            {
                refused += 1;
            }
        }
        let held = store.lease_count();
        assert!(held <= MAX_LEASES, "{held} leases held");
        assert!(refused > 0, "leasing past the bound is refused");
        // Expired leases go without a scan of the live ones.
        let short: Vec<ChunkId> = (0..10u64).map(|i| ChunkId::of(&[i as u8, 0xee])).collect();
        let mut leases = Leases::default();
        leases
            .grant(&short, std::time::Duration::ZERO)
            .expect("grant");
        leases.grant(&[], std::time::Duration::ZERO).expect("grant");
        assert_eq!(leases.len(), 0, "expired leases were dropped");
    }

    #[test]
    fn blob_garbage_collection_waits_for_garbage_in_proportion_to_the_store() {
        // Audit P5: after 256 MiB of deletions a full-range compaction relocated every live
        // blob in the oldest half of all blob files, however large the store.
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            ChunkStore::new(crate::storage::open_db(dir.path()).expect("open")).expect("store");
        let all: Vec<_> = (0..60).map(|i| chunk(1000 + i, 1 << 20)).collect();
        for (id, data) in &all {
            store.put(id, data).expect("put");
        }
        store.flush_for_test().expect("flush");
        for (id, _) in all.iter().take(3) {
            assert!(store.delete_unless(id, |_| Ok(false)).expect("delete"));
        }
        // 3 MiB of garbage in a 60 MiB store: not worth relocating 30 MiB.
        assert!(!store.collect_blob_garbage(1 << 20).expect("collect"));
        for (id, _) in all.iter().skip(3).take(5) {
            assert!(store.delete_unless(id, |_| Ok(false)).expect("delete"));
        }
        assert!(store.collect_blob_garbage(1 << 20).expect("collect"));
    }

    #[test]
    fn deleted_chunks_give_their_disk_space_back() {
        let dir = tempfile::tempdir().expect("chunk store operation");
        let store =
            ChunkStore::new(crate::storage::open_db(dir.path()).expect("chunk store operation"))
                .expect("chunk store operation");
        let kept: Vec<_> = (0..4).map(|i| chunk(i, 1 << 20)).collect();
        let dropped: Vec<_> = (100..124).map(|i| chunk(i, 1 << 20)).collect();
        for (id, data) in kept.iter().chain(&dropped) {
            store.put(id, data).expect("chunk store operation");
        }
        store.flush_for_test().expect("chunk store operation");
        let before = store.blob_file_bytes().expect("chunk store operation");
        assert!(before >= 28 << 20, "{before}");
        // Nothing deleted yet: no compaction is worth it.
        assert!(!store
            .collect_blob_garbage(1 << 20)
            .expect("chunk store operation"));

        for (id, _) in &dropped {
            assert!(store
                .delete_unless(id, |_| Ok(false))
                .expect("chunk store operation"));
        }
        assert!(store.blob_garbage_bytes().expect("chunk store operation") >= 24 << 20);
        assert!(store
            .collect_blob_garbage(1 << 20)
            .expect("chunk store operation"));
        let after = store.blob_file_bytes().expect("chunk store operation");
        assert!(
            after < 8 << 20,
            "blob files still hold {after} bytes (from {before})"
        );
        // The live chunks survived the relocation, byte for byte.
        for (id, data) in &kept {
            assert_eq!(
                store.read(id).expect("chunk store operation"),
                data.as_slice()
            );
        }
        for (id, _) in &dropped {
            assert!(store.read(id).is_err());
        }
    }
}
