//! The Arca server: one node of a region.
//!
//! The modules, from the bottom up (each uses only those before it; the `layout` test checks
//! there is no import circle at any level):
//! - [`error`], [`names`], [`digest`], [`metrics`], [`http_common`]: the types and helpers
//!   everything shares.
//! - [`metadata`]: the replicated state: records and commands ([`metadata::model`]), the key
//!   layout, the state machine that applies commands and keeps reference counts, the format
//!   seam's metadata side ([`metadata::format`]), and reads of the applied state
//!   ([`metadata::catalog`]).
//! - [`storage`]: content-defined chunking, the chunk store, ingest, garbage collection, blob
//!   streams.
//! - [`config`]: the node's settings, composed of each layer's.
//! - [`db`]: the one RocksDB instance, with every column family.
//! - [`region`]: the node's place in its Raft group: proposals, read barriers, chunk pushes to
//!   a quorum, resync.
//! - [`geo`]: this region among regions (replication source and sink, fencing, promotion).
//! - [`service`]: the write kit every format shares.
//! - [`formats`]: one folder per repository format, and the list that registers them.
//! - [`admin`]: the intra-region gRPC service (proposals, read index, status, operator RPCs).
//! - [`api`]: the HTTP router, the admin API and the middleware every request passes.
//! - [`server`]: wiring: what a node runs.
//!
//! Write path: a format's handler ingests the body ([`storage::ingest`]), the write kit
//! ([`service`]) pushes the chunks to a quorum and proposes the format's command through Raft,
//! the state machine hands it to the format's apply, and the answer comes back decoded. Read
//! path: the format's catalog reads find the blob, [`storage::blob_stream`] serves verified
//! chunks.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod formats;
pub mod geo;
pub mod http_common;
pub mod metadata;
pub mod metrics;
pub mod names;
pub mod region;
pub mod remote;
pub mod server;
pub mod service;
pub mod storage;

pub use config::NodeConfig;
pub use error::Error;
pub use server::{start, RunningNode};
