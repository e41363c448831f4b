//! The PyPI format: Python package repositories under `/pypi/{repo}/`, for pip, uv and twine.
//!
//! [`names`] normalizes project names and parses versions and file names, [`model`] holds
//! the commands and records, [`apply`] applies them, [`keys`] lays them out, [`dist`] reads
//! the core metadata out of a stored wheel or sdist, [`index`] is the upload and yank on the
//! shared write kit, [`simple`] renders the index documents and [`api`] the routes.

pub mod api;
pub mod apply;
pub mod dist;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod names;
pub mod simple;

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
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
use model::PypiCommand;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("pypi");

/// The PyPI format (registered in [`crate::formats::registered`]).
pub struct Pypi;

impl FormatApply for Pypi {
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
        let command: PypiCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            PypiCommand::Upload { blob, metadata, .. } => vec![blob, metadata],
            PypiCommand::Yank { .. } => Vec::new(),
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<PypiCommand>(payload)?.at_ms())
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(PypiCommand::Upload {
                repo,
                project,
                file,
                ..
            }) => format!(
                "upload {repo}/{}/{}/{} sha256:{} ({} bytes)",
                names::normalize(&project),
                file.version,
                file.filename,
                file.sha256.to_hex(),
                file.size
            ),
            Ok(PypiCommand::Yank {
                repo,
                project,
                version,
                reason,
                ..
            }) => match reason {
                Some(reason) => format!("yank {repo}/{project} {version} ({reason})"),
                None => format!("un-yank {repo}/{project} {version}"),
            },
            Err(e) => format!("an unreadable pypi command: {e}"),
        }
    }
}

impl Format for Pypi {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/pypi/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let index = Arc::new(index::Index {
            service: context.service.clone(),
        });
        let router = Router::new()
            .route("/pypi/{repo}", post(api::upload))
            .route("/pypi/{repo}/", post(api::upload))
            .route("/pypi/{repo}/legacy/", post(api::upload))
            .route("/pypi/{repo}/-/yank", post(api::yank))
            .route("/pypi/{repo}/simple", get(api::to_slash))
            .route("/pypi/{repo}/simple/", get(api::project_list))
            .route("/pypi/{repo}/simple/{project}", get(api::to_slash))
            .route("/pypi/{repo}/simple/{project}/", get(api::project_page))
            .route(
                "/pypi/{repo}/files/{project}/{version}/{file}",
                get(api::file).head(api::file),
            )
            .layer(axum::middleware::from_fn(api::track))
            .with_state(index);
        Ok(Started {
            router,
            tasks: Vec::new(),
        })
    }

    fn error_response(&self, error: Error) -> Response {
        api::error_response(error)
    }

    /// Reads need `read`, yanks `delete`, uploads `write`.
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some(repo) = self.repo_of(path) else {
            return Access::ClusterAdmin;
        };
        let action = match *method {
            Method::GET | Method::HEAD => Action::Read,
            _ if path.ends_with("/-/yank") => Action::Delete,
            _ => Action::Write,
        };
        Access::repo(repo, action)
    }

    /// A distribution file (or its metadata) never changes once uploaded.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        self.repo_of(path).is_some_and(|repo| {
            path.strip_prefix("/pypi/")
                .and_then(|rest| rest.strip_prefix(repo))
                .is_some_and(|rest| rest.starts_with("/files/"))
        })
    }

    fn describe_metrics(&self) {
        metrics::METRICS.describe();
    }

    fn packages(&self) -> Option<&'static dyn Packages> {
        Some(&PypiPackages)
    }
}

/// The projects of a PyPI repository, for `arca ls` and `arca stat`.
struct PypiPackages;

impl Packages for PypiPackages {
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>> {
        let catalog = &service.catalog;
        let (projects, more) = catalog.pypi_projects(repo, after, limit)?;
        let next = more
            .then(|| projects.last().map(|(n, _)| n.clone()))
            .flatten();
        let mut items = Vec::with_capacity(projects.len());
        for (normalized, record) in projects {
            let files = catalog.pypi_files(repo, &normalized)?;
            let mut versions: Vec<&str> = files.iter().map(|f| f.version.as_str()).collect();
            versions.sort_by_cached_key(|v| names::version_key(v));
            versions.dedup_by(|a, b| names::same_version(a, b));
            items.push(PackageSummary {
                name: record.name,
                versions: versions.len(),
                latest: versions.last().map(|v| v.to_string()),
                updated_at: format_ms(record.updated_at_ms),
            });
        }
        Ok(Page { items, next })
    }

    fn package(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        name: &str,
    ) -> Result<PackageDetail> {
        let normalized = names::normalize(name);
        let catalog = &service.catalog;
        let record =
            catalog
                .pypi_project(repo, &normalized)?
                .ok_or_else(|| Error::ArtifactNotFound {
                    repo: repo.to_string(),
                    path: format!("project {normalized}"),
                })?;
        let mut files = catalog.pypi_files(repo, &normalized)?;
        files.sort_by_cached_key(|f| (names::version_key(&f.version), f.filename.clone()));
        let mut versions: Vec<PackageVersion> = Vec::new();
        for file in files {
            let entry = PackageFile {
                name: file.filename.clone(),
                size: file.size,
                sha256: file.sha256.to_hex(),
                blake3: file.blob.to_hex(),
                uploaded_at: format_ms(file.uploaded_at_ms),
            };
            match versions.last_mut() {
                Some(last) if names::same_version(&last.version, &file.version) => {
                    last.files.push(entry)
                }
                _ => versions.push(PackageVersion {
                    version: file.version.clone(),
                    files: vec![entry],
                    withdrawn: file.yanked.as_ref().map(|reason| {
                        if reason.is_empty() {
                            "yanked".to_string()
                        } else {
                            format!("yanked: {reason}")
                        }
                    }),
                }),
            }
        }
        Ok(PackageDetail {
            name: record.name,
            versions,
        })
    }
}
