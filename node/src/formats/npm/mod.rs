//! The npm format: package registries under `/npm/{repo}/`, for npm (publish, install, ci,
//! dist-tag, deprecate, unpublish, login).
//!
//! [`names`] checks package names, versions and dist-tags, [`model`] holds the commands and
//! records, [`apply`] applies them, [`keys`] lays them out, [`publish`] checks what a client
//! PUTs, [`registry`] is the write path on the shared kit, [`packument`] renders the
//! documents, [`login`] holds web login sessions and [`signin`] answers the logins, [`route`] parses the URL space and
//! [`api`] answers it.

pub mod api;
pub mod apply;
pub mod keys;
pub mod login;
pub mod metrics;
pub mod model;
pub mod names;
pub mod packument;
pub mod publish;
pub mod registry;
pub mod route;
pub mod signin;

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
use model::NpmCommand;
use route::Route;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("npm");

/// The npm format (registered in [`crate::formats::registered`]).
pub struct Npm;

impl FormatApply for Npm {
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
        let command: NpmCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            NpmCommand::Publish { blob, .. } => vec![blob],
            _ => Vec::new(),
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<NpmCommand>(payload)?.at_ms())
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(NpmCommand::Publish {
                repo,
                name,
                version,
                tags,
                ..
            }) => format!(
                "publish {repo}/{name}@{} sha256:{} {} ({} bytes) tags {tags:?}",
                version.version,
                version.sha256.to_hex(),
                version.integrity,
                version.size
            ),
            Ok(NpmCommand::Deprecate {
                repo,
                name,
                changes,
                ..
            }) => format!("deprecate {repo}/{name} {changes:?}"),
            Ok(NpmCommand::SetTag {
                repo,
                name,
                tag,
                version,
                ..
            }) => match version {
                Some(version) => format!("dist-tag {repo}/{name} {tag} -> {version}"),
                None => format!("dist-tag {repo}/{name} remove {tag}"),
            },
            Ok(NpmCommand::Unpublish {
                repo,
                name,
                versions,
                ..
            }) if versions.is_empty() => format!("unpublish {repo}/{name} (every version)"),
            Ok(NpmCommand::Unpublish {
                repo,
                name,
                versions,
                ..
            }) => format!("unpublish {repo}/{name} {versions:?}"),
            Err(e) => format!("an unreadable npm command: {e}"),
        }
    }
}

impl Format for Npm {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/npm/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let registry = Arc::new(registry::Registry::new(
            context.service.clone(),
            context.auth.clone(),
        ));
        let router = Router::new()
            .route("/npm/{repo}", any(api::dispatch))
            .route("/npm/{repo}/", any(api::dispatch))
            .route("/npm/{repo}/{*rest}", any(api::dispatch))
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

    /// Reads need `read`; publish, deprecate and dist-tags `write`; unpublish `delete`.
    /// Logins check the credential they are sent themselves.
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some((repo, rest)) = api::split_path(path).filter(|(repo, _)| !repo.is_empty()) else {
            return Access::ClusterAdmin;
        };
        let read = matches!(*method, Method::GET | Method::HEAD);
        let action = match Route::parse(rest) {
            Route::Ping
            | Route::LoginStart
            | Route::LoginPage(_)
            | Route::LoginDone(_)
            | Route::LegacyUser(_) => return Access::Public,
            Route::Whoami | Route::Logout(_) => return Access::Authenticated,
            Route::Audit | Route::Search => Action::Read,
            Route::DistTags(_) | Route::DistTag(..) if read => Action::Read,
            Route::DistTags(_) | Route::DistTag(..) => Action::Write,
            Route::Package(_) | Route::Tarball(..) if read => Action::Read,
            Route::Package(_) if *method == Method::PUT => Action::Write,
            Route::Package(_) | Route::PackageRev(..) | Route::TarballRev(..) => Action::Delete,
            Route::Tarball(..) | Route::Unknown => Action::Admin,
        };
        Access::repo(repo, action)
    }

    /// A tarball never changes once published.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        api::split_path(path)
            .is_some_and(|(_, rest)| matches!(Route::parse(rest), Route::Tarball(..)))
    }

    fn describe_metrics(&self) {
        metrics::METRICS.describe();
    }

    fn packages(&self) -> Option<&'static dyn Packages> {
        Some(&NpmPackages)
    }
}

/// The packages of an npm repository, for `arca ls` and `arca stat`.
struct NpmPackages;

impl Packages for NpmPackages {
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>> {
        let (packages, more) = service.catalog.npm_packages(repo, after, limit)?;
        let next = more
            .then(|| packages.last().map(|p| p.name.clone()))
            .flatten();
        let items = packages
            .into_iter()
            .map(|p| PackageSummary {
                versions: p.versions as usize,
                latest: p.dist_tags.get("latest").cloned(),
                updated_at: format_ms(p.modified_at_ms),
                name: p.name,
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
        let not_found = || Error::ArtifactNotFound {
            repo: repo.to_string(),
            path: format!("package {name}"),
        };
        let record = catalog.npm_package(repo, name)?.ok_or_else(not_found)?;
        let package = names::PackageName::parse(&record.name).map_err(|_| not_found())?;
        let mut versions = catalog.npm_versions(repo, name)?;
        versions.retain(model::VersionRecord::live);
        names::sort_versions(&mut versions, |v| v.version.as_str());
        Ok(PackageDetail {
            versions: versions
                .into_iter()
                .map(|v| PackageVersion {
                    files: vec![PackageFile {
                        name: package.tarball(&v.version),
                        size: v.size,
                        sha256: v.sha256.to_hex(),
                        blake3: v.blob.to_hex(),
                        uploaded_at: format_ms(v.published_at_ms),
                    }],
                    withdrawn: v.deprecated.map(|m| format!("deprecated: {m}")),
                    version: v.version,
                })
                .collect(),
            name: record.name,
        })
    }
}
