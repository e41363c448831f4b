//! The node-local chunk store: chunk bytes by blake3 name, in RocksDB with integrated BlobDB.
//!
//! Chunks live outside Raft: they are content-addressed, so any node may hold any chunk and
//! writing one twice is harmless. What makes a chunk *live* is a reference count in the state
//! machine; what keeps a chunk that an upload in progress depends on alive is a **pin** here.
//! Deletion ([`ChunkStore::delete_unless`]) holds the pin lock while it checks both, and an
//! upload pins a chunk before it looks for it, so a chunk is never deleted under an upload that
//! decided to reuse it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, DB};

use crate::digest::ChunkId;
use crate::error::{Error, Result};
use crate::metrics;

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

/// Column family options for the chunk store.
pub fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let mut chunks = Options::default();
    chunks.set_enable_blob_files(true);
    chunks.set_min_blob_size(4096);
    chunks.set_blob_file_size(256 << 20);
    // Artifacts are mostly compressed already (tarballs, layers, wheels): don't spend CPU on them.
    chunks.set_blob_compression_type(DBCompressionType::None);
    chunks.set_enable_blob_gc(true);
    chunks.set_blob_gc_age_cutoff(0.25);
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

/// The node's chunks, with the pin table of uploads in progress.
pub struct ChunkStore {
    db: Arc<DB>,
    pins: Mutex<Pins>,
}

/// Chunks the collector must keep: pinned by uploads on this node (counted), or leased to a
/// peer whose write is in flight (until a deadline).
#[derive(Default)]
struct Pins {
    local: HashMap<ChunkId, u32>,
    leases: HashMap<ChunkId, std::time::Instant>,
}

impl Pins {
    fn holds(&mut self, id: &ChunkId) -> bool {
        if self.local.contains_key(id) {
            return true;
        }
        match self.leases.get(id) {
            Some(until) if *until > std::time::Instant::now() => true,
            Some(_) => {
                self.leases.remove(id);
                false
            }
            None => false,
        }
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
            pins: Mutex::new(Pins::default()),
        }))
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Internal(format!("column family {name} is missing")))
    }

    /// Whether this node holds the chunk.
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

    /// Stores a chunk. Not synced: call [`ChunkStore::sync`] before relying on durability.
    pub fn put(&self, id: &ChunkId, data: &[u8]) -> Result<()> {
        let entry = ChunkEntry {
            len: u32::try_from(data.len())
                .map_err(|_| Error::Internal("chunk larger than 4 GiB".into()))?,
            written_at_ms: crate::model::now_ms(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CHUNKS)?, id.as_bytes(), data);
        batch.put_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes(), entry.encode());
        self.db.write(batch)?;
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

    /// Makes every earlier chunk write durable (one WAL fsync).
    pub fn sync(&self) -> Result<()> {
        Ok(self.db.flush_wal(true)?)
    }

    /// Reads a chunk and checks it against its name. A chunk whose bytes do not hash to its name
    /// is never returned: the read fails with `CORRUPT_CHUNK` and the corruption is counted.
    pub fn read(&self, id: &ChunkId) -> Result<Bytes> {
        let Some(data) = self.db.get_pinned_cf(self.cf(CF_CHUNKS)?, id.as_bytes())? else {
            return Err(Error::MissingChunk { chunk: id.to_hex() });
        };
        if blake3::hash(&data).as_bytes() != id.as_bytes() {
            metrics::corrupt_chunk();
            tracing::error!(chunk = %id, "chunk bytes do not match their blake3 name; refusing to serve");
            return Err(Error::CorruptChunk { chunk: id.to_hex() });
        }
        Ok(Bytes::copy_from_slice(&data))
    }

    /// Pins chunks so that no collector deletes them until the guard is dropped.
    pub fn pin_guard(self: &Arc<Self>) -> PinGuard {
        PinGuard {
            store: self.clone(),
            ids: Vec::new(),
        }
    }

    /// Deletes the chunk unless it is pinned or `referenced` says it is still in use. The pin
    /// lock is held across the check and the delete. Returns whether it deleted.
    pub fn delete_unless(
        &self,
        id: &ChunkId,
        referenced: impl FnOnce(&ChunkId) -> Result<bool>,
    ) -> Result<bool> {
        let mut pins = self.pins.lock();
        if pins.holds(id) || referenced(id)? {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_CHUNKS)?, id.as_bytes());
        batch.delete_cf(self.cf(CF_CHUNK_INDEX)?, id.as_bytes());
        self.db.write(batch)?;
        drop(pins);
        metrics::chunk_deleted();
        Ok(true)
    }

    /// Every chunk this node holds, with its index entry.
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
    /// on this node holding them.
    pub fn lease(&self, ids: &[ChunkId], ttl: std::time::Duration) {
        let until = std::time::Instant::now() + ttl;
        let mut pins = self.pins.lock();
        let now = std::time::Instant::now();
        pins.leases.retain(|_, deadline| *deadline > now);
        for id in ids {
            pins.leases.insert(*id, until);
        }
    }

    fn lock_pins(&self) -> MutexGuard<'_, Pins> {
        self.pins.lock()
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
        *self.store.lock_pins().local.entry(id).or_insert(0) += 1;
        self.ids.push(id);
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self.store.lock_pins();
        for id in &self.ids {
            if let Some(count) = pins.local.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    pins.local.remove(id);
                }
            }
        }
    }
}
