//! Single-flight, stream-through cache fills.
//!
//! The first request for content the cache lacks starts a *fill*: a task, detached from every
//! client, that downloads the upstream's bytes into a spool file and then verifies and commits
//! them. Every request for the same key while the fill runs — the first one included — reads
//! the spool file as it grows, so N clients cause one upstream download and each sees its
//! response head as soon as the upstream's arrives. A client's body ends cleanly only after
//! the content was verified and committed; a fill that fails ends every reader's body with an
//! error, so no client takes a truncated or unverified body for a complete one.
//!
//! A download cut mid-way is resumed with `Range` from the bytes already spooled (within a
//! fill, and across fills for content named by its digest, whose spool file is kept).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use metrics::counter;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use super::upstream::{FailureKind, Upstream};

/// Fills in progress on a node at once; past it, a miss is answered 503.
pub const MAX_ACTIVE_FILLS: usize = 64;
/// Attempts at one download (the first and the resumptions after a cut).
const ATTEMPTS: u32 = 4;
/// Largest piece a reader hands to its client at once.
const READ_PIECE: usize = 256 << 10;
/// A spool file left by a crash or an abandoned fill is deleted after this long.
const SPOOL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why a fill ended without committing.
#[derive(Debug, Clone)]
pub struct FillFailure {
    pub kind: FillFailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillFailureKind {
    Upstream(FailureKind),
    /// The bytes did not match the digest the upstream (or the client) declared.
    Mismatch,
    /// Larger than the node accepts.
    TooLarge,
    /// Too many fills in progress.
    Busy,
    Internal,
}

impl FillFailure {
    pub fn new(kind: FillFailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(FillFailureKind::Internal, message.to_string())
    }
}

impl From<super::upstream::UpstreamError> for FillFailure {
    fn from(e: super::upstream::UpstreamError) -> Self {
        Self::new(FillFailureKind::Upstream(e.kind), e.message)
    }
}

impl std::fmt::Display for FillFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where a fill stands, as readers see it.
#[derive(Debug, Clone, Default)]
pub struct FillState {
    /// Bytes in the spool file that readers may read.
    pub written: u64,
    /// The content's size, once the upstream's response head arrived.
    pub total: Option<u64>,
    /// The upstream's response head of the download (content type, digests, validators).
    pub headers: Option<HeaderMap>,
    /// Set when the fill ended: `Ok` once the content is verified and committed.
    pub done: Option<Result<(), FillFailure>>,
    /// Times the download started over from the first byte (the upstream ignored a range):
    /// a reader that already read bytes of an earlier start must fail.
    pub restarts: u32,
}

/// One fill in progress.
pub struct Fill {
    key: String,
    spool: PathBuf,
    state: watch::Sender<FillState>,
}

impl Fill {
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// Waits until the upstream's response head arrived (or the fill ended) and returns it.
    pub async fn head(&self) -> Result<(Option<u64>, HeaderMap), FillFailure> {
        let mut rx = self.state.subscribe();
        loop {
            {
                let state = rx.borrow_and_update();
                if let Some(Err(failure)) = &state.done {
                    return Err(failure.clone());
                }
                if let Some(headers) = &state.headers {
                    return Ok((state.total, headers.clone()));
                }
                if state.done.is_some() {
                    return Ok((state.total, HeaderMap::new()));
                }
            }
            if rx.changed().await.is_err() {
                return Err(FillFailure::internal("the fill stopped"));
            }
        }
    }

