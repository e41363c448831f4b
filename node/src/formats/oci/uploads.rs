//! Blob upload sessions: the bytes a client sends with `PATCH` before the closing `PUT`.
//!
//! Sessions are node-local. Each is two files under `<data_dir>/uploads/`: `<id>.data`, the
//! bytes received so far, and `<id>.json`, its metadata, whose `received` is the authoritative
//! length. A `PATCH` appends to the data file, fsyncs it, then atomically replaces the
//! metadata, so a session survives a restart with exactly the bytes it acknowledged; bytes
//! written by a `PATCH` that was not acknowledged are cut off at start-up, and a session whose
//! data file lost acknowledged bytes is dropped (the client gets `BLOB_UPLOAD_UNKNOWN` and
//! starts over). The closing `PUT` streams the data file and its own body through ingest; no
//! chunk is written before then. Sessions idle longer than the expiry are deleted by a sweep.
//!
//! A client continuing a session on another node of the region gets `BLOB_UPLOAD_UNKNOWN`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::error::Error;
use crate::formats::oci::error::OciError;
use crate::formats::oci::metrics;
use crate::formats::oci::names::{ImageName, OciName};
use crate::metadata::model::now_ms;
use crate::names::RepoName;

/// A session's metadata, as stored in `<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionMeta {
    id: Uuid,
    repo: RepoName,
    image: ImageName,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// Bytes acknowledged to the client; the data file may be longer only after a crash.
    received: u64,
}

struct Session {
    meta: SessionMeta,
    /// Set when the session was completed, cancelled or expired while someone waited for it.
    removed: bool,
}

/// What upload sessions may hold on a node.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub max_sessions_per_repo: usize,
    /// Bytes all sessions may hold spooled at once.
    pub max_spooled_bytes: u64,
}

impl SessionLimits {
    pub fn from_config(oci: &crate::config::OciConfig) -> Self {
        Self {
            max_sessions: oci.max_upload_sessions,
            max_sessions_per_repo: oci.max_upload_sessions_per_repo,
            max_spooled_bytes: oci.max_spooled_bytes,
        }
    }
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self::from_config(&crate::config::OciConfig::default())
    }
}

/// The node's upload sessions.
pub struct UploadStore {
    dir: PathBuf,
    expiry: Duration,
    limits: SessionLimits,
    sessions: parking_lot::Mutex<HashMap<Uuid, Arc<AsyncMutex<Session>>>>,
    /// Open sessions per repository (counted at create, released at remove).
    per_repo: parking_lot::Mutex<HashMap<RepoName, usize>>,
    /// Bytes all sessions hold spooled.
    spooled: std::sync::atomic::AtomicU64,
}

fn io_error(context: &str, e: std::io::Error) -> OciError {
    OciError::Node(Error::internal(context, e))
}

impl UploadStore {
    /// Opens the session directory (creating it), keeping every session whose acknowledged
    /// bytes are intact.
    pub fn open(dir: PathBuf, expiry: Duration) -> anyhow::Result<Arc<Self>> {
        Self::open_with(dir, expiry, SessionLimits::default())
    }

