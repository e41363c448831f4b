//! Reads of the applied metadata: repositories, artifacts, blobs, reference counts, the change
//! log. Every read sees a committed state-machine batch as a whole.

use std::sync::Arc;

use arca_raft::storage::CF_STATE_MACHINE;
use rocksdb::{ColumnFamily, Direction, IteratorMode, DB};
use serde::de::DeserializeOwned;

use crate::digest::{Blake3, ChunkId, Sha256};
use crate::error::{Error, Result};
use crate::metadata::codec::decode;
use crate::metadata::keys::{self, ChunkRefCount};
use crate::metadata::model::{
    Artifact, BlobRecord, ChangeLogHead, ChangeRecord, DivergentWrite, Fork, GlobalStats,
    RegionRole, RepoStats, Repository,
};
use crate::names::{ArtifactPath, RepoName};

/// Read access to the metadata state machine.
#[derive(Clone)]
pub struct Catalog {
    db: Arc<DB>,
    /// Bumped after every applied batch that changed auth records (and after a snapshot was
    /// installed): the in-memory credential state reloads when it moved.
    auth_generation: Arc<std::sync::atomic::AtomicU64>,
}

/// The repository state of one view, in batches (see [`Catalog::state_reader`]).
pub struct StateReader {
    pub head: ChangeLogHead,
    rx: std::sync::mpsc::Receiver<Result<arca_replication::store::Pairs>>,
}

impl StateReader {
    /// The next batch; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<arca_replication::store::Pairs>> {
        match self.rx.recv() {
            Ok(batch) => batch.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Every remaining pair (tests and small states).
    pub fn collect_all(mut self) -> Result<arca_replication::store::Pairs> {
        let mut all = Vec::new();
        while let Some(batch) = self.next_batch()? {
            all.extend(batch);
        }
        Ok(all)
    }
}

/// A page of a listing and the cursor for the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to continue; `None` when the listing is complete.
    pub next: Option<String>,
}

