//! Reference counting, which garbage collection trusts: blob → references (artifacts, links,
//! manifests), chunk → blobs, the same per repository, running totals; and the reclaim of
//! chunks changes freed, once they are due.

use std::collections::BTreeSet;

use super::Txn;
use crate::digest::{Blake3, ChunkId};
use crate::metadata::keys::{self, ChunkRefCount};
use crate::metadata::model::{
    BlobDescriptor, BlobRecord, Command, GlobalStats, Outcome, RepoStats,
};
use crate::names::RepoName;

impl Txn<'_, '_> {
    /// Reclaims queued freed chunks in seq order, up to `through_seq` and freed before
    /// `before_ms`, at most `limit`: those nothing references again go to the collector.
    pub(super) fn release_freed(
        &mut self,
        through_seq: u64,
        before_ms: i64,
        limit: u64,
    ) -> anyhow::Result<Outcome> {
        let mut released = 0;
        let mut more = false;
        for key in self.keys_with_prefix(keys::FREED_PREFIX)? {
            let rest = &key[keys::FREED_PREFIX.len()..];
            let (Some(seq), Some(chunk)) = (
                rest.get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes),
                rest.get(8..).and_then(ChunkId::from_slice),
            ) else {
                anyhow::bail!("corrupt freed-chunk key");
            };
            let freed_at = self
                .get_raw(&key)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if seq > through_seq || freed_at > before_ms {
                break;
            }
            if released == limit {
                more = true;
                break;
            }
            self.delete(key)?;
            let staged = self.get_raw(&keys::staged_chunk_refs(&chunk))?.is_some();
            let divergent = self.get_count(&keys::divergent_chunk(&chunk))? > 0;
            if self.chunk_refs(&chunk)? == 0 && !staged && !divergent {
                self.freed.push(chunk);
            }
            released += 1;
        }
        Ok(Outcome::FreedReleased { released, more })
    }

    pub(super) fn chunk_refs(&self, id: &ChunkId) -> anyhow::Result<u64> {
        Ok(match self.get_raw(&keys::chunk_refs(id))? {
            Some(raw) => {
                ChunkRefCount::decode(&raw)
                    .ok_or_else(|| anyhow::anyhow!("corrupt chunk reference count"))?
                    .count
            }
            None => 0,
        })
    }

    /// One more reference from `repo` to `descriptor`'s blob: an artifact, or in an `oci`
    /// repository a blob link or a manifest (its own bytes, or a blob it references).
    pub(crate) fn acquire_blob(
        &mut self,
        repo: &RepoName,
        descriptor: &BlobDescriptor,
        repo_stats: &mut RepoStats,
        stats: &mut GlobalStats,
    ) -> anyhow::Result<()> {
        let blob_key = keys::blob(&descriptor.blake3);
        let record = match self.get::<BlobRecord>(&blob_key)? {
            Some(mut record) => {
                inc(&mut record.refs, 1, "blob references")?;
                record
            }
            None => {
                inc(&mut stats.blobs, 1, "blobs")?;
                self.referenced
                    .extend(descriptor.chunks.iter().map(|c| c.id));
                for chunk in distinct_chunks(descriptor) {
                    let refs_key = keys::chunk_refs(&chunk.0);
                    let mut refs = match self.get_raw(&refs_key)? {
                        Some(raw) => ChunkRefCount::decode(&raw)
                            .ok_or_else(|| anyhow::anyhow!("corrupt chunk reference count"))?,
                        None => ChunkRefCount {
                            count: 0,
                            len: chunk.1,
                        },
                    };
                    if refs.count == 0 {
                        inc(&mut stats.chunks, 1, "chunks")?;
                        inc(
                            &mut stats.physical_bytes,
                            u64::from(chunk.1),
                            "physical bytes",
                        )?;
                    }
                    inc(&mut refs.count, 1, "chunk references")?;
                    self.put_raw(refs_key, refs.encode())?;
                }
                self.put_raw(
                    keys::sha256_index(&descriptor.sha256),
                    descriptor.blake3.as_bytes().to_vec(),
                )?;
                BlobRecord {
                    descriptor: descriptor.clone(),
                    refs: 1,
                }
            }
        };
        let chunks = distinct_chunks(&record.descriptor);
        self.put(blob_key, &record)?;
        if self.add_count(keys::repo_blob(repo, &descriptor.blake3), 1)? == 1 {
            for (chunk, len) in chunks {
                if self.add_count(keys::repo_chunk(repo, &chunk), 1)? == 1 {
                    inc(
                        &mut repo_stats.physical_bytes,
                        u64::from(len),
                        "repository physical bytes",
                    )?;
                }
            }
        }
        Ok(())
    }

    /// One fewer reference from `repo` to the blob (see [`Txn::acquire_blob`]).
    pub(crate) fn release_blob(
        &mut self,
        repo: &RepoName,
        blob: &Blake3,
        repo_stats: &mut RepoStats,
        stats: &mut GlobalStats,
    ) -> anyhow::Result<()> {
        let blob_key = keys::blob(blob);
        let mut record: BlobRecord = self
            .get(&blob_key)?
            .ok_or_else(|| anyhow::anyhow!("artifact references unknown blob {blob}"))?;
        let chunks = distinct_chunks(&record.descriptor);
        if self.add_count(keys::repo_blob(repo, blob), -1)? == 0 {
            for (chunk, len) in &chunks {
                if self.add_count(keys::repo_chunk(repo, chunk), -1)? == 0 {
                    dec(
                        &mut repo_stats.physical_bytes,
                        u64::from(*len),
                        "repository physical bytes",
                    )?;
                }
            }
        }
        dec(&mut record.refs, 1, "blob references")?;
        if record.refs > 0 {
            return self.put(blob_key, &record);
        }
        self.delete(blob_key)?;
        self.delete(keys::sha256_index(&record.descriptor.sha256))?;
        dec(&mut stats.blobs, 1, "blobs")?;
        for (chunk, len) in chunks {
            let refs_key = keys::chunk_refs(&chunk);
            let mut refs = self
                .get_raw(&refs_key)?
                .and_then(|raw| ChunkRefCount::decode(&raw))
                .ok_or_else(|| anyhow::anyhow!("blob {blob} references uncounted chunk {chunk}"))?;
            dec(&mut refs.count, 1, "chunk references")?;
            if refs.count == 0 {
                self.delete(refs_key)?;
                dec(&mut stats.chunks, 1, "chunks")?;
                dec(&mut stats.physical_bytes, u64::from(len), "physical bytes")?;
                // Kept until a ReleaseFreed passes this change (see keys::FREED_PREFIX).
                self.deferred.push(chunk);
            } else {
                self.put_raw(refs_key, refs.encode())?;
            }
        }
        Ok(())
    }
}

