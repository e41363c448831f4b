//! Chunk garbage collection on one node.
//!
//! A chunk is deleted only when (a) no live blob references it in the applied state machine and
//! (b) no upload on this node has it pinned; both are checked under the pin lock. Two triggers:
//! chunks freed by an applied delete/overwrite are reclaimed at once, and a periodic sweep
//! deletes orphans (chunks written by uploads that failed or were killed before their command
//! applied) once they are older than a grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::chunk_store::{ChunkStore, PinGuard};
use crate::digest::ChunkId;
use crate::error::Result;
use crate::state_machine::FreedChunks;

/// Deleted chunk bytes that make a blob garbage collection worth its compaction (the size of
/// one blob file).
const BLOB_GC_MIN_GARBAGE: u64 = 256 << 20;

/// Index entries a sweep reads at a time.
const SWEEP_PAGE: usize = 10_000;

enum Job {
    Reclaim(Vec<ChunkId>),
    Sweep,
}

/// Deletes chunks nothing uses.
#[derive(Clone)]
pub struct Collector {
    store: Arc<ChunkStore>,
    catalog: Catalog,
}

impl Collector {
    pub fn new(store: Arc<ChunkStore>, catalog: Catalog) -> Self {
        Self { store, catalog }
    }

    /// Deletes those of `ids` that are unreferenced and unpinned; returns how many it deleted.
    pub fn reclaim(&self, ids: &[ChunkId]) -> Result<usize> {
        let mut deleted = 0;
        for id in ids {
            if self
                .store
                .delete_unless(id, |id| Ok(self.catalog.chunk_refs(id)? > 0))?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Releases an upload that will not be committed: drops its pins, then deletes the chunks it
    /// wrote unless something else uses them by now.
    pub fn abandon(&self, written: Vec<ChunkId>, pins: PinGuard) {
        drop(pins);
        if let Err(e) = self.reclaim(&written) {
            tracing::warn!(error = %e, "could not delete the chunks of an abandoned upload; the sweep will");
        }
    }

    /// Deletes unreferenced, unpinned chunks written more than `grace` ago.
    /// Pages through the chunk index (a bounded page at a time, so memory does not grow with
    /// the store).
    pub fn sweep(&self, grace: Duration) -> Result<usize> {
        let cutoff = crate::model::now_ms() - grace.as_millis() as i64;
        let mut deleted = 0;
        let mut after: Option<ChunkId> = None;
        loop {
            let page = self.store.entries_page(after.as_ref(), SWEEP_PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(deleted);
            };
            after = Some(*last);
            let candidates: Vec<ChunkId> = page
                .iter()
                .filter(|(_, entry)| entry.written_at_ms <= cutoff)
                .map(|(id, _)| *id)
                .collect();
            deleted += self.reclaim(&candidates)?;
            if page.len() < SWEEP_PAGE {
                return Ok(deleted);
            }
        }
    }

    /// After deletions worth a blob file, compacts the chunk store with blob garbage collection
    /// so the disk space comes back.
    fn collect_blob_garbage(&self) {
        match self.store.collect_blob_garbage(BLOB_GC_MIN_GARBAGE) {
            Ok(true) => {
                tracing::info!("compacted the chunk store to reclaim deleted chunks' space")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "blob garbage collection failed; will retry"),
        }
    }

    /// Runs until `cancel`: reclaims freed chunks as they come, sweeps orphans every `interval`.
    pub async fn run(
        self,
        mut freed: mpsc::UnboundedReceiver<FreedChunks>,
        interval: Duration,
        grace: Duration,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let job = tokio::select! {
                _ = cancel.cancelled() => return,
                message = freed.recv() => match message {
                    Some(FreedChunks::Chunks(ids)) => Job::Reclaim(ids),
                    Some(FreedChunks::All) => Job::Sweep,
                    None => return,
                },
                _ = ticker.tick() => Job::Sweep,
            };
            let collector = self.clone();
            let work = move || match job {
                Job::Reclaim(ids) => collector.reclaim(&ids),
                Job::Sweep => collector
                    .sweep(grace)
                    .inspect(|_| collector.collect_blob_garbage()),
            };
            match tokio::task::spawn_blocking(work).await {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => tracing::info!(deleted, "garbage-collected chunks"),
                Ok(Err(e)) => tracing::warn!(error = %e, "chunk collection failed; will retry"),
                Err(e) => tracing::error!(error = %e, "chunk collector panicked"),
            }
        }
    }
}
