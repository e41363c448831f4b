//! The record of every client operation of a run, with its outcome as the client saw it.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

/// Keys only ever written to mirrors.
pub fn is_mirror_probe(key: &str) -> bool {
    key.starts_with(crate::workload::MIRROR_PROBE_PREFIX)
        || key.starts_with(crate::oci::OCI_MIRROR_PROBE_PREFIX)
        || crate::packages::is_mirror_probe(key)
}

/// Whether a key is written once (a path of the immutable repository, a released package).
pub fn is_immutable_key(key: &str) -> bool {
    key.starts_with(crate::workload::IMMUTABLE_REPO) || crate::packages::is_package_key(key)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// PUT of a new version to a mutable repository.
    Put,
    /// DELETE from a mutable repository.
    Delete,
    /// GET from any node of any region.
    Get,
    /// PUT to an immutable repository (first version, a retry, or an overwrite attempt).
    PutImmutable,
    /// PUT sent to a mirror region, which must refuse it (a file PUT, or an image push to
    /// `/v2/` for an OCI key).
    MirrorWrite,
    /// Image push of a tag (config and layer blobs, then the manifest under the tag).
    OciPush,
    /// DELETE of a tag.
    OciDelete,
    /// GET of a tag's manifest from any node of any region, then of the blobs it references.
    OciPull,
    /// PUT without a credential or with a forged token, which must be refused (401) and
    /// never stored.
    Unauthorized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (2xx; a GET's 200 or 404 is an ok read).
    Ok,
    /// Definitely not applied: refused with a 3xx/4xx, or the connection was never made.
    Failed,
    /// Sent, but no definite answer (timeout, reset, 5xx): it may or may not have applied.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    pub kind: OpKind,
    /// `repo/path` for files, `oci:<repo>/<image>:<tag>` for OCI tags.
    pub key: String,
    /// The version written (writes only).
    pub version: Option<u64>,
    /// sha256 of the bytes written, or of the bytes a GET returned (for OCI, of the manifest).
    pub sha256: Option<String>,
    pub region: String,
    pub node: u64,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// Error code or message, when there is one.
    pub detail: String,
    /// An OCI pull read a blob whose bytes do not have the digest it was asked by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_mismatch: Option<String>,
}

/// The shared, append-only history.
#[derive(Clone)]
pub struct History {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            ops: Arc::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn push(&self, mut op: Op) {
        let mut ops = self.ops.lock();
        op.id = ops.len() as u64;
        ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().clone()
    }
}
