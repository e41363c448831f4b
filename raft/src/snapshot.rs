//! Snapshot files: the encoding of a snapshot and the directory that keeps the current one.
//!
//! A snapshot's data is the application's part of the state-machine column family (every key
//! not starting with `\0`), in key order, each pair length-prefixed (`u32` big-endian key length,
//! key, `u32` big-endian value length, value). The driver's own keys (`last_applied`, the
//! membership) travel in the [`SnapshotMeta`]. Snapshots hold metadata only (chunk bytes never
//! go through Raft), but with a million artifacts that is a few GiB, so a snapshot is never held
//! in memory: it is streamed from a RocksDB snapshot view into a file, sent from that file in
//! chunks, received into a file, and installed from that file in bounded write batches.
//!
//! The data file is exactly the body openraft sends (it seeks in it and reads chunks of
//! `snapshot_max_chunk_size`), so the meta lives in a separate file. Directory layout:
//!
//! - `snap-<hex of the snapshot id>.data`: the data of the current snapshot;
//! - `current`: the meta of the current snapshot, the name and length of its data file;
//!   replaced atomically (write, fsync, rename, fsync the directory), which is what makes a new
//!   snapshot current, after which superseded data files are deleted;
//! - `build-*.tmp`, `recv-*.tmp`: snapshots being built or received; leftovers of a crash are
//!   deleted when the directory is opened.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::storage::{decode, encode};
use crate::types::SnapshotMeta;

const CURRENT: &str = "current";
const CURRENT_TMP: &str = "current.tmp";
const MAGIC: &[u8; 8] = b"ARCASNP2";
/// The single-file format of earlier versions (header and data in one file). Dropped when
/// found: openraft rebuilds a snapshot at start-up when it has purged logs and finds none.
const LEGACY_FILE: &str = "current.snapshot";
const DATA_PREFIX: &str = "snap-";
const DATA_SUFFIX: &str = ".data";
const TMP_SUFFIX: &str = ".tmp";
pub(crate) const RECV_PREFIX: &str = "recv-";
pub(crate) const BUILD_PREFIX: &str = "build-";
/// Buffer size of the readers and writers that stream a snapshot.
pub(crate) const IO_BUFFER: usize = 1 << 20;

/// A snapshot's data: a file in (or, for a snapshot handed over by another store, outside) the
/// snapshot directory. Reads, writes and seeks go to the file; the path lets the store make a
/// received file current by renaming it instead of copying it.
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    pub(crate) fn new(file: tokio::fs::File, path: PathBuf) -> Self {
        Self { file, path }
    }

    /// Where the data is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn into_parts(self) -> (tokio::fs::File, PathBuf) {
        (self.file, self.path)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// Appends one key/value pair to a snapshot body.
pub(crate) fn write_pair(out: &mut impl Write, key: &[u8], value: &[u8]) -> io::Result<()> {
    let len = |n: usize| {
        u32::try_from(n).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "state-machine key or value over 4 GiB",
            )
        })
    };
    out.write_all(&len(key.len())?.to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(&len(value.len())?.to_be_bytes())?;
    out.write_all(value)
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated snapshot")
}

/// Reads the pairs of a snapshot body one at a time, into reused buffers.
pub(crate) struct PairReader<R> {
    inner: R,
}

impl<R: BufRead> PairReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner }
    }

    /// Reads the next pair into `key` and `value`; `false` at the end of the body. A body that
    /// ends inside a pair is an error.
    pub(crate) fn next_pair(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> io::Result<bool> {
        if self.inner.fill_buf()?.is_empty() {
            return Ok(false);
        }
        self.read_field(key)?;
        self.read_field(value)?;
        Ok(true)
    }

    fn read_field(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.inner
            .read_exact(&mut len)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => truncated(),
                _ => e,
            })?;
        let len = u64::from(u32::from_be_bytes(len));
        out.clear();
        // `take` grows the buffer as bytes arrive, so a corrupt length cannot allocate 4 GiB.
        let read = (&mut self.inner).take(len).read_to_end(out)?;
        if read as u64 != len {
            return Err(truncated());
        }
        Ok(())
    }
}

/// What `current` holds.
#[derive(Serialize, Deserialize)]
struct CurrentRecord {
    meta: SnapshotMeta,
    data_file: String,
    data_len: u64,
}

/// The snapshot directory. Cheap to clone; clones share the locks.
#[derive(Clone)]
pub(crate) struct SnapshotFiles {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Serializes changes of the current snapshot against each other and against readers
    /// between reading `current` and opening the data file it names.
    files: parking_lot::Mutex<()>,
    /// Held by an install for its whole duration: a snapshot build takes its RocksDB view, and
    /// commits its result, only outside an install, so it never captures a half-installed state
    /// and never replaces the snapshot an install (or its crash recovery) depends on.
    gate: parking_lot::Mutex<()>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl SnapshotFiles {
    /// Opens (creating) the directory and deletes what a crash or an older version left.
    pub(crate) fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        let files = Self {
            inner: Arc::new(Inner {
                dir,
                files: parking_lot::Mutex::new(()),
                gate: parking_lot::Mutex::new(()),
            }),
        };
        let current = files.read_current()?;
        let keep = current.as_ref().map(|c| c.data_file.clone());
        for entry in fs::read_dir(&files.inner.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = name.ends_with(TMP_SUFFIX)
                || name == LEGACY_FILE
                || (name.starts_with(DATA_PREFIX)
                    && name.ends_with(DATA_SUFFIX)
                    && keep.as_deref() != Some(name));
            if stale {
                tracing::info!(file = name, "removing stale snapshot file");
                fs::remove_file(files.inner.dir.join(name))?;
            }
        }
        Ok(files)
    }