    /// Waits for the fill to end.
    pub async fn finished(&self) -> Result<(), FillFailure> {
        let mut rx = self.state.subscribe();
        loop {
            if let Some(done) = rx.borrow_and_update().done.clone() {
                return done;
            }
            if rx.changed().await.is_err() {
                return Err(FillFailure::internal("the fill stopped"));
            }
        }
    }
}

/// A reader's view of a fill: the spool file, opened before the fill could delete it.
pub struct FillReader {
    fill: Arc<Fill>,
    file: std::fs::File,
}

impl FillReader {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// The content from the first byte, as it arrives; ends once the fill committed, fails if
    /// it did not.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let rx = self.fill.state.subscribe();
        let restarts = rx.borrow().restarts;
        let file = tokio::fs::File::from_std(self.file);
        let state = (file, 0u64, rx, self.fill, false);
        futures::stream::unfold(
            state,
            move |(mut file, offset, mut rx, fill, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let (written, done, restarted) = {
                        let state = rx.borrow_and_update();
                        // The last byte waits for the verdict: a client that has every byte its
                        // Content-Length promised would take the body for complete even if
                        // verification or the commit then failed.
                        let readable = match (&state.done, state.total) {
                            (None, Some(total)) => state.written.min(total.saturating_sub(1)),
                            _ => state.written,
                        };
                        (readable, state.done.clone(), state.restarts != restarts)
                    };
                    if let Some(Err(failure)) = &done {
                        let e = io::Error::other(failure.message.clone());
                        return Some((Err(e), (file, offset, rx, fill, true)));
                    }
                    if restarted && offset > 0 {
                        let e = io::Error::other("the upstream restarted the download");
                        return Some((Err(e), (file, offset, rx, fill, true)));
                    }
                    if offset < written {
                        let want = ((written - offset) as usize).min(READ_PIECE);
                        let mut buf = vec![0u8; want];
                        let read = match file.read(&mut buf).await {
                            Ok(0) => {
                                let e = io::Error::other("the spool file ended early");
                                return Some((Err(e), (file, offset, rx, fill, true)));
                            }
                            Ok(n) => n,
                            Err(e) => return Some((Err(e), (file, offset, rx, fill, true))),
                        };
                        buf.truncate(read);
                        let next = offset + read as u64;
                        return Some((Ok(Bytes::from(buf)), (file, next, rx, fill, false)));
                    }
                    match done {
                        Some(Ok(())) => return None,
                        Some(Err(failure)) => {
                            let e = io::Error::other(failure.message);
                            return Some((Err(e), (file, offset, rx, fill, true)));
                        }
                        None => {
                            if rx.changed().await.is_err() {
                                let e = io::Error::other("the fill stopped");
                                return Some((Err(e), (file, offset, rx, fill, true)));
                            }
                        }
                    }
                }
            },
        )
    }
}

/// The leader's side of a fill: appends to the spool and publishes progress.
pub struct FillWriter {
    fill: Arc<Fill>,
    file: tokio::fs::File,
    written: u64,
}

impl FillWriter {
    pub fn spool(&self) -> &Path {
        &self.fill.spool
    }

    fn publish(&self, change: impl FnOnce(&mut FillState)) {
        self.fill.state.send_modify(change);
    }

    async fn truncate(&mut self) -> io::Result<()> {
        self.file.set_len(0).await?;
        self.file.seek(io::SeekFrom::Start(0)).await?;
        self.written = 0;
        // Readers that read the old prefix would now hold wrong bytes: their bodies end.
        self.publish(|state| {
            state.written = 0;
            state.restarts += 1;
        });
        Ok(())
    }

