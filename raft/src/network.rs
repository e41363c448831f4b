//! The tonic transport between the nodes of one region.
//!
//! openraft's messages travel MessagePack-encoded inside a small protobuf envelope (see
//! `proto/arca/v1/raft.proto`), so the wire format follows openraft's serde types without a
//! hand-maintained protobuf mirror of them.

pub mod client;
pub mod server;

pub use client::{NetworkClient, NetworkFactory};
pub use server::RaftGrpcService;
