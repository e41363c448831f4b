//! Admission of uploads: how many run at once on the node and from one client, and whether the
//! disk has room. Each refusal is a precise status with a code, before any byte is stored.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::AppState;
use crate::config::LimitsConfig;
use crate::error::Error;

/// How often the free space of the data directory's filesystem is read again.
const DISK_CHECK_MS: i64 = 1000;

/// The node's upload admission.
pub struct UploadLimiter {
    global: Arc<Semaphore>,
    limit: usize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
    data_dir: PathBuf,
    min_free: u64,
    free: AtomicU64,
    checked_at_ms: AtomicI64,
}

/// One admitted upload; releases its place when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    client: Option<(Arc<UploadLimiter>, IpAddr)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((limiter, ip)) = &self.client {
            let mut clients = limiter.per_client.lock();
            if let Some(count) = clients.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    clients.remove(ip);
                }
            }
        }
    }
}

impl UploadLimiter {
    pub fn new(limits: &LimitsConfig, data_dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
            limit: limits.max_concurrent_uploads,
            per_client: Mutex::new(HashMap::new()),
            max_per_client: limits.max_uploads_per_client,
            data_dir,
            min_free: limits.min_free_disk_bytes,
            free: AtomicU64::new(u64::MAX),
            checked_at_ms: AtomicI64::new(i64::MIN),
        })
    }

    /// Free bytes on the data directory's filesystem, read at most once a second.
    fn free_bytes(&self) -> u64 {
        let now = crate::metadata::model::now_ms();
        if now.saturating_sub(self.checked_at_ms.load(Ordering::Relaxed)) >= DISK_CHECK_MS {
            self.checked_at_ms.store(now, Ordering::Relaxed);
            match nix::sys::statvfs::statvfs(&self.data_dir) {
                Ok(stat) => {
                    // `fsblkcnt_t` and `c_ulong` are both 64-bit on the Linux targets Arca runs on.
                    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
                    self.free.store(free, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "read the free space of the data directory"),
            }
        }
        self.free.load(Ordering::Relaxed)
    }

    /// Admits an upload, or says why not.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Admission, Error> {
        let free = self.free_bytes();
        if free < self.min_free {
            metrics::counter!("arca_http_refused_uploads_total", "reason" => "disk").increment(1);
            return Err(Error::InsufficientStorage {
                free,
                reserve: self.min_free,
            });
        }
        let Ok(permit) = self.global.clone().try_acquire_owned() else {
            metrics::counter!("arca_http_refused_uploads_total", "reason" => "node").increment(1);
            return Err(Error::TooManyUploads {
                scope: "on this node",
                limit: self.limit,
            });
        };
        let client = match client {
            Some(ip) => {
                let mut clients = self.per_client.lock();
                let count = clients.entry(ip).or_insert(0);
                if *count >= self.max_per_client {
                    metrics::counter!("arca_http_refused_uploads_total", "reason" => "client")
                        .increment(1);
                    return Err(Error::TooManyUploads {
                        scope: "from this client",
                        limit: self.max_per_client,
                    });
                }
                *count += 1;
                Some((self.clone(), ip))
            }
            None => None,
        };
        Ok(Admission {
            _permit: permit,
            client,
        })
    }
}

/// Whether a request sends content to be stored.
fn is_upload(method: &Method, path: &str) -> bool {
    if path.starts_with("/files/") {
        return method == Method::PUT;
    }
    if path.starts_with("/v2/") {
        return matches!(*method, Method::PUT | Method::PATCH | Method::POST);
    }
    false
}

/// Axum middleware: admits uploads before their handlers read a byte of the body.
pub async fn admit_uploads(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if !is_upload(request.method(), &path) {
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    match state.uploads.admit(client) {
        Ok(admission) => {
            let response = next.run(request).await;
            drop(admission);
            response
        }
        Err(error) if path.starts_with("/v2/") => {
            crate::formats::oci::error::OciError::Node(error).into_response()
        }
        Err(error) => error.into_response(),
    }
}