    /// [`UploadStore::open`] with explicit limits.
    pub fn open_with(
        dir: PathBuf,
        expiry: Duration,
        limits: SessionLimits,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let mut sessions = HashMap::new();
        let mut dropped = 0usize;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => match recover(&path) {
                    Ok(Some(meta)) => {
                        let session = Session {
                            meta,
                            removed: false,
                        };
                        sessions.insert(session.meta.id, Arc::new(AsyncMutex::new(session)));
                    }
                    Ok(None) => dropped += 1,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "dropping unreadable upload session");
                        remove_files(&path.with_extension("data"), &path);
                        dropped += 1;
                    }
                },
                // Data without metadata (a crash during create) and half-written metadata.
                Some("data") if !path.with_extension("json").exists() => {
                    let _ = std::fs::remove_file(&path);
                }
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        if !sessions.is_empty() || dropped > 0 {
            tracing::info!(
                kept = sessions.len(),
                dropped,
                "recovered blob upload sessions"
            );
        }
        metrics::upload_sessions(sessions.len());
        let mut per_repo: HashMap<RepoName, usize> = HashMap::new();
        let mut spooled = 0u64;
        for session in sessions.values() {
            if let Ok(session) = session.try_lock() {
                *per_repo.entry(session.meta.repo.clone()).or_default() += 1;
                spooled += session.meta.received;
            }
        }
        Ok(Arc::new(Self {
            dir,
            expiry,
            limits,
            sessions: parking_lot::Mutex::new(sessions),
            per_repo: parking_lot::Mutex::new(per_repo),
            spooled: std::sync::atomic::AtomicU64::new(spooled),
        }))
    }

    fn data_path(&self, id: &Uuid) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn meta_path(&self, id: &Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Starts a session for `name`.
    pub async fn create(&self, name: &OciName) -> Result<Uuid, OciError> {
        {
            let total = self.sessions.lock().len();
            let mut per_repo = self.per_repo.lock();
            let in_repo = per_repo.get(&name.repo).copied().unwrap_or(0);
            if total >= self.limits.max_sessions || in_repo >= self.limits.max_sessions_per_repo {
                metrics::upload_session_refused();
                return Err(OciError::TooManyRequests {
                    reason: if total >= self.limits.max_sessions {
                        format!(
                            "{total} upload sessions are open on this node, the most it keeps; finish or cancel some"
                        )
                    } else {
                        format!(
                            "{in_repo} upload sessions are open in repository {}, the most it keeps",
                            name.repo
                        )
                    },
                });
            }
            *per_repo.entry(name.repo.clone()).or_default() += 1;
        }
        let id = Uuid::new_v4();
        let now = now_ms();
        let meta = SessionMeta {
            id,
            repo: name.repo.clone(),
            image: name.image.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            received: 0,
        };
        let data = tokio::fs::File::create(self.data_path(&id))
            .await
            .map_err(|e| io_error("create upload data file", e))?;
        data.sync_all()
            .await
            .map_err(|e| io_error("sync upload data file", e))?;
        self.write_meta(&meta).await?;
        let count = {
            let mut sessions = self.sessions.lock();
            sessions.insert(
                id,
                Arc::new(AsyncMutex::new(Session {
                    meta,
                    removed: false,
                })),
            );
            sessions.len()
        };
        metrics::upload_sessions(count);
        Ok(id)
    }

    /// Replaces a session's metadata atomically (write, fsync, rename, fsync the directory).
    async fn write_meta(&self, meta: &SessionMeta) -> Result<(), OciError> {
        let json = serde_json::to_vec(meta)
            .map_err(|e| OciError::Node(Error::internal("encode upload metadata", e)))?;
        let path = self.meta_path(&meta.id);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, &json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| OciError::Node(Error::internal("upload metadata writer panicked", e)))?
        .map_err(|e| io_error("write upload metadata", e))
    }

    /// Locks the session `id` of `name` for one request. Unknown ids, sessions of another name
    /// and sessions removed meanwhile are all `BLOB_UPLOAD_UNKNOWN`.
    pub async fn lock(
        self: &Arc<Self>,
        id: &str,
        name: &OciName,
    ) -> Result<SessionGuard, OciError> {
        let unknown = || OciError::BlobUploadUnknown {
            name: name.to_string(),
            id: id.chars().take(64).collect(),
        };
        let uuid = Uuid::parse_str(id).map_err(|_| unknown())?;
        let handle = self
            .sessions
            .lock()
            .get(&uuid)
            .cloned()
            .ok_or_else(unknown)?;
        let guard = handle.lock_owned().await;
        if guard.removed || guard.meta.repo != name.repo || guard.meta.image != name.image {
            return Err(unknown());
        }
        Ok(SessionGuard {
            store: self.clone(),
            session: guard,
        })
    }

    /// Deletes sessions idle for longer than the expiry (skipping any in use); returns how many.
    pub async fn expire(&self) -> usize {
        let now = now_ms();
        let expiry_ms = i64::try_from(self.expiry.as_millis()).unwrap_or(i64::MAX);
        let handles: Vec<Arc<AsyncMutex<Session>>> =
            self.sessions.lock().values().cloned().collect();
        let mut expired = 0;
        for handle in handles {
            let Ok(mut session) = handle.try_lock_owned() else {
                continue; // a request is using it: not idle
            };
            if session.removed || now.saturating_sub(session.meta.updated_at_ms) < expiry_ms {
                continue;
            }
            let id = session.meta.id;
            self.remove(&mut session).await;
            tracing::info!(upload = %id, "expired an idle blob upload session");
            metrics::upload_session_expired();
            expired += 1;
        }
        expired
    }

    async fn remove(&self, session: &mut Session) {
        session.removed = true;
        let id = session.meta.id;
        self.spooled
            .fetch_sub(session.meta.received, std::sync::atomic::Ordering::SeqCst);
        {
            let mut per_repo = self.per_repo.lock();
            if let Some(count) = per_repo.get_mut(&session.meta.repo) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_repo.remove(&session.meta.repo);
                }
            }
        }
        let count = {
            let mut sessions = self.sessions.lock();
            sessions.remove(&id);
            sessions.len()
        };
        metrics::upload_sessions(count);
        let data = self.data_path(&id);
        let meta = self.meta_path(&id);
        let removed = tokio::task::spawn_blocking(move || remove_files(&data, &meta)).await;
        if removed.is_err() {
            tracing::warn!(upload = %id, "could not remove upload files; start-up will");
        }
    }

    /// How many sessions this node holds.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the expiry sweep every `interval` until `cancel`.
    pub async fn run_expiry(
        self: Arc<Self>,
        interval: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {
                    self.expire().await;
                }
            }
        }
    }
}

