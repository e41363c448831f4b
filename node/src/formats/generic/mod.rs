//! The generic format: arbitrary files at paths of a repository, under `/files/`.
//!
//! [`model`] holds its commands and outcomes, [`apply`] applies them (one blob reference
//! per file), [`files`] the operations on top of the shared write kit, [`api`] the routes,
//! [`remote`] the read path of remote (pull-through) repositories.

pub mod api;
pub mod apply;
pub mod files;
pub mod model;
pub mod remote;

use std::sync::Arc;

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{Format, FormatContext, Started};
use crate::auth::model::Action;
use crate::auth::Access;
use crate::error::Error;
use crate::metadata::format::{decode_payload, FormatApply, FormatName, FormatOutcome, FormatTxn};
use crate::metadata::model::BlobDescriptor;
use crate::service::ArtifactService;
use model::GenericCommand;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("generic");

/// The generic format (registered in [`crate::formats::registered`]).
pub struct Generic;

impl FormatApply for Generic {
    fn name(&self) -> FormatName {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn key_prefixes(&self) -> &'static [&'static [u8]] {
        &[b"a/"]
    }

    fn apply(
        &self,
        txn: &mut FormatTxn<'_, '_, '_>,
        _version: u32,
        payload: &[u8],
    ) -> anyhow::Result<FormatOutcome> {
        let command: GenericCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            GenericCommand::PutArtifact { blob, .. } => vec![blob],
            GenericCommand::DeleteArtifact { .. } => Vec::new(),
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<GenericCommand>(payload)?.at_ms())
    }

    fn proxies(&self) -> bool {
        true
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(GenericCommand::PutArtifact {
                repo, path, blob, ..
            }) => format!(
                "put {repo}/{path} sha256:{} ({} bytes)",
                blob.sha256, blob.size
            ),
            Ok(GenericCommand::DeleteArtifact { repo, path, .. }) => {
                format!("delete {repo}/{path}")
            }
            Err(e) => format!("an unreadable generic command: {e}"),
        }
    }
}

impl Format for Generic {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/files/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let files = Arc::new(files::Files {
            service: context.service.clone(),
        });
        let router = Router::new()
            .route(
                "/files/{*target}",
                get(api::get)
                    .head(api::get)
                    .put(api::put)
                    .delete(api::delete),
            )
            .route("/api/v1/repos/{repo}/files", get(api::files))
            .route("/api/v1/repos/{repo}/files/{*path}", get(api::file))
            .with_state(files);
        Ok(Started {
            router,
            tasks: Vec::new(),
        })
    }

    fn error_response(&self, error: Error) -> Response {
        error.into_response()
    }

    /// `/files/<repo>/<path>`: reads need `read`, deletes `delete`, everything else `write`.
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some(repo) = self.repo_of(path) else {
            return Access::ClusterAdmin;
        };
        let action = match *method {
            Method::GET | Method::HEAD => Action::Read,
            Method::DELETE => Action::Delete,
            _ => Action::Write,
        };
        Access::repo(repo, action)
    }

    fn purge<'a>(
        &'a self,
        service: &'a Arc<ArtifactService>,
        repo: &'a crate::metadata::model::Repository,
        prefix: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::error::Result<u64>> {
        Box::pin(remote::purge(service, repo, prefix))
    }

    /// A file of an immutable repository this node knows never changes.
    fn immutable_read(&self, service: &ArtifactService, path: &str) -> bool {
        let Some(repo) = self.repo_of(path) else {
            return false;
        };
        match crate::names::RepoName::parse(repo) {
            Ok(repo) => matches!(service.catalog.repo(&repo), Ok(Some(r)) if r.immutable),
            Err(_) => false,
        }
    }
}
