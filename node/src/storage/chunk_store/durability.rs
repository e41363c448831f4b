//! Which chunk writes have reached the disk.
//!
//! A chunk being *present* (its index entry is visible) says nothing about whether it survives
//! `kill -9`: a write through the WAL is durable once the WAL is synced, a write without it once
//! its memtable is flushed. The tracker gives every completed write a generation number and
//! remembers, per chunk not yet known durable, the earliest generation of each kind; a WAL sync
//! or a flush that *began* after a write completed covers it. Abandoning an upload never clears
//! anything: a chunk stays pending until a sync or flush covers it, whoever relied on it.

use std::collections::HashMap;

use crate::digest::ChunkId;

/// A write that has been issued but has not completed yet: not covered by anything.
const IN_FLIGHT: u64 = u64::MAX;

/// How a chunk write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Through RocksDB's write-ahead log; made durable by one WAL fsync. Each byte is written
    /// twice (WAL, then blob file at flush): the right trade for small uploads.
    Logged,
    /// Straight into the memtable, no WAL; made durable by flushing the chunk column families,
    /// which writes each byte once, into a blob file. For the bulk of large uploads.
    Unlogged,
}

/// The earliest not-yet-covered write of each kind of one chunk.
#[derive(Debug, Clone, Copy, Default)]
struct PendingWrite {
    logged: Option<u64>,
    unlogged: Option<u64>,
}

/// What it takes to make a set of chunks durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some chunk has only unlogged writes: flush the chunk column families.
    pub flush: bool,
    /// Some chunk has a logged write: a WAL sync covers it.
    pub sync: bool,
    /// Some chunk has a write still in flight (another thread's): check again afterwards.
    pub in_flight: bool,
}

/// The tracker's state. Callers hold it behind a mutex.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<ChunkId, PendingWrite>,
    /// Generation of the last completed write.
    generation: u64,
    /// Every logged write with a generation at most this is durable.
    synced: u64,
    /// Every unlogged write with a generation at most this is durable.
    flushed: u64,
}

impl Tracker {
    /// Records that a write of `id` is about to be issued.
    pub fn begin(&mut self, id: ChunkId, how: Durability) {
        let entry = self.pending.entry(id).or_default();
        let slot = match how {
            Durability::Logged => &mut entry.logged,
            Durability::Unlogged => &mut entry.unlogged,
        };
        if slot.is_none() {
            *slot = Some(IN_FLIGHT);
        }
    }

    /// Records that the write of `id` begun with [`Tracker::begin`] completed (or failed: a
    /// failed write stays pending until a sync or flush, which is merely conservative).
    pub fn complete(&mut self, id: ChunkId, how: Durability) {
        self.generation += 1;
        let generation = self.generation;
        if let Some(entry) = self.pending.get_mut(&id) {
            let slot = match how {
                Durability::Logged => &mut entry.logged,
                Durability::Unlogged => &mut entry.unlogged,
            };
            if *slot == Some(IN_FLIGHT) {
                *slot = Some(generation);
            }
        }
    }

    /// The generation a sync or flush that begins now will cover.
    pub fn horizon(&self) -> u64 {
        self.generation
    }

    /// A WAL sync that began at `horizon` completed.
    pub fn synced(&mut self, horizon: u64) {
        self.synced = self.synced.max(horizon);
        self.prune();
    }

    /// A flush of the chunk column families that began at `horizon` completed.
    pub fn flushed(&mut self, horizon: u64) {
        self.flushed = self.flushed.max(horizon);
        self.prune();
    }

    fn covered(&self, write: &PendingWrite) -> bool {
        write.logged.is_some_and(|g| g <= self.synced)
            || write.unlogged.is_some_and(|g| g <= self.flushed)
    }

    fn prune(&mut self) {
        let (synced, flushed) = (self.synced, self.flushed);
        self.pending.retain(|_, w| {
            !(w.logged.is_some_and(|g| g <= synced) || w.unlogged.is_some_and(|g| g <= flushed))
        });
    }

    /// Whether every write of `id` this node knows of is durable (a chunk never written here,
    /// or written before this process started, is).
    pub fn is_durable(&self, id: &ChunkId) -> bool {
        self.pending.get(id).is_none_or(|w| self.covered(w))
    }

    /// What making `ids` durable takes.
    pub fn needs<'a>(&self, ids: impl IntoIterator<Item = &'a ChunkId>) -> Needs {
        let mut needs = Needs::default();
        for id in ids {
            let Some(write) = self.pending.get(id) else {
                continue;
            };
            if self.covered(write) {
                continue;
            }
            match (write.logged, write.unlogged) {
                (Some(IN_FLIGHT), _) | (_, Some(IN_FLIGHT)) => needs.in_flight = true,
                (Some(_), _) => needs.sync = true,
                (None, Some(_)) => needs.flush = true,
                (None, None) => {}
            }
        }
        needs
    }

    /// The chunk was deleted: a later write of it starts from nothing.
    pub fn forget(&mut self, id: &ChunkId) {
        self.pending.remove(id);
    }

    /// Chunks with a write not known durable.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    #[test]
    fn only_a_sync_or_flush_that_began_after_a_write_covers_it() {
        let mut t = Tracker::default();
        t.begin(id(1), Durability::Unlogged);
        assert!(!t.is_durable(&id(1)));
        assert!(t.needs([&id(1)]).in_flight);
        // A flush that began before the write completed covers nothing.
        let early = t.horizon();
        t.complete(id(1), Durability::Unlogged);
        t.flushed(early);
        assert!(!t.is_durable(&id(1)));
        assert_eq!(
            t.needs([&id(1)]),
            Needs {
                flush: true,
                ..Needs::default()
            }
        );
        // A WAL sync does not cover an unlogged write.
        let horizon = t.horizon();
        t.synced(horizon);
        assert!(!t.is_durable(&id(1)));
        t.flushed(horizon);
        assert!(t.is_durable(&id(1)));
        assert!(t.is_empty());
    }

    #[test]
    fn a_logged_rewrite_makes_an_unlogged_chunk_durable_with_a_sync() {
        let mut t = Tracker::default();
        t.begin(id(2), Durability::Unlogged);
        t.complete(id(2), Durability::Unlogged);
        t.begin(id(2), Durability::Logged);
        t.complete(id(2), Durability::Logged);
        let needs = t.needs([&id(2)]);
        assert!(needs.sync && !needs.flush, "{needs:?}");
        let horizon = t.horizon();
        t.synced(horizon);
        assert!(t.is_durable(&id(2)));
    }

    #[test]
    fn a_deleted_chunk_starts_over() {
        let mut t = Tracker::default();
        t.begin(id(3), Durability::Logged);
        t.complete(id(3), Durability::Logged);
        t.forget(&id(3));
        assert!(t.is_durable(&id(3)), "nothing pending: the chunk is gone");
        t.begin(id(3), Durability::Unlogged);
        assert!(!t.is_durable(&id(3)));
    }
}
