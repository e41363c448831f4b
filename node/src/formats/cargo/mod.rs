//! The cargo format: alternative registries under `/cargo/{repo}/`, spoken with the sparse
//! protocol, for cargo (publish, login, yank, owner, search, and builds resolving from it).
//!
//! [`names`] checks crate names and versions and lays out index paths, [`model`] holds the
//! commands and records, [`apply`] applies them, [`keys`] lays them out, [`publish`] checks
//! what `cargo publish` sends, [`registry`] is the write path on the shared kit and renders
//! index files, [`route`] parses the URL space and [`api`] answers it.

pub mod api;
pub mod apply;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod names;
pub mod publish;
pub mod registry;
pub mod route;

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use axum::routing::any;
use axum::Router;

use super::listing::{PackageDetail, PackageFile, PackageSummary, PackageVersion, Packages};
use super::{Format, FormatContext, Started};
use crate::auth::model::Action;
use crate::auth::{Access, Challenge};
use crate::error::{Error, Result};
use crate::metadata::catalog::Page;
use crate::metadata::format::{decode_payload, FormatApply, FormatName, FormatOutcome, FormatTxn};
use crate::metadata::model::{format_ms, BlobDescriptor};
use crate::names::RepoName;
use crate::service::ArtifactService;
use model::CargoCommand;
use route::Route;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("cargo");

/// The cargo format (registered in [`crate::formats::registered`]).
pub struct Cargo;

impl FormatApply for Cargo {
    fn name(&self) -> FormatName {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn key_prefixes(&self) -> &'static [&'static [u8]] {
        &[keys::PREFIX]
    }

    fn apply(
        &self,
        txn: &mut FormatTxn<'_, '_, '_>,
        _version: u32,
        payload: &[u8],
    ) -> anyhow::Result<FormatOutcome> {
        let command: CargoCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            CargoCommand::Publish { blob, .. } => vec![blob],
            _ => Vec::new(),
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<CargoCommand>(payload)?.at_ms())
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(CargoCommand::Publish {
                repo,
                name,
                version,
                ..
            }) => format!(
                "publish {repo}/{name}@{} sha256:{} ({} bytes)",
                version.vers,
                version.sha256.to_hex(),
                version.size
            ),
            Ok(CargoCommand::Yank {
                repo,
                name,
                vers,
                yanked,
                ..
            }) => format!(
                "{} {repo}/{name}@{vers}",
                if yanked { "yank" } else { "unyank" }
            ),
            Ok(CargoCommand::Owners {
                repo,
                name,
                add,
                remove,
                ..
            }) => format!("owners of {repo}/{name}: add {add:?}, remove {remove:?}"),
            Err(e) => format!("an unreadable cargo command: {e}"),
        }
    }
}

impl Format for Cargo {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/cargo/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let registry = Arc::new(registry::Registry::new(
            context.service.clone(),
            context.auth.clone(),
        ));
        let router = Router::new()
            .route("/cargo/{repo}", any(api::dispatch))
            .route("/cargo/{repo}/", any(api::dispatch))
            .route("/cargo/{repo}/{*rest}", any(api::dispatch))
            .layer(axum::middleware::from_fn(api::track))
            .with_state(registry);
        Ok(Started {
            router,
            tasks: Vec::new(),
        })
    }

    fn error_response(&self, error: Error) -> Response {
        api::error_response(error)
    }

    /// Reads (the index, downloads, search, owners) need `read`; publish, yank and owner
    /// changes `write` (and, on an existing crate, being one of its owners or administering the
    /// repository, checked by the handler). The token page is public.
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some((repo, rest)) = api::split_path(path).filter(|(repo, _)| !repo.is_empty()) else {
            return Access::ClusterAdmin;
        };
        let read = matches!(*method, Method::GET | Method::HEAD);
        let action = match Route::parse(rest) {
            Route::Me => return Access::Public,
            Route::Config | Route::Index(_) | Route::Download(..) | Route::Search => Action::Read,
            Route::Owners(_) if read => Action::Read,
            Route::Publish | Route::Yank(..) | Route::Unyank(..) | Route::Owners(_) => {
                Action::Write
            }
            Route::Unknown => Action::Admin,
        };
        Access::repo(repo, action)
    }

    /// cargo sends its token after `401` with `WWW-Authenticate: Cargo login_url="…"`.
    fn challenge(&self) -> Challenge {
        Challenge::LoginUrl {
            scheme: "Cargo",
            page: "me",
        }
    }

    /// A `.crate` never changes once published.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        api::split_path(path)
            .is_some_and(|(_, rest)| matches!(Route::parse(rest), Route::Download(..)))
    }

    fn describe_metrics(&self) {
        metrics::METRICS.describe();
    }

    fn packages(&self) -> Option<&'static dyn Packages> {
        Some(&CargoPackages)
    }
}

/// The crates of a cargo repository, for `arca ls` and `arca stat`.
struct CargoPackages;

impl Packages for CargoPackages {
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>> {
        let (crates, more) = service.catalog.cargo_crates(repo, after, limit)?;
        let next = more
            .then(|| crates.last().map(|c| c.name.clone()))
            .flatten();
        let items = crates
            .into_iter()
            .map(|c| PackageSummary {
                versions: c.versions as usize,
                latest: Some(c.max_version),
                updated_at: format_ms(c.modified_at_ms),
                name: c.name,
            })
            .collect();
        Ok(Page { items, next })
    }

    fn package(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        name: &str,
    ) -> Result<PackageDetail> {
        let catalog = &service.catalog;
        let record = catalog
            .cargo_crate(repo, name)?
            .ok_or_else(|| Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("crate {name}"),
            })?;
        let versions = catalog.cargo_versions(repo, &record.name)?;
        Ok(PackageDetail {
            versions: versions
                .into_iter()
                .map(|v| PackageVersion {
                    files: vec![PackageFile {
                        name: format!("{}-{}.crate", record.name, v.vers),
                        size: v.size,
                        sha256: v.sha256.to_hex(),
                        blake3: v.blob.to_hex(),
                        uploaded_at: format_ms(v.published_at_ms),
                    }],
                    withdrawn: v.yanked.then(|| "yanked".to_string()),
                    version: v.vers,
                })
                .collect(),
            name: record.name,
        })
    }
}
