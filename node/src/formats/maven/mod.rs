//! The Maven format: Maven 2 layout repositories under `/maven/{repo}/`, for `mvn deploy` and
//! dependency resolution (and every client of the layout: Gradle, sbt, Ivy).
//!
//! [`coords`] parses and checks the layout's paths, [`model`] holds the commands and records,
//! [`apply`] applies them, [`keys`] lays them out, [`versions`] orders versions as Maven does,
//! [`metadata`] renders `maven-metadata.xml` from the state and reads the client's,
//! [`checksum`] computes and reads the checksum siblings, [`repository`] is the write path on
//! the shared kit and [`api`] answers the URL space.

pub mod api;
pub mod apply;
pub mod checksum;
pub mod coords;
pub mod keys;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod repository;
pub mod versions;

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
use model::MavenCommand;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("maven");

/// The Maven format (registered in [`crate::formats::registered`]).
pub struct Maven;

impl FormatApply for Maven {
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
        let command: MavenCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            MavenCommand::Deploy { blob, .. } => vec![blob],
            MavenCommand::SetPlugins { .. } => Vec::new(),
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<MavenCommand>(payload)?.at_ms())
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(MavenCommand::Deploy {
                repo,
                group,
                artifact,
                version,
                file,
                ..
            }) => format!(
                "deploy {repo}/{group}:{artifact}:{version} {} sha256:{} ({} bytes)",
                file.filename,
                file.sha256.to_hex(),
                file.size
            ),
            Ok(MavenCommand::SetPlugins {
                repo,
                group,
                plugins,
                ..
            }) => {
                let prefixes: Vec<&str> = plugins.iter().map(|p| p.prefix.as_str()).collect();
                format!("plugin prefixes of {repo}/{group}: {prefixes:?}")
            }
            Err(e) => format!("an unreadable maven command: {e}"),
        }
    }
}

impl Format for Maven {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/maven/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let repos = Arc::new(repository::MavenRepos::new(context.service.clone()));
        let router = Router::new()
            .route("/maven/{repo}", any(api::dispatch))
            .route("/maven/{repo}/", any(api::dispatch))
            .route("/maven/{repo}/{*rest}", any(api::dispatch))
            .layer(axum::middleware::from_fn(api::track))
            .with_state(repos);
        Ok(Started {
            router,
            tasks: Vec::new(),
        })
    }

    fn error_response(&self, error: Error) -> Response {
        api::error_response(error)
    }

    /// Reads need `read`; deploys (files, metadata, checksums) need `write`, and so does
    /// every other method (answered `405`).
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some(repo) = self.repo_of(path) else {
            return Access::ClusterAdmin;
        };
        let action = match *method {
            Method::GET | Method::HEAD => Action::Read,
            _ => Action::Write,
        };
        Access::repo(repo, action)
    }

    /// A release file, a timestamped SNAPSHOT build and their checksums never change.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        api::immutable(path)
    }

    fn describe_metrics(&self) {
        metrics::METRICS.describe();
    }

    fn packages(&self) -> Option<&'static dyn Packages> {
        Some(&MavenPackages)
    }
}

/// The artifacts of a Maven repository (`groupId:artifactId`), for `arca ls` and `arca stat`.
struct MavenPackages;

impl Packages for MavenPackages {
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>> {
        let catalog = &service.catalog;
        let after = after.and_then(|a| a.split_once(':'));
        let (artifacts, more) = catalog.maven_artifacts(repo, after, limit)?;
        let next = more
            .then(|| {
                artifacts
                    .last()
                    .map(|a| format!("{}:{}", a.group, a.artifact))
            })
            .flatten();
        let mut items = Vec::with_capacity(artifacts.len());
        for record in artifacts {
            let mut versions = catalog.maven_versions(repo, &record.group, &record.artifact)?;
            versions.retain(|v| v.files > 0);
            versions::sort(&mut versions, |v| v.version.as_str());
            items.push(PackageSummary {
                name: format!("{}:{}", record.group, record.artifact),
                versions: versions.len(),
                latest: versions.last().map(|v| v.version.clone()),
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
        let not_found = || Error::ArtifactNotFound {
            repo: repo.to_string(),
            path: format!("artifact {name}"),
        };
        let (group, artifact) = name
            .split_once(':')
            .or_else(|| name.rsplit_once('/'))
            .ok_or_else(not_found)?;
        let group = group.replace('/', ".");
        let catalog = &service.catalog;
        let record = catalog
            .maven_artifact(repo, &group, artifact)?
            .filter(|a| a.versions > 0)
            .ok_or_else(not_found)?;
        let mut records = catalog.maven_versions(repo, &group, artifact)?;
        versions::sort(&mut records, |v| v.version.as_str());
        let mut versions = Vec::with_capacity(records.len());
        for version in records {
            let files = catalog.maven_files(repo, &group, artifact, &version.version)?;
            versions.push(PackageVersion {
                files: files
                    .into_iter()
                    .map(|f| PackageFile {
                        name: f.filename,
                        size: f.size,
                        sha256: f.sha256.to_hex(),
                        blake3: f.blob.to_hex(),
                        uploaded_at: format_ms(f.uploaded_at_ms),
                    })
                    .collect(),
                version: version.version,
                withdrawn: None,
            });
        }
        Ok(PackageDetail {
            name: format!("{}:{}", record.group, record.artifact),
            versions,
        })
    }
}
