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

use crate::digest::ChunkId;
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::state_machine::FreedChunks;
use crate::storage::chunk_store::{ChunkStore, PinGuard};

/// Deleted chunk bytes that make a blob garbage collection worth its compaction (the size of
/// one blob file).
const BLOB_GC_MIN_GARBAGE: u64 = 256 << 20;

/// Index entries a sweep reads at a time.
const SWEEP_PAGE: usize = 10_000;

/// Records the progress of the one-time check for chunk bytes without an index entry (in the
/// data directory): the hex id of the last chunk checked, or `done`.
pub const UNINDEXED_CHECK_FILE: &str = "chunks-unindexed-check";

/// Stored chunks the check reads at a time.
const UNINDEXED_PAGE: usize = 256;

/// The check reads chunk bytes at most this fast, so that it stays in the background.
const UNINDEXED_BYTES_PER_SEC: u64 = 64 << 20;

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
        let cutoff = crate::metadata::model::now_ms() - grace.as_millis() as i64;
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

    /// Once per data directory: walks the stored chunk bytes (not the index, which every other
    /// sweep walks) for bytes without an index entry, which crashes of versions before atomic
    /// flush could leave, and settles each ([`ChunkStore::settle_unindexed`]: reindexed if
    /// referenced, deleted if not). Reads every chunk once, paced to
    /// [`UNINDEXED_BYTES_PER_SEC`]; resumes where it stopped after a restart; a store created
    /// empty finishes at once.
    pub async fn check_unindexed(self, progress: std::path::PathBuf, cancel: CancellationToken) {
        let done = |found: u64| {
            ::metrics::gauge!("arca_gc_unindexed_scan_done").set(1.0);
            if found > 0 {
                tracing::warn!(found, "settled chunk bytes that had no index entry");
            }
        };
        let mut after = match std::fs::read_to_string(&progress) {
            Ok(text) if text.trim() == "done" => return done(0),
            Ok(text) => ChunkId::from_hex(text.trim()),
            Err(_) => None,
        };
        ::metrics::gauge!("arca_gc_unindexed_scan_done").set(0.0);
        let mut found = 0u64;
        while !cancel.is_cancelled() {
            let collector = self.clone();
            let start = after;
            let page = tokio::task::spawn_blocking(move || -> Result<_> {
                let page = collector
                    .store
                    .unindexed_page(start.as_ref(), UNINDEXED_PAGE)?;
                for (id, len) in &page.unindexed {
                    collector.store.settle_unindexed(id, *len, |id| {
                        Ok(collector.catalog.chunk_refs(id)? > 0)
                    })?;
                }
                Ok(page)
            })
            .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "checking chunk bytes for index entries failed; will retry");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => continue,
                    }
                }
                Err(e) => return tracing::error!(error = %e, "the chunk index check panicked"),
            };
            found += page.unindexed.len() as u64;
            after = page.last;
            let record = after.map_or_else(|| "done".to_string(), |id| id.to_hex());
            if let Err(e) = write_progress(&progress, &record) {
                tracing::warn!(error = %e, "could not record the chunk index check's progress");
            }
            if after.is_none() {
                return done(found);
            }
            let pause =
                Duration::from_secs_f64(page.bytes_read as f64 / UNINDEXED_BYTES_PER_SEC as f64);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
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

/// Replaces the progress file whole (a crash leaves the old or the new record, never a torn
/// one; losing the latest only repeats a page).
fn write_progress(path: &std::path::Path, record: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, record)?;
    std::fs::rename(&tmp, path)
}
