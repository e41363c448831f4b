//! The column families the Raft layer owns in the node's RocksDB, and their encodings.
//!
//! One RocksDB instance per node holds everything; the node crate adds its own column families
//! (chunks) next to these. Keeping the log, the vote and the state machine in one database lets
//! a single WAL order their writes.

use openraft::{AnyError, StorageIOError};
use rocksdb::{ColumnFamilyDescriptor, Options};
use serde::{de::DeserializeOwned, Serialize};

use crate::types::{NodeId, StorageError};

/// Raft log entries, keyed by big-endian log index.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Vote, last purged log id, committed log id.
pub const CF_RAFT_META: &str = "raft_meta";
/// The replicated state machine. Keys starting with `\0` belong to the driver; the application
/// owns every other key.
pub const CF_STATE_MACHINE: &str = "sm";

/// Descriptors for the column families owned by this crate.
pub fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let mut log_opts = Options::default();
    // Log entries are appended in index order and read back in ranges.
    log_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let meta_opts = Options::default();
    let mut sm_opts = Options::default();
    sm_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    vec![
        ColumnFamilyDescriptor::new(CF_RAFT_LOG, log_opts),
        ColumnFamilyDescriptor::new(CF_RAFT_META, meta_opts),
        ColumnFamilyDescriptor::new(CF_STATE_MACHINE, sm_opts),
    ]
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn key_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::read(AnyError::new(&e)).into()
}

pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::write(AnyError::new(&e)).into()
}

pub(crate) fn missing_cf(name: &str) -> StorageError {
    let e = std::io::Error::other(format!("column family {name} is missing"));
    StorageIOError::<NodeId>::read(AnyError::new(&e)).into()
}
