//! Remote (pull-through) repositories: the parts every format shares.
//!
//! A remote repository is an ordinary repository of its format whose record carries a
//! [`RemoteSpec`]: what it caches is stored as ordinary blobs through ordinary commands
//! (deduplicated, chunked, replicated to mirror regions), so every read path serves a cached
//! artifact exactly as it serves a pushed one. What this module adds:
//!
//! - [`upstream::Upstream`]: the HTTP client of one upstream, with deadlines, a concurrency
//!   limit, a request budget, cached bearer tokens and the classification of failures;
//! - [`fill::Fills`]: single-flight, stream-through downloads with resume;
//! - [`Remotes`]: the node's upstreams and its freshness and negative marks.
//!
//! Freshness is node-local and in memory: the cached content itself is in the state
//! machine, so a restarted node still serves everything it cached — it only asks the upstream
//! once more before trusting a tag or an index document it has not validated since.

pub mod fill;
pub mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use metrics::counter;

pub use crate::metadata::remote_spec::{RemoteSpec, Secret};
pub use fill::{FillFailure, FillFailureKind, Fills};
pub use upstream::{FailureKind, Upstream, UpstreamError};

use crate::error::{Error, Result};
use crate::metadata::model::Repository;
use crate::names::RepoName;

/// Marks kept per node (freshness and negative entries each); past it, expired marks are
/// dropped, then all (a forgotten mark costs one revalidation, nothing more).
const MAX_MARKS: usize = 100_000;

/// Items one purge request removes at most (run it again for more).
pub const MAX_PURGE: usize = 10_000;

/// The header in which Arca (and Artifactory) declare a file's sha256.
pub const CHECKSUM_SHA256: &str = "x-checksum-sha256";

/// Says a response came from the cache without the upstream confirming it.
pub const CACHE_HEADER: &str = "x-arca-cache";

/// Instants recorded per key, bounded.
struct Marks {
    inner: Mutex<HashMap<String, Instant>>,
}

impl Marks {
    fn new() -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn within(&self, key: &str, ttl: Duration) -> bool {
        self.lock().get(key).is_some_and(|at| at.elapsed() < ttl)
    }

    fn set(&self, key: String, max_age: Duration) {
        let mut marks = self.lock();
        if marks.len() >= MAX_MARKS {
            marks.retain(|_, at| at.elapsed() < max_age);
            if marks.len() >= MAX_MARKS {
                marks.clear();
            }
        }
        marks.insert(key, Instant::now());
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    fn remove_prefix(&self, prefix: &str) -> usize {
        let mut marks = self.lock();
        let before = marks.len();
        marks.retain(|key, _| !key.starts_with(prefix));
        before - marks.len()
    }
}

/// How a response relates to the upstream, for the `X-Arca-Cache` header and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache, fresh (immutable, or validated within the TTL).
    Hit,
    /// Fetched from the upstream now.
    Miss,
    /// The upstream confirmed the cached copy.
    Revalidated,
    /// Served from the cache because the upstream could not be asked.
    Stale,
    /// Answered 404 from the negative cache.
    Negative,
}

impl CacheResult {
    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Stale => "stale",
            CacheResult::Negative => "negative",
        }
    }

    /// Adds `X-Arca-Cache` (and, for a stale answer, `Warning: 110`) to a response's headers.
    pub fn mark(self, headers: &mut HeaderMap) {
        headers.insert(CACHE_HEADER, HeaderValue::from_static(self.label()));
        if self == CacheResult::Stale {
            headers.insert(
                axum::http::header::WARNING,
                HeaderValue::from_static("110 arca \"Response is Stale\""),
            );
        }
    }
}

/// The node's remote repositories.
pub struct Remotes {
    pub fills: Arc<Fills>,
    upstreams: Mutex<HashMap<RepoName, Arc<Upstream>>>,
    validated: Marks,
    missing: Marks,
}

