//! Faults on a stopped node's disk: corrupted chunks, and the state a power cut can roll back.

use anyhow::{anyhow, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Flips one byte in each of `count` stored chunks (chosen by `pick`) of a stopped node's
/// database. Returns the chunk names (blake3, hex).
pub fn corrupt_chunks(
    db_path: &std::path::Path,
    count: usize,
    pick: u64,
) -> anyhow::Result<Vec<String>> {
    use arca_node::storage::chunk_store::CF_CHUNKS;
    let db = arca_node::db::open_db(db_path)?;
    let cf = db
        .cf_handle(CF_CHUNKS)
        .ok_or_else(|| anyhow!("no {CF_CHUNKS} column family"))?;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, _) = item.context("iterate chunks")?;
        keys.push(key.to_vec());
        if keys.len() >= 20_000 {
            break;
        }
    }
    let mut rng = StdRng::seed_from_u64(pick);
    let mut corrupted = Vec::new();
    for _ in 0..count.min(keys.len()) {
        let key = keys.swap_remove(rng.random_range(0..keys.len()));
        let Some(mut value) = db.get_cf(cf, &key).context("read a chunk")? else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let position = rng.random_range(0..value.len());
        value[position] ^= 0xFF;
        db.put_cf(cf, &key, &value)
            .context("write the corrupted chunk")?;
        corrupted.push(hex::encode(&key));
    }
    db.flush_wal(true).context("sync")?;
    Ok(corrupted)
}

/// What a power cut can take from a node whose Raft log survives: the state machine's column
/// family (applies are written without a sync; the log's fsync is what makes a write durable)
/// and the unsynced committed-index hint. Saved from a stopped node, to be put back later
/// with [`restore_unsynced_state`]: the node then holds log entries it has not applied, and
/// no record that they were committed, as after a power cut right after an apply.
pub struct UnsyncedState {
    state_machine: Vec<(Vec<u8>, Vec<u8>)>,
    committed: Option<Vec<u8>>,
}

const KEY_COMMITTED: &[u8] = b"committed";

/// Saves the state a power cut could roll back (see [`UnsyncedState`]) of a stopped node.
pub fn save_unsynced_state(db_path: &std::path::Path) -> anyhow::Result<UnsyncedState> {
    use arca_raft::storage::{CF_RAFT_META, CF_STATE_MACHINE};
    let db = arca_node::db::open_db(db_path)?;
    let sm = db
        .cf_handle(CF_STATE_MACHINE)
        .ok_or_else(|| anyhow!("no {CF_STATE_MACHINE} column family"))?;
    let mut state_machine = Vec::new();
    for item in db.iterator_cf(sm, rocksdb::IteratorMode::Start) {
        let (key, value) = item.context("iterate the state machine")?;
        state_machine.push((key.to_vec(), value.to_vec()));
        if state_machine.len() > 1_000_000 {
            anyhow::bail!("the state machine is too large to save for a test");
        }
    }
    let meta = db
        .cf_handle(CF_RAFT_META)
        .ok_or_else(|| anyhow!("no {CF_RAFT_META} column family"))?;
    let committed = db.get_cf(meta, KEY_COMMITTED).context("read committed")?;
    Ok(UnsyncedState {
        state_machine,
        committed,
    })
}

/// Puts a stopped node's state machine and committed-index hint back to `saved`, leaving its
/// Raft log, votes and chunks as they are.
pub fn restore_unsynced_state(
    db_path: &std::path::Path,
    saved: &UnsyncedState,
) -> anyhow::Result<()> {
    use arca_raft::storage::{CF_RAFT_META, CF_STATE_MACHINE};
    let db = arca_node::db::open_db(db_path)?;
    let sm = db
        .cf_handle(CF_STATE_MACHINE)
        .ok_or_else(|| anyhow!("no {CF_STATE_MACHINE} column family"))?;
    let meta = db
        .cf_handle(CF_RAFT_META)
        .ok_or_else(|| anyhow!("no {CF_RAFT_META} column family"))?;
    let mut batch = rocksdb::WriteBatch::default();
    for item in db.iterator_cf(sm, rocksdb::IteratorMode::Start) {
        let (key, _) = item.context("iterate the state machine")?;
        batch.delete_cf(sm, key);
    }
    for (key, value) in &saved.state_machine {
        batch.put_cf(sm, key, value);
    }
    match &saved.committed {
        Some(value) => batch.put_cf(meta, KEY_COMMITTED, value),
        None => batch.delete_cf(meta, KEY_COMMITTED),
    }
    db.write(batch).context("restore the state machine")?;
    db.flush_wal(true).context("sync")?;
    Ok(())
}
