//! The replication wire protocol over QUIC.
//!
//! Every stream is opened by the mirror and starts with one [`Request`] frame. Frames are a
//! big-endian `u32` length and a MessagePack body; chunk bytes follow their [`ChunkReply`]
//! header raw, so a 4 MiB chunk is never re-encoded.
//!
//! - `Subscribe`: the long-lived feed. The primary sends [`Feed`] frames (entries in order,
//!   heartbeats carrying its head); the mirror sends [`Ack`] frames as it applies.
//! - `GetChunks`: one stream per batch of chunk ids, many in parallel.
//! - `GetSnapshot`: the primary's metadata state as key/value batches, for a mirror that fell
//!   behind what the primary's change log retains.
//! - `Hello`: region identity and epoch, so a returning former primary learns it was replaced.
//! - `Query`: an opaque request the node interprets (read-through lookups, state digests).

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Largest frame body; chunk bytes travel outside frames.
pub const MAX_FRAME: usize = 64 << 20;

/// A chunk's name: the blake3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom("a chunk id is 32 bytes"))?;
        Ok(Self(array))
    }
}

/// A position in a primary's change log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub epoch: u64,
    pub seq: u64,
    /// Commit time of the entry at `seq` (milliseconds since the Unix epoch), 0 if none.
    pub at_ms: i64,
}

/// One change-log entry: an opaque command and the chunks it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub epoch: u64,
    pub seq: u64,
    pub at_ms: i64,
    #[serde(with = "serde_bytes")]
    pub command: Vec<u8>,
    /// Chunks the command references, with their lengths.
    pub chunks: Vec<(ChunkId, u32)>,
}

/// Whether a region accepts writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Mirror,
}

/// What a region says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub region: String,
    pub role: Role,
    pub epoch: u64,
    /// The region a mirror follows.
    pub primary: Option<String>,
    /// HTTP addresses of the region's nodes, for redirecting writes.
    pub http_addrs: Vec<String>,
    /// Replication (QUIC) addresses of the region's nodes.
    pub replication_addrs: Vec<String>,
    /// Where the region's change log stands.
    pub head: Head,
    /// For a promoted region: its epoch and the last entry of the previous epoch it had
    /// applied (the fork point a returning former primary compares against).
    #[serde(default)]
    pub fork: Option<Head>,
    /// Every promotion in this region's history, oldest first: `epoch` began after `seq` of
    /// the epoch before it. A former primary finds where its own epoch ended here, however
    /// many failovers happened since.
    #[serde(default)]
    pub forks: Vec<Head>,
    /// The id of the region's Raft group, fixed when the region was created: a region that
    /// was re-created under the same name has another.
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// The feed protocol version a mirror speaks (in `Subscribe`): 2 adds the primary's head to
/// every batch of entries and the check of the mirror's position against the primary's history.
pub const FEED_PROTOCOL: u32 = 2;

/// The first frame of every stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Subscribe {
        mirror: RegionInfo,
        /// The last entry the mirror applied: its seq, and (protocol 2) its epoch, which the
        /// primary checks against its own history the way Raft checks the previous log term.
        from_seq: u64,
        #[serde(default)]
        from_epoch: u64,
        #[serde(default)]
        protocol: u32,
    },
    GetChunks {
        ids: Vec<ChunkId>,
    },
    GetSnapshot,
    Hello(RegionInfo),
    Query(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Primary → mirror on a subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Feed {
    /// The primary's identity, first on every subscription.
    Welcome(RegionInfo),
    /// Entries in order (to mirrors older than protocol 2).
    Entries(Vec<Entry>),
    /// Entries in order and where the primary's log stands, so lag is right under backlog.
    Batch {
        entries: Vec<Entry>,
        head: Head,
    },
    /// Sent when idle: the primary's head, and the commit time of the first entry the mirror
    /// has not acknowledged (for lag in seconds).
    Heartbeat {
        head: Head,
        next_at_ms: Option<i64>,
        /// The sequence `next_at_ms` belongs to, so a mirror can tell a stale hint (for an
        /// entry it has applied meanwhile) from a current one.
        #[serde(default)]
        next_seq: Option<u64>,
    },
    /// The entries after the mirror's position are no longer retained, or the mirror's last
    /// entry is not in the primary's history (it followed another primary past the fork):
    /// fetch a snapshot.
    SnapshotRequired {
        oldest_seq: u64,
        #[serde(default)]
        reason: Option<String>,
    },
    Refused {
        reason: String,
    },
}

/// Mirror → primary on a subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ack {
    Applied { seq: u64 },
}

/// Header of one chunk on a `GetChunks` stream; `len` raw bytes follow when found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkReply {
    pub id: ChunkId,
    pub found: bool,
    pub len: u32,
}

/// Frames of a `GetSnapshot` stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SnapshotFrame {
    Header { head: Head },
    Pairs(Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>),
    End,
}

/// Reply to `Hello` and `Query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Hello(RegionInfo),
    Query(#[serde(with = "serde_bytes")] Vec<u8>),
    Error(String),
}

pub async fn write_frame<T: Serialize>(stream: &mut quinn::SendStream, value: &T) -> Result<()> {
    let body = rmp_serde::to_vec_named(value)
        .map_err(|e| Error::Protocol(format!("encode frame: {e}")))?;
    if body.len() > MAX_FRAME {
        return Err(Error::Protocol(format!(
            "frame of {} bytes exceeds the limit",
            body.len()
        )));
    }
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| Error::Connection(format!("write frame: {e}")))
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly before a new frame.
pub async fn read_frame<T: DeserializeOwned>(stream: &mut quinn::RecvStream) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(Error::Connection(format!("read frame length: {e}"))),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Protocol(format!(
            "frame of {len} bytes exceeds the limit"
        )));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| Error::Connection(format!("read frame: {e}")))?;
    rmp_serde::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::Protocol(format!("decode frame: {e}")))
}

pub async fn must_read_frame<T: DeserializeOwned>(stream: &mut quinn::RecvStream) -> Result<T> {
    read_frame(stream)
        .await?
        .ok_or_else(|| Error::Protocol("the stream ended where a frame was expected".into()))
}

pub async fn read_bytes(stream: &mut quinn::RecvStream, len: usize) -> Result<Bytes> {
    let mut data = vec![0u8; len];
    stream
        .read_exact(&mut data)
        .await
        .map_err(|e| Error::Connection(format!("read chunk bytes: {e}")))?;
    Ok(Bytes::from(data))
}
