//! Opening the node's one RocksDB instance with every column family.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rocksdb::{Options, DB};

/// Opens (creating if needed) the node's database at `path`.
pub fn open_db(path: &Path) -> anyhow::Result<Arc<DB>> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_max_background_jobs(4);
    options.set_bytes_per_sync(1 << 20);
    // The WAL is shared by every column family; cap it so a quiet column family cannot pin
    // gigabytes of old WAL files.
    options.set_max_total_wal_size(256 << 20);
    // Chunk bytes and their index entries are written together, most of them without the WAL;
    // flushing column families atomically means RocksDB never persists one without the other
    // (an index entry for bytes a crash lost would make the node claim a chunk it cannot read).
    options.set_atomic_flush(true);
    let mut families = arca_raft::storage::column_families();
    families.extend(crate::storage::chunk_store::column_families());
    families.extend(crate::region::resync::column_families());
    let db = DB::open_cf_descriptors(&options, path, families)
        .with_context(|| format!("open rocksdb at {}", path.display()))?;
    Ok(Arc::new(db))
}