    async fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).await?;
        self.file.flush().await?;
        self.written += data.len() as u64;
        let written = self.written;
        self.publish(|state| state.written = written);
        Ok(())
    }

    /// Downloads `path` from `upstream` into the spool, resuming from what the spool already
    /// holds, and retrying a cut download with `Range` up to [`ATTEMPTS`] times. Returns the
    /// upstream's response head.
    pub async fn download(
        &mut self,
        upstream: &Upstream,
        path: &str,
        scope: Option<&str>,
        extra: HeaderMap,
        max_bytes: u64,
    ) -> Result<HeaderMap, FillFailure> {
        let repo = upstream.repo.to_string();
        let mut validator: Option<HeaderValue> = None;
        let mut first_head: Option<HeaderMap> = None;
        let mut last_error = FillFailure::internal("no attempt was made");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                counter!("arca_remote_resumes_total", "repo" => repo.clone()).increment(1);
            }
            let mut headers = extra.clone();
            if self.written > 0 {
                if let Ok(range) = HeaderValue::from_str(&format!("bytes={}-", self.written)) {
                    headers.insert(header::RANGE, range);
                }
                if let Some(validator) = &validator {
                    headers.insert(header::IF_RANGE, validator.clone());
                }
            }
            let fetched = match upstream.send(Method::GET, path, headers, scope).await {
                Ok(fetched) => fetched,
                // A resumption retries; a first request that failed is the client's to retry
                // (retrying a 429 at once would only spend more of the upstream's limit).
                Err(e)
                    if e.kind == FailureKind::Unavailable
                        && self.written > 0
                        && attempt + 1 < ATTEMPTS =>
                {
                    last_error = e.into();
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let status = fetched.status();
            let head = fetched.response.headers().clone();
            let total = match status {
                StatusCode::PARTIAL_CONTENT => {
                    let (start, total) = content_range(&head).ok_or_else(|| {
                        FillFailure::internal("the upstream's 206 has no usable Content-Range")
                    })?;
                    if start != self.written {
                        self.truncate().await.map_err(FillFailure::internal)?;
                        continue;
                    }
                    total
                }
                StatusCode::OK => {
                    if self.written > 0 {
                        // The upstream ignored the range (or the content changed): start over.
                        self.truncate().await.map_err(FillFailure::internal)?;
                    }
                    fetched.response.content_length()
                }
                other => {
                    return Err(FillFailure::internal(format!(
                        "the upstream answered a download with {other}"
                    )))
                }
            };
            if total.is_some_and(|total| total > max_bytes) {
                return Err(FillFailure::new(
                    FillFailureKind::TooLarge,
                    format!("the upstream's content is larger than the limit of {max_bytes} bytes"),
                ));
            }
            validator = head
                .get(header::ETAG)
                .filter(|v| !v.as_bytes().starts_with(b"W/"))
                .or_else(|| head.get(header::LAST_MODIFIED))
                .cloned();
            let first = first_head.get_or_insert_with(|| head.clone()).clone();
            self.publish(|state| {
                state.total = total;
                state.headers = Some(first);
            });
            let mut body = fetched.response.bytes_stream();
            let cut = loop {
                let piece = match tokio::time::timeout(upstream.spec.timeout(), body.next()).await {
                    Err(_) => break Some(format!("no data for {:?}", upstream.spec.timeout())),
                    Ok(None) => break None,
                    Ok(Some(Err(e))) => break Some(e.to_string()),
                    Ok(Some(Ok(piece))) => piece,
                };
                if self.written + piece.len() as u64 > total.unwrap_or(max_bytes).min(max_bytes) {
                    return Err(FillFailure::new(
                        FillFailureKind::TooLarge,
                        "the upstream sent more bytes than it declared",
                    ));
                }
                counter!("arca_remote_upstream_bytes_total", "repo" => repo.clone())
                    .increment(piece.len() as u64);
                self.append(&piece).await.map_err(FillFailure::internal)?;
            };
            match (cut, total) {
                (None, Some(total)) if self.written == total => {
                    return Ok(first_head.unwrap_or(head))
                }
                (None, None) => return Ok(first_head.unwrap_or(head)),
                (None, Some(total)) => {
                    last_error = FillFailure::new(
                        FillFailureKind::Upstream(FailureKind::Unavailable),
                        format!(
                            "the upstream's body ended at {} of {total} bytes",
                            self.written
                        ),
                    );
                }
                (Some(reason), _) => {
                    last_error = FillFailure::new(
                        FillFailureKind::Upstream(FailureKind::Unavailable),
                        format!("the download was cut at {} bytes: {reason}", self.written),
                    );
                }
            }
        }
        Err(last_error)
    }
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// The fills of one node.
pub struct Fills {
    dir: PathBuf,
    active: Mutex<HashMap<String, Arc<Fill>>>,
}

/// What the leader task does with its writer: download, verify, commit.
pub type FillJob =
    Box<dyn FnOnce(FillWriter) -> BoxFuture<'static, Result<(), FillFailure>> + Send>;