impl Remotes {
    pub fn open(spool: PathBuf) -> anyhow::Result<Self> {
        Ok(Self {
            fills: Arc::new(Fills::open(spool)?),
            upstreams: Mutex::new(HashMap::new()),
            validated: Marks::new(),
            missing: Marks::new(),
        })
    }

    /// The upstream of `repo`, or `None` for a repository that is not remote.
    pub fn upstream(&self, repo: &Repository) -> Result<Option<Arc<Upstream>>> {
        let Some(spec) = &repo.remote else {
            return Ok(None);
        };
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(upstream) = upstreams.get(&repo.name) {
            if &upstream.spec == spec {
                return Ok(Some(upstream.clone()));
            }
        }
        let upstream = Arc::new(
            Upstream::new(repo.name.clone(), spec.clone())
                .map_err(|e| Error::internal("build an upstream client", e))?,
        );
        upstreams.insert(repo.name.clone(), upstream.clone());
        Ok(Some(upstream))
    }

    fn key(repo: &RepoName, key: &str) -> String {
        format!("{repo}\u{0}{key}")
    }

    /// Whether the cached metadata under `key` was validated within the repository's TTL.
    pub fn fresh(&self, upstream: &Upstream, key: &str) -> bool {
        self.validated.within(
            &Self::key(&upstream.repo, key),
            upstream.spec.metadata_ttl(),
        )
    }

    /// Records that the upstream just confirmed (or supplied) the metadata under `key`.
    pub fn validated(&self, upstream: &Upstream, key: &str) {
        let key = Self::key(&upstream.repo, key);
        self.missing.remove(&key);
        self.validated.set(key, upstream.spec.metadata_ttl());
    }

    /// Whether the upstream said within the negative TTL that it lacks `key`.
    pub fn known_missing(&self, upstream: &Upstream, key: &str) -> bool {
        self.missing.within(
            &Self::key(&upstream.repo, key),
            upstream.spec.negative_ttl(),
        )
    }

    pub fn missing(&self, upstream: &Upstream, key: &str) {
        if upstream.spec.negative_ttl_secs > 0 {
            self.missing
                .set(Self::key(&upstream.repo, key), upstream.spec.negative_ttl());
        }
    }

    /// Forgets every freshness and negative mark of `repo` under `prefix`: the next request
    /// asks the upstream. Returns how many marks went.
    pub fn forget(&self, repo: &RepoName, prefix: &str) -> usize {
        let prefix = Self::key(repo, prefix);
        self.validated.remove_prefix(&prefix) + self.missing.remove_prefix(&prefix)
    }

    /// Counts a cache answer.
    pub fn count(&self, repo: &RepoName, result: CacheResult) {
        counter!("arca_remote_cache_total", "repo" => repo.to_string(), "result" => result.label())
            .increment(1);
    }
}

/// The error a client sees when its miss could not be filled.
pub fn fill_error(failure: &FillFailure) -> Error {
    match failure.kind {
        FillFailureKind::Upstream(FailureKind::NotFound) => Error::RemoteNotFound {
            reason: failure.message.clone(),
        },
        FillFailureKind::Busy => Error::NotReady {
            reason: failure.message.clone(),
        },
        FillFailureKind::TooLarge => Error::UpstreamFailed {
            reason: failure.message.clone(),
        },
        _ => Error::UpstreamFailed {
            reason: failure.message.clone(),
        },
    }
}

/// Percent-encodes each segment of a stored path for the upstream's URL.
pub fn encode_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'+')
        .remove(b'@')
        .remove(b':');
    path.split('/')
        .map(|segment| percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The sha256 an upstream declares for a file (`X-Checksum-Sha256`, as Arca and Artifactory
/// send), if it declares one.
pub fn declared_sha256(headers: &HeaderMap) -> Option<crate::digest::Sha256> {
    let value = headers.get(CHECKSUM_SHA256)?.to_str().ok()?.trim();
    crate::digest::Sha256::from_hex(value.strip_prefix("sha256:").unwrap_or(value))
}