/// Adds to a stored counter. Past `u64::MAX` the state and the command disagree: the command is
/// refused (the same way on every node, counted and logged by the caller), never wrapped.
pub fn inc(counter: &mut u64, by: u64, what: &str) -> anyhow::Result<()> {
    *counter = counter
        .checked_add(by)
        .ok_or_else(|| anyhow::anyhow!("the count of {what} would overflow"))?;
    Ok(())
}

/// Subtracts from a stored counter; below zero the command is refused (see [`inc`]), never a
/// panic that would stop Raft on every node at the same entry.
pub fn dec(counter: &mut u64, by: u64, what: &str) -> anyhow::Result<()> {
    *counter = counter
        .checked_sub(by)
        .ok_or_else(|| anyhow::anyhow!("the count of {what} would go below zero"))?;
    Ok(())
}

impl Txn<'_, '_> {
    /// The chunks of every blob a command names, each once.
    pub(super) fn distinct_command_chunks(
        &self,
        command: &Command,
    ) -> anyhow::Result<Vec<ChunkId>> {
        let mut seen = BTreeSet::new();
        Ok(self
            .formats
            .chunks(command)?
            .into_iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| c.id)
            .collect())
    }
}

/// The chunks of a blob, each once, with their lengths.
pub(super) fn distinct_chunks(descriptor: &BlobDescriptor) -> Vec<(ChunkId, u32)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for chunk in &descriptor.chunks {
        if seen.insert(chunk.id) {
            out.push((chunk.id, chunk.len));
        }
    }
    out
}