    /// See [`Inner::gate`].
    pub(crate) fn gate(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.gate.lock()
    }

    /// A fresh temporary path in the directory, `<prefix><unique>.tmp`.
    pub(crate) fn temp_path(&self, prefix: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.inner
            .dir
            .join(format!("{prefix}{}-{n}{TMP_SUFFIX}", std::process::id()))
    }

    /// Whether `path` is a receive temp file of this directory (which an install may rename).
    pub(crate) fn is_own_receive_file(&self, path: &Path) -> bool {
        path.parent() == Some(self.inner.dir.as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(RECV_PREFIX) && n.ends_with(TMP_SUFFIX))
    }

    /// Deletes receive temp files other than `keep`: openraft receives one snapshot at a time,
    /// so starting a new one abandons any earlier one.
    pub(crate) fn remove_receive_files_except(&self, keep: &Path) -> io::Result<()> {
        for entry in fs::read_dir(&self.inner.dir)? {
            let path = entry?.path();
            if path != keep && self.is_own_receive_file(&path) {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn data_name(meta: &SnapshotMeta) -> String {
        use std::fmt::Write as _;
        // Hex, because the id comes from the leader and must not be trusted as a file name.
        let mut name = String::from(DATA_PREFIX);
        for byte in meta.snapshot_id.as_bytes() {
            let _ = write!(name, "{byte:02x}");
        }
        name.push_str(DATA_SUFFIX);
        name
    }

    fn read_current(&self) -> io::Result<Option<CurrentRecord>> {
        let bytes = match fs::read(self.inner.dir.join(CURRENT)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt snapshot meta"))?;
        decode(body).map(Some).map_err(io_other)
    }

    /// The current snapshot: its meta, and its data file opened for reading (not read).
    pub(crate) fn open_current(&self) -> io::Result<Option<(SnapshotMeta, fs::File, PathBuf)>> {
        let _files = self.inner.files.lock();
        let Some(current) = self.read_current()? else {
            return Ok(None);
        };
        let path = self.inner.dir.join(&current.data_file);
        let file = fs::File::open(&path)?;
        let len = file.metadata()?.len();
        if len != current.data_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data {} has {len} bytes, its meta says {}",
                    path.display(),
                    current.data_len
                ),
            ));
        }
        Ok(Some((current.meta, file, path)))
    }

    /// Makes `data` (a synced file in this directory) the data of snapshot `meta` and the
    /// current snapshot, and deletes superseded data files. Unless `force`, a snapshot older
    /// than the current one is not made current: then `Ok(None)` and `data` is left alone.
    /// Returns the data file's new path.
    ///
    /// The caller holds the [`gate`](Self::gate).
    pub(crate) fn commit(
        &self,
        _gate: &parking_lot::MutexGuard<'_, ()>,
        meta: &SnapshotMeta,
        data: &Path,
        force: bool,
    ) -> io::Result<Option<PathBuf>> {
        let _files = self.inner.files.lock();
        if !force {
            if let Some(current) = self.read_current()? {
                if current.meta.last_log_id > meta.last_log_id {
                    return Ok(None);
                }
            }
        }
        let data_file = Self::data_name(meta);
        let data_path = self.inner.dir.join(&data_file);
        let data_len = fs::metadata(data)?.len();
        fs::rename(data, &data_path)?;
        let record = CurrentRecord {
            meta: meta.clone(),
            data_file: data_file.clone(),
            data_len,
        };
        let bytes = encode(&record).map_err(io_other)?;
        let tmp = self.inner.dir.join(CURRENT_TMP);
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.inner.dir.join(CURRENT))?;
        fs::File::open(&self.inner.dir)?.sync_all()?;
        // Readers that opened a superseded file keep reading it: the inode lives until closed.
        for entry in fs::read_dir(&self.inner.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(DATA_PREFIX) && name.ends_with(DATA_SUFFIX) && name != data_file {
                fs::remove_file(self.inner.dir.join(name))?;
            }
        }
        Ok(Some(data_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut reader = PairReader::new(body);
        let mut out = Vec::new();
        let (mut key, mut value) = (Vec::new(), Vec::new());
        while reader.next_pair(&mut key, &mut value)? {
            out.push((key.clone(), value.clone()));
        }
        Ok(out)
    }

    #[test]
    fn pairs_round_trip_and_truncation_is_refused() {
        let mut body = Vec::new();
        write_pair(&mut body, b"a", b"1").expect("write");
        write_pair(&mut body, b"", b"").expect("write");
        write_pair(&mut body, b"key", &[0u8; 300]).expect("write");
        let decoded = pairs(&body).expect("decodes");
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[2].1.len(), 300);
        for cut in 1..body.len() {
            if cut == 10 || cut == 18 {
                // Pair boundaries: a shorter but whole body.
                continue;
            }
            assert!(pairs(&body[..cut]).is_err(), "cut at {cut} refused");
        }
    }

    #[test]
    fn a_corrupt_length_does_not_allocate_it() {
        let mut body = Vec::new();
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        body.extend_from_slice(b"short");
        assert!(pairs(&body).is_err());
    }
}
