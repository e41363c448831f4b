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
            written_at_ms: crate::metadata::model::now_ms(),
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
                written_at_ms: crate::metadata::model::now_ms(),
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
        metrics::unindexed_chunk(settled.label());
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
mod tests;