/// Reads a session's metadata and reconciles its data file with it. `Ok(None)`: the data file
/// lost acknowledged bytes, and the session was deleted.
fn recover(meta_path: &Path) -> anyhow::Result<Option<SessionMeta>> {
    let meta: SessionMeta = serde_json::from_slice(&std::fs::read(meta_path)?)?;
    let data_path = meta_path.with_extension("data");
    let length = match std::fs::metadata(&data_path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(upload = %meta.id, "upload data file is missing; dropping the session");
            remove_files(&data_path, meta_path);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if length < meta.received {
        tracing::warn!(
            upload = %meta.id,
            length,
            acknowledged = meta.received,
            "upload data file is shorter than what was acknowledged; dropping the session"
        );
        remove_files(&data_path, meta_path);
        return Ok(None);
    }
    if length > meta.received {
        // A PATCH wrote these bytes but crashed before acknowledging them.
        let file = std::fs::OpenOptions::new().write(true).open(&data_path)?;
        file.set_len(meta.received)?;
        file.sync_all()?;
    }
    Ok(Some(meta))
}

fn remove_files(data: &Path, meta: &Path) {
    for path in [meta, data] {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "remove upload file");
            }
        }
    }
}

/// One request's exclusive hold on a session.
pub struct SessionGuard {
    store: Arc<UploadStore>,
    session: OwnedMutexGuard<Session>,
}

impl SessionGuard {
    pub fn id(&self) -> Uuid {
        self.session.meta.id
    }

    /// Bytes received and acknowledged so far.
    pub fn received(&self) -> u64 {
        self.session.meta.received
    }

    /// Appends `body` to the session and makes it durable. On any failure (the body broke
    /// off, the upload grew past `limit`) the data file is cut back, so the session stays
    /// where it was. Returns the new length.
    pub async fn append<S, E>(&mut self, mut body: S, limit: u64) -> Result<u64, OciError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let start = self.session.meta.received;
        let path = self.store.data_path(&self.session.meta.id);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(|e| io_error("open upload data file", e))?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| io_error("seek upload data file", e))?;
        let mut length = start;
        // Bytes this append added to the node's spooled total.
        let mut counted = 0u64;
        let mut failure = None;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(data) => {
                    length += data.len() as u64;
                    if length > limit {
                        failure = Some(OciError::TooLarge { limit });
                        break;
                    }
                    let spooled = self
                        .store
                        .spooled
                        .fetch_add(data.len() as u64, std::sync::atomic::Ordering::SeqCst)
                        + data.len() as u64;
                    counted += data.len() as u64;
                    if spooled > self.store.limits.max_spooled_bytes {
                        failure = Some(OciError::TooLarge {
                            limit: self.store.limits.max_spooled_bytes,
                        });
                        break;
                    }
                    if let Err(e) = file.write_all(&data).await {
                        failure = Some(io_error("write upload data file", e));
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(OciError::Node(Error::IncompleteBody {
                        reason: e.to_string(),
                    }));
                    break;
                }
            }
        }
        let synced = match failure {
            None => file
                .sync_data()
                .await
                .map_err(|e| io_error("sync upload data file", e)),
            Some(error) => Err(error),
        };
        if let Err(error) = synced {
            // Give back what this append counted (its bytes are cut off below).
            self.store
                .spooled
                .fetch_sub(counted, std::sync::atomic::Ordering::SeqCst);
            if let Err(e) = file.set_len(start).await {
                tracing::warn!(error = %e, "could not cut back an upload data file; start-up will");
            }
            return Err(error);
        }
        let mut meta = self.session.meta.clone();
        meta.received = length;
        meta.updated_at_ms = now_ms();
        self.store.write_meta(&meta).await?;
        self.session.meta = meta;
        Ok(length)
    }

    /// The bytes received so far, as a stream.
    pub async fn spooled(
        &self,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, OciError> {
        let file = tokio::fs::File::open(self.store.data_path(&self.session.meta.id))
            .await
            .map_err(|e| io_error("open upload data file", e))?;
        let reader = tokio::io::AsyncReadExt::take(file, self.session.meta.received);
        Ok(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 << 10,
        ))
    }

    /// Ends the session (completed or cancelled) and deletes its files.
    pub async fn remove(mut self) {
        let store = self.store.clone();
        store.remove(&mut self.session).await;
    }
}

#[cfg(test)]
mod tests;