impl Fills {
    /// Opens the spool directory, deleting spool files older than a day.
    pub fn open(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > SPOOL_MAX_AGE);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            active: Mutex::new(HashMap::new()),
        })
    }

    /// Fills in progress.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Fill>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the fill of `key`, starting it with `job` if none runs. `keep_partial`: a failed
    /// download's spool file is kept for the next fill to resume (only for content whose
    /// digest is known before the download, so resumed bytes are verified).
    pub fn join(
        self: &Arc<Self>,
        key: &str,
        keep_partial: bool,
        job: FillJob,
    ) -> Result<FillReader, FillFailure> {
        let mut active = self.lock();
        if let Some(fill) = active.get(key) {
            let file = std::fs::File::open(&fill.spool).map_err(FillFailure::internal)?;
            counter!("arca_remote_fill_joins_total").increment(1);
            return Ok(FillReader {
                fill: fill.clone(),
                file,
            });
        }
        if active.len() >= MAX_ACTIVE_FILLS {
            return Err(FillFailure::new(
                FillFailureKind::Busy,
                format!("{MAX_ACTIVE_FILLS} cache fills are in progress on this node"),
            ));
        }
        let spool = self
            .dir
            .join(blake3::hash(key.as_bytes()).to_hex().as_str());
        let writer_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spool)
            .map_err(FillFailure::internal)?;
        let existing = writer_file.metadata().map(|m| m.len()).unwrap_or(0);
        let (existing, writer_file) = if keep_partial {
            (existing, writer_file)
        } else {
            writer_file.set_len(0).map_err(FillFailure::internal)?;
            (0, writer_file)
        };
        let reader_file = std::fs::File::open(&spool).map_err(FillFailure::internal)?;
        let (state, _) = watch::channel(FillState {
            written: existing,
            ..FillState::default()
        });
        let fill = Arc::new(Fill {
            key: key.to_string(),
            spool: spool.clone(),
            state,
        });
        active.insert(key.to_string(), fill.clone());
        drop(active);
        let writer = FillWriter {
            fill: fill.clone(),
            file: tokio::fs::File::from_std(writer_file),
            written: existing,
        };
        let fills = self.clone();
        let leader = fill.clone();
        tokio::spawn(async move {
            let result = job(writer).await;
            if let Err(failure) = &result {
                tracing::warn!(key = %leader.key.replace('\u{0}', " "), error = %failure, "a cache fill failed");
            }
            let keep = keep_partial
                && matches!(
                    &result,
                    Err(f) if matches!(f.kind, FillFailureKind::Upstream(FailureKind::Unavailable))
                );
            // Readers hold the file open: removing the name does not cut their bodies.
            fills.lock().remove(&leader.key);
            if !keep {
                let _ = tokio::fs::remove_file(&leader.spool).await;
            }
            let outcome = if result.is_ok() {
                "committed"
            } else {
                "failed"
            };
            counter!("arca_remote_fills_total", "outcome" => outcome).increment(1);
            leader.state.send_modify(|state| state.done = Some(result));
        });
        Ok(FillReader {
            fill,
            file: reader_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_ranges() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(content_range(&headers), Some((100, Some(1000))));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 5-9/*"),
        );
        assert_eq!(content_range(&headers), Some((5, None)));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("items 1-2/3"),
        );
        assert_eq!(content_range(&headers), None);
    }

    #[tokio::test]
    async fn joiners_share_one_fill_and_read_every_byte() {
        let dir = tempfile::tempdir().expect("dir");
        let fills = Arc::new(Fills::open(dir.path().join("spool")).expect("open"));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let job: FillJob = Box::new(move |mut writer: FillWriter| {
            Box::pin(async move {
                writer.publish(|s| {
                    s.total = Some(6);
                    s.headers = Some(HeaderMap::new());
                });
                writer.append(b"abc").await.map_err(FillFailure::internal)?;
                let _ = wait.await;
                writer.append(b"def").await.map_err(FillFailure::internal)?;
                Ok(())
            })
        });
        let first = fills.join("k", false, job).expect("join");
        let unused: FillJob =
            Box::new(|_| Box::pin(async { Err(FillFailure::internal("ran twice")) }));
        let second = fills.join("k", false, unused).expect("join again");
        assert_eq!(fills.active(), 1);
        let a = tokio::spawn(
            first
                .into_stream()
                .map(|p| p.expect("piece").to_vec())
                .concat(),
        );
        let b = tokio::spawn(
            second
                .into_stream()
                .map(|p| p.expect("piece").to_vec())
                .concat(),
        );
        let _ = go.send(());
        let (a, b) = (a.await.expect("a"), b.await.expect("b"));
        assert_eq!(a, b"abcdef".to_vec());
        assert_eq!(b, b"abcdef".to_vec());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fills.active() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fills.active(), 0);
    }

    #[tokio::test]
    async fn a_failed_fill_ends_every_body_with_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let fills = Arc::new(Fills::open(dir.path().join("spool")).expect("open"));
        let job: FillJob = Box::new(|mut writer: FillWriter| {
            Box::pin(async move {
                writer
                    .append(b"partial")
                    .await
                    .map_err(FillFailure::internal)?;
                Err(FillFailure::new(
                    FillFailureKind::Mismatch,
                    "digest mismatch",
                ))
            })
        });
        let reader = fills.join("k", false, job).expect("join");
        let pieces: Vec<io::Result<Bytes>> = reader.into_stream().collect().await;
        assert!(pieces.last().expect("a piece").is_err(), "{pieces:?}");
    }
}
