//! The replicated metadata: what a region's Raft group agrees on.
//!
//! [`model`] holds the records and the commands, [`keys`] the key layout of the state-machine
//! column family, [`codec`] the encoding, [`state_machine`] applies commands and keeps the
//! reference counts garbage collection trusts, [`format`] is what the state machine knows of
//! repository formats, and [`catalog`] reads the applied state.

pub mod catalog;
pub mod codec;
pub mod keys;
pub mod model;
pub mod remote_spec;
pub mod state_machine;

/// The format seam's metadata side (it lives with the state machine it is applied by).
pub use state_machine::format;
