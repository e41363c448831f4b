//! The OCI registry: the Distribution API v1.1 (`/v2/`) that docker, podman, skopeo and
//! kubelet speak, over repositories of format `oci`.
//!
//! The first path component of a `<name>` is the Arca repository, the rest the image in it
//! ([`names`]). An OCI blob is an Arca blob: uploads go through the shared ingest pipeline,
//! so an image layer that also exists as a generic file is stored once. What the registry
//! adds is metadata, changed by [`model::OciCommand`]s that go through Raft and are applied
//! by [`apply`]: blob links (which blobs an image may serve), manifests (their bytes stored as
//! blobs, plus what they reference), tags, and the referrers index. Upload sessions are
//! node-local files ([`uploads`]). [`registry`] holds the operations, [`api`] the HTTP
//! handlers, [`error`] the spec's error codes and bodies.

pub mod api;
pub mod apply;
pub mod catalog;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod names;
pub mod registry;
pub mod uploads;

pub use error::OciError;
pub use registry::Registry;
