//! Content storage: blobs cut into content-defined chunks named by blake3 and stored once.
//!
//! [`chunker`] cuts a stream (FastCDC), [`chunk_store`] keeps chunks with their pins, leases
//! and durability tracking, [`ingest`] streams a request body into chunks in bounded memory,
//! [`gc`] deletes chunks nothing references, [`blob_stream`] serves a blob or a range of it
//! chunk by chunk, verified.

pub mod blob_stream;
pub mod chunk_store;
pub mod chunker;
pub mod gc;
pub mod ingest;
