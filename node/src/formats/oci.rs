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
//! handlers, [`error`] the spec's error codes and bodies, [`remote`] the read path of remote
//! (pull-through) repositories.

pub mod api;
pub mod apply;
pub mod catalog;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod names;
pub mod registry;
pub mod remote;
pub mod uploads;

pub use error::OciError;
pub use registry::Registry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::response::{IntoResponse, Response};

use super::{Format, FormatContext, Started};
use crate::metadata::format::{decode_payload, FormatApply, FormatName, FormatOutcome, FormatTxn};
use crate::metadata::model::BlobDescriptor;
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use model::{OciCommand, OciOutcome};

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("oci");

impl FormatCommand for OciCommand {
    type Outcome = OciOutcome;
    const FORMAT: FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &OciOutcome) -> bool {
        outcome.changed()
    }
}

/// The OCI registry format (registered in [`crate::formats::registered`]).
pub struct Oci;

impl FormatApply for Oci {
    fn name(&self) -> FormatName {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn key_prefixes(&self) -> &'static [&'static [u8]] {
        keys::PREFIXES
    }

    fn apply(
        &self,
        txn: &mut FormatTxn<'_, '_, '_>,
        _version: u32,
        payload: &[u8],
    ) -> anyhow::Result<FormatOutcome> {
        let command: OciCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        let command: OciCommand = decode_payload(payload)?;
        Ok(command.blobs().into_iter().cloned().collect())
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<OciCommand>(payload)?.at_ms())
    }

    fn proxies(&self) -> bool {
        true
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload::<OciCommand>(payload) {
            Ok(command) => command.describe(),
            Err(e) => format!("an unreadable oci command: {e}"),
        }
    }

    fn check_repo_name(&self, name: &RepoName) -> crate::error::Result<()> {
        names::check_repo_name(name)
    }
}

impl Format for Oci {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/v2/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let config = &context.service.config.oci;
        // Upload sessions whose acknowledged bytes survived are resumed; the rest are dropped.
        let uploads = uploads::UploadStore::open_with(
            context.service.config.data_dir.join("uploads"),
            Duration::from_secs(config.upload_expiry_secs),
            uploads::SessionLimits::from_config(config),
        )
        .context("open blob upload sessions")?;
        let tasks = vec![context.spawn(
            "oci-upload-expiry",
            uploads.clone().run_expiry(
                Duration::from_secs(config.upload_sweep_interval_secs),
                context.cancel.clone(),
            ),
        )];
        let registry = Arc::new(Registry::new(
            context.service.clone(),
            uploads,
            context.auth.clone(),
        ));
        Ok(Started {
            router: api::routes().with_state(registry),
            tasks,
        })
    }

    fn error_response(&self, error: crate::error::Error) -> Response {
        OciError::Node(error).into_response()
    }

    fn access(&self, method: &axum::http::Method, path: &str) -> crate::auth::Access {
        api::access(method, path)
    }

    /// Registry clients log in through the token endpoint.
    fn challenge(&self) -> crate::auth::Challenge {
        crate::auth::Challenge::Bearer
    }

    /// Blobs and manifests by digest never change.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        let rest = path.strip_prefix("/v2/").unwrap_or_default();
        !rest.contains("/blobs/uploads")
            && (rest.contains("/blobs/sha256:") || rest.contains("/manifests/sha256:"))
    }

    fn describe_metrics(&self) {
        metrics::describe_metrics();
    }

    fn purge<'a>(
        &'a self,
        service: &'a Arc<ArtifactService>,
        repo: &'a crate::metadata::model::Repository,
        prefix: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::error::Result<u64>> {
        Box::pin(remote::purge(service, repo, prefix))
    }
}
