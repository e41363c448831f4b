//! The Helm format: classic chart repositories under `/helm/{repo}/`, for `helm repo add`,
//! `helm repo update`, `helm pull`, `helm show`, `helm install`, and uploads with chartmuseum's
//! API (`helm cm-push`, curl) or a `PUT` of the archive. (Charts as OCI artifacts live in `oci`
//! repositories: the registry serves them as any other artifact.)
//!
//! [`chart`] reads and checks chart archives, [`model`] holds the commands and records,
//! [`apply`] applies them and keeps each chart's index fragment, [`keys`] lays them out,
//! [`index`] assembles and caches `index.yaml`, [`registry`] is the write path on the shared
//! kit, [`route`] parses the URL space and [`api`] answers it.

pub mod api;
pub mod apply;
pub mod chart;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod model;
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
use crate::auth::Access;
use crate::error::{Error, Result};
use crate::metadata::catalog::Page;
use crate::metadata::format::{decode_payload, FormatApply, FormatName, FormatOutcome, FormatTxn};
use crate::metadata::model::{format_ms, BlobDescriptor};
use crate::names::RepoName;
use crate::service::ArtifactService;
use model::HelmCommand;
use route::Route;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("helm");

/// The Helm format (registered in [`crate::formats::registered`]).
pub struct Helm;

impl FormatApply for Helm {
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
        let command: HelmCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            HelmCommand::Upload { blob, .. } | HelmCommand::Provenance { blob, .. } => {
                vec![blob]
            }
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<HelmCommand>(payload)?.at_ms())
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(HelmCommand::Upload {
                repo,
                name,
                version,
                blob,
                ..
            }) => format!(
                "upload {repo}/{name}-{}.tgz sha256:{} ({} bytes)",
                version.version,
                blob.sha256.to_hex(),
                blob.size
            ),
            Ok(HelmCommand::Provenance {
                repo,
                name,
                version,
                blob,
                ..
            }) => format!(
                "provenance {repo}/{name}-{version}.tgz.prov sha256:{}",
                blob.sha256.to_hex()
            ),
            Err(e) => format!("an unreadable helm command: {e}"),
        }
    }
}

impl Format for Helm {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/helm/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let registry = Arc::new(registry::Registry::new(context.service.clone()));
        let router = Router::new()
            .route("/helm/{repo}", any(api::dispatch))
            .route("/helm/{repo}/", any(api::dispatch))
            .route("/helm/{repo}/{*rest}", any(api::dispatch))
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

    /// Reads need `read`; uploads `write`.
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some((repo, rest)) = api::split_path(path).filter(|(repo, _)| !repo.is_empty()) else {
            return Access::ClusterAdmin;
        };
        let read = matches!(*method, Method::GET | Method::HEAD);
        let action = match Route::parse(rest) {
            Route::Unknown => Action::Admin,
            _ if read => Action::Read,
            Route::Charts | Route::ProvUpload | Route::Archive(_) | Route::Prov(_)
                if matches!(*method, Method::POST | Method::PUT) =>
            {
                Action::Write
            }
            _ => Action::Admin,
        };
        Access::repo(repo, action)
    }

    /// An archive and its provenance never change once uploaded.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        api::split_path(path).is_some_and(|(_, rest)| {
            matches!(Route::parse(rest), Route::Archive(_) | Route::Prov(_))
        })
    }

    fn describe_metrics(&self) {
        metrics::METRICS.describe();
    }

    fn packages(&self) -> Option<&'static dyn Packages> {
        Some(&HelmPackages)
    }
}

/// The charts of a Helm repository, for `arca ls` and `arca stat`.
struct HelmPackages;

impl Packages for HelmPackages {
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>> {
        let (charts, more) = service.catalog.helm_charts(repo, after, limit)?;
        let next = more
            .then(|| charts.last().map(|c| c.name.clone()))
            .flatten();
        let items = charts
            .into_iter()
            .map(|c| PackageSummary {
                versions: c.versions as usize,
                latest: Some(c.latest),
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
            .helm_chart(repo, name)?
            .ok_or_else(|| Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("chart {name}"),
            })?;
        let mut versions = catalog.helm_versions(repo, name)?;
        index::sort_newest_first(&mut versions);
        Ok(PackageDetail {
            versions: versions
                .into_iter()
                .map(|v| {
                    let archive = chart::archive_name(&record.name, &v.version);
                    let mut files = vec![PackageFile {
                        name: archive.clone(),
                        size: v.chart.size,
                        sha256: v.chart.sha256.to_hex(),
                        blake3: v.chart.blob.to_hex(),
                        uploaded_at: format_ms(v.created_at_ms),
                    }];
                    if let Some(prov) = &v.prov {
                        files.push(PackageFile {
                            name: format!("{archive}.prov"),
                            size: prov.size,
                            sha256: prov.sha256.to_hex(),
                            blake3: prov.blob.to_hex(),
                            uploaded_at: format_ms(v.created_at_ms),
                        });
                    }
                    PackageVersion {
                        files,
                        withdrawn: None,
                        version: v.version,
                    }
                })
                .collect(),
            name: record.name,
        })
    }
}