impl Catalog {
    pub fn new(db: Arc<DB>) -> Self {
        Self {
            db,
            auth_generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// The highest command version, and payload version of `format`, this region applied
    /// (see [`keys::APPLIED_VERSIONS_PREFIX`]).
    pub fn applied_versions(&self, format: Option<&str>) -> Result<u32> {
        let key = match format {
            Some(format) => keys::applied_format_version(format),
            None => keys::APPLIED_COMMAND_VERSION.to_vec(),
        };
        Ok(self
            .get_raw(&key)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    /// See [`Catalog::bump_auth_generation`].
    pub fn auth_generation(&self) -> u64 {
        self.auth_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called once auth records changed on disk (after the batch is written).
    pub(crate) fn bump_auth_generation(&self) {
        self.auth_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    fn cf(&self) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(CF_STATE_MACHINE)
            .ok_or_else(|| Error::Internal("state machine column family is missing".into()))
    }

    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf()?, key)?)
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.get_raw(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Scans keys with `prefix` in order, starting strictly after `after` if given. Returns at
    /// most `limit` items and whether more follow.
    pub(crate) fn scan<T>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        mut map: impl FnMut(&[u8], &[u8]) -> Result<T>,
    ) -> Result<(Vec<T>, bool)> {
        let start = match after {
            Some(after) => {
                let mut key = after.to_vec();
                key.push(0);
                key
            }
            None => prefix.to_vec(),
        };
        let iter = self
            .db
            .iterator_cf(self.cf()?, IteratorMode::From(&start, Direction::Forward));
        let mut items = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                return Ok((items, false));
            }
            if items.len() == limit {
                return Ok((items, true));
            }
            items.push(map(&key, &value)?);
        }
        Ok((items, false))
    }

    pub fn repo(&self, name: &RepoName) -> Result<Option<Repository>> {
        self.get(&keys::repo(name))
    }

    /// The repository, or `REPO_NOT_FOUND`.
    pub fn must_repo(&self, name: &RepoName) -> Result<Repository> {
        self.repo(name)?.ok_or_else(|| Error::RepoNotFound {
            repo: name.to_string(),
        })
    }

    pub fn repos(&self) -> Result<Vec<Repository>> {
        let (repos, _) = self.scan(keys::REPO_PREFIX, None, usize::MAX, |_, v| decode(v))?;
        Ok(repos)
    }

    pub fn repo_stats(&self, name: &RepoName) -> Result<RepoStats> {
        Ok(self.get(&keys::repo_stats(name))?.unwrap_or_default())
    }

    pub fn artifact(&self, repo: &RepoName, path: &ArtifactPath) -> Result<Option<Artifact>> {
        self.get(&keys::artifact(repo, path))
    }

    /// Artifacts of `repo` whose path starts with `prefix`, in path order, after `after`.
    pub fn artifacts(
        &self,
        repo: &RepoName,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Artifact>> {
        let scan_prefix = keys::artifact_prefix(repo, prefix);
        let after_key = after.map(|a| keys::artifact_prefix(repo, a));
        let (items, more) =
            self.scan(&scan_prefix, after_key.as_deref(), limit, |_, v| decode(v))?;
        let next = if more {
            items.last().map(|a: &Artifact| a.path.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    pub fn blob(&self, id: &Blake3) -> Result<Option<BlobRecord>> {
        self.get(&keys::blob(id))
    }

    pub fn blob_by_sha256(&self, sha: &Sha256) -> Result<Option<BlobRecord>> {
        let Some(raw) = self.get_raw(&keys::sha256_index(sha))? else {
            return Ok(None);
        };
        let Some(id) = Blake3::from_slice(&raw) else {
            return Err(Error::Internal("corrupt sha256 index entry".into()));
        };
        self.blob(&id)
    }

    /// How many references keep the chunk: live blobs using it, plus (while they exist) a
    /// staged snapshot's blobs and divergent writes awaiting the operator. 0 when none: the
    /// chunk may be collected.
    pub fn chunk_refs(&self, id: &ChunkId) -> Result<u64> {
        let mut refs = 0;
        for key in [keys::chunk_refs(id), keys::staged_chunk_refs(id)] {
            if let Some(raw) = self.get_raw(&key)? {
                refs += ChunkRefCount::decode(&raw)
                    .map(|c| c.count)
                    .ok_or_else(|| Error::Internal("corrupt chunk reference count".into()))?;
            }
        }
        if let Some(raw) = self.get_raw(&keys::divergent_chunk(id))? {
            refs += keys::decode_count(&raw)
                .ok_or_else(|| Error::Internal("corrupt divergent chunk count".into()))?;
        }
        Ok(refs)
    }

    /// Calls `f` with every chunk some live blob references.
    pub fn for_each_referenced_chunk(
        &self,
        mut f: impl FnMut(ChunkId) -> Result<()>,
    ) -> Result<()> {
        let prefix = keys::CHUNK_REFS_PREFIX;
        let iter = self
            .db
            .iterator_cf(self.cf()?, IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (key, _) = item?;
            let Some(raw) = key.strip_prefix(prefix) else {
                break;
            };
            if let Some(id) = ChunkId::from_slice(raw) {
                f(id)?;
            }
        }
        Ok(())
    }

    pub fn global_stats(&self) -> Result<GlobalStats> {
        Ok(self.get(keys::GLOBAL_STATS)?.unwrap_or_default())
    }

    pub fn changelog_head(&self) -> Result<ChangeLogHead> {
        Ok(self.get(keys::CHANGELOG_HEAD)?.unwrap_or_default())
    }

    /// Whether a staged snapshot is being installed: the state is then half the old one and
    /// half the snapshot's, and no read may be answered from it.
    pub fn installing_snapshot(&self) -> Result<bool> {
        Ok(self
            .staging()?
            .is_some_and(|staging| staging.install.is_some()))
    }

    /// This region's role (primary unless a mirror role was set).
    pub fn role(&self) -> Result<RegionRole> {
        Ok(self.get(keys::ROLE)?.unwrap_or_default())
    }

    /// Where this region's epoch began, if it was promoted.
    pub fn fork(&self) -> Result<Option<Fork>> {
        self.get(keys::FORK)
    }

    /// The epoch of entry `seq` of this region's history: the change record's, or (for a
    /// trimmed entry) the epoch that began last before it; `None` past the head.
    pub fn epoch_at(&self, seq: u64) -> Result<Option<u64>> {
        let head = self.changelog_head()?;
        if seq > head.last_seq {
            return Ok(None);
        }
        if let Some(record) = self.change(seq)? {
            return Ok(Some(record.epoch));
        }
        let mut epoch = 1;
        for fork in self.forks()? {
            if fork.after_seq < seq {
                epoch = epoch.max(fork.epoch);
            }
        }
        Ok(Some(epoch))
    }

    /// Every promotion in this region's history, oldest first (see [`keys::FORKS`]).
    pub fn forks(&self) -> Result<Vec<Fork>> {
        if let Some(forks) = self.get::<Vec<Fork>>(keys::FORKS)? {
            return Ok(forks);
        }
        Ok(self.fork()?.into_iter().collect())
    }

    /// One change record.
    pub fn change(&self, seq: u64) -> Result<Option<ChangeRecord>> {
        self.get(&keys::change(seq))
    }

    /// One divergent write.
    pub fn divergent_write(&self, seq: u64) -> Result<Option<DivergentWrite>> {
        self.get(&keys::divergent(seq))
    }

    /// The region's cluster id, once recorded.
    pub fn cluster_id(&self) -> Result<Option<String>> {
        Ok(self
            .get_raw(keys::CLUSTER_ID)?
            .map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    /// The highest epoch this region has seen.
    pub fn max_epoch(&self) -> Result<u64> {
        Ok(self
            .get_raw(keys::MAX_EPOCH)?
            .and_then(|raw| keys::decode_count(&raw))
            .unwrap_or(0))
    }

    /// The snapshot being staged, if any.
    pub fn staging(&self) -> Result<Option<crate::metadata::model::Staging>> {
        self.get(keys::STAGING)
    }

    /// Writes this region accepted after the fork point of the region that replaced it.
    pub fn divergent_writes(&self) -> Result<Vec<DivergentWrite>> {
        let (items, _) = self.scan(keys::DIVERGENT_PREFIX, None, usize::MAX, |_, v| decode(v))?;
        Ok(items)
    }

    /// The repository state (not driver- or region-local keys) from one consistent view,
    /// read in batches of about `batch_bytes` by a thread of its own: memory stays at two
    /// batches whatever the size of the state (a mirror snapshot of a million artifacts).
    pub fn state_reader(&self, batch_bytes: usize) -> Result<StateReader> {
        let db = self.db.clone();
        let (head_tx, head_rx) = std::sync::mpsc::sync_channel::<Result<ChangeLogHead>>(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<arca_replication::store::Pairs>>(1);
        std::thread::Builder::new()
            .name("state-reader".into())
            .spawn(move || {
                let Some(cf) = db.cf_handle(CF_STATE_MACHINE) else {
                    let _ = head_tx.send(Err(Error::Internal(
                        "state machine column family is missing".into(),
                    )));
                    return;
                };
                let view = db.snapshot();
                let head = match view.get_cf(cf, keys::CHANGELOG_HEAD) {
                    Ok(Some(bytes)) => decode(&bytes),
                    Ok(None) => Ok(ChangeLogHead::default()),
                    Err(e) => Err(e.into()),
                };
                if head_tx.send(head).is_err() {
                    return;
                }
                let mut options = rocksdb::ReadOptions::default();
                options.set_snapshot(&view);
                let mut batch = Vec::new();
                let mut bytes = 0;
                for item in db.iterator_cf_opt(cf, options, IteratorMode::Start) {
                    let (key, value) = match item {
                        Ok(pair) => pair,
                        Err(e) => {
                            let _ = tx.send(Err(e.into()));
                            return;
                        }
                    };
                    if key.first() == Some(&0) || keys::is_region_local(&key) {
                        continue;
                    }
                    bytes += key.len() + value.len();
                    batch.push((key.to_vec(), value.to_vec()));
                    if bytes >= batch_bytes {
                        // Blocks while the consumer holds the previous batch: back-pressure.
                        if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                            return;
                        }
                        bytes = 0;
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
            })
            .map_err(|e| Error::internal("start the state reader", e))?;
        let head = head_rx
            .recv()
            .map_err(|_| Error::Internal("the state reader stopped".into()))??;
        Ok(StateReader { head, rx })
    }

    /// A digest of the repository metadata (see [`keys::in_state_digest`]), with the
    /// change-log head it corresponds to: two regions that applied the same entries have the
    /// same digest. Streams the state (one consistent view), holding nothing but the hasher.
    pub fn state_digest(&self) -> Result<(ChangeLogHead, String, u64)> {
        let cf = self.cf()?;
        let view = self.db.snapshot();
        let head: ChangeLogHead = match view.get_cf(cf, keys::CHANGELOG_HEAD)? {
            Some(bytes) => decode(&bytes)?,
            None => ChangeLogHead::default(),
        };
        let mut options = rocksdb::ReadOptions::default();
        options.set_snapshot(&view);
        let mut hasher = blake3::Hasher::new();
        let mut referenced_chunks = 0u64;
        for item in self.db.iterator_cf_opt(cf, options, IteratorMode::Start) {
            let (key, value) = item?;
            if key.first() == Some(&0) || !keys::in_state_digest(&key) {
                continue;
            }
            if key.starts_with(keys::CHUNK_REFS_PREFIX) {
                referenced_chunks += 1;
            }
            hasher.update(&(key.len() as u64).to_be_bytes());
            hasher.update(&key);
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(&value);
        }
        Ok((
            head,
            hasher.finalize().to_hex().to_string(),
            referenced_chunks,
        ))
    }

    /// Change records with `seq > after`, in order, at most `limit`.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>> {
        let after_key = (after > 0).then(|| keys::change(after));
        let (items, _) = self.scan(
            keys::CHANGELOG_PREFIX,
            after_key.as_deref(),
            limit,
            |_, v| decode(v),
        )?;
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_streams_in_bounded_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::open_db(dir.path()).expect("open");
        let catalog = Catalog::new(db.clone());
        let cf = catalog.cf().expect("cf");
        for i in 0..20_000u32 {
            db.put_cf(cf, format!("a/r/{i:08}"), vec![7u8; 100])
                .expect("put");
        }
        db.put_cf(cf, keys::ROLE, b"x").expect("put");
        let mut reader = catalog.state_reader(64 << 10).expect("reader");
        let mut pairs = 0;
        let mut batches = 0;
        while let Some(batch) = reader.next_batch().expect("batch") {
            let bytes: usize = batch.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(bytes < (64 << 10) + 200, "a batch of {bytes} bytes");
            pairs += batch.len();
            batches += 1;
        }
        assert_eq!(pairs, 20_000, "every pair, no region-local one");
        assert!(batches > 20);
    }

    #[test]
    fn the_state_digest_ignores_where_this_region_forked() {
        // Audit P10: a promoted region records its fork point; a third region that followed it
        // through the change log never does, yet both hold the same repository state. The
        // digest must agree, or verify always reports a difference and hides a real one.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::open_db(dir.path()).expect("open");
        let catalog = Catalog::new(db.clone());
        let cf = catalog.cf().expect("cf");
        db.put_cf(cf, keys::repo(&RepoName::parse("r").expect("name")), b"x")
            .expect("put");
        let (_, before, _) = catalog.state_digest().expect("digest");
        let fork = crate::metadata::model::Fork {
            epoch: 2,
            after_seq: 10,
            at_ms: 1,
        };
        db.put_cf(
            cf,
            keys::FORK,
            crate::metadata::codec::encode(&fork).expect("encode"),
        )
        .expect("put");
        let (_, after, _) = catalog.state_digest().expect("digest");
        assert_eq!(before, after);
    }
}
