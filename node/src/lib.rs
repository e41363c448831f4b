//! The Arca server: chunk store, metadata state machine, HTTP API, and the wiring that runs
//! them on one node of a region.
//!
//! Write path: [`ingest`] cuts a request body into chunks and stores them, [`service`] proposes
//! the command through Raft, [`state_machine`] applies it and keeps the reference counts,
//! [`catalog`] reads the result. Read path: [`catalog`] finds the blob, [`blob_stream`] serves
//! verified chunks from [`chunk_store`].

pub mod api;
pub mod blob_stream;
pub mod catalog;
pub mod chunk_store;
pub mod chunker;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod digest;
pub mod error;
pub mod format;
pub mod formats;
pub mod gc;
pub mod geo;
pub mod http_common;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod names;
pub mod server;
pub mod service;
pub mod state_machine;
pub mod storage;

pub use config::NodeConfig;
pub use error::Error;
pub use server::{start, RunningNode};
