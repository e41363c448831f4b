//! Inter-region replication for Arca: the QUIC transport, the change-log stream protocol and lag
//! accounting, with storage behind traits the node implements.
//!
//! Not built yet: this crate is reserved for the geo-replication issue and contains no code.
//! It is a workspace member already so that its dependencies (quinn, rustls, rcgen) are part of
//! the first RocksDB build instead of forcing a second one when they arrive.
