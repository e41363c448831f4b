//! The NuGet format: v3 feeds under `/nuget/{repo}/`, for nuget.exe and dotnet (push, delete
//! as unlist, relist, install, restore, search).
//!
//! [`package`] reads and checks packages and normalizes versions, [`model`] holds the commands
//! and records, [`apply`] applies them, [`keys`] lays them out, [`registry`] is the write path
//! on the shared kit, [`route`] parses the URL space and [`api`] answers it (the service index,
//! the flat container, registrations, search and autocomplete).

pub mod api;
pub mod apply;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod package;
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
use model::NugetCommand;
use route::Route;

/// The format's name in repository records and command envelopes.
pub const NAME: FormatName = FormatName::new("nuget");

/// The NuGet format (registered in [`crate::formats::registered`]).
pub struct Nuget;

impl FormatApply for Nuget {
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
        let command: NugetCommand = decode_payload(payload)?;
        let outcome = apply::apply(txn, &command)?;
        FormatOutcome::encode(&outcome, outcome.changed())
    }

    fn blobs(&self, _version: u32, payload: &[u8]) -> anyhow::Result<Vec<BlobDescriptor>> {
        Ok(match decode_payload(payload)? {
            NugetCommand::Push { nupkg, nuspec, .. } => vec![*nupkg, *nuspec],
            NugetCommand::SetListed { .. } => Vec::new(),
        })
    }

    fn at_ms(&self, _version: u32, payload: &[u8]) -> anyhow::Result<i64> {
        Ok(decode_payload::<NugetCommand>(payload)?.at_ms())
    }

    fn describe(&self, _version: u32, payload: &[u8]) -> String {
        match decode_payload(payload) {
            Ok(NugetCommand::Push {
                repo,
                id,
                version,
                nupkg,
                ..
            }) => format!(
                "push {repo}/{id}@{} sha256:{} ({} bytes)",
                version.version,
                nupkg.sha256.to_hex(),
                nupkg.size
            ),
            Ok(NugetCommand::SetListed {
                repo,
                id,
                version,
                listed,
                ..
            }) => format!(
                "{} {repo}/{id}@{version}",
                if listed { "relist" } else { "unlist" }
            ),
            Err(e) => format!("an unreadable nuget command: {e}"),
        }
    }
}

impl Format for Nuget {
    fn prefixes(&self) -> &'static [&'static str] {
        &["/nuget/"]
    }

    fn start(&self, context: &FormatContext) -> anyhow::Result<Started> {
        let registry = Arc::new(registry::Registry::new(context.service.clone()));
        let router = Router::new()
            .route("/nuget/{repo}", any(api::dispatch))
            .route("/nuget/{repo}/", any(api::dispatch))
            .route("/nuget/{repo}/{*rest}", any(api::dispatch))
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

    /// Reads need `read` (but the service index); push and relist `write`; unlist (NuGet's
    /// delete) `delete`. nuget.exe pushes with `X-NuGet-ApiKey` alone, which the core takes as
    /// the token.
    fn access(&self, method: &Method, path: &str) -> Access {
        let Some((repo, rest)) = api::split_path(path).filter(|(repo, _)| !repo.is_empty()) else {
            return Access::ClusterAdmin;
        };
        let read = matches!(*method, Method::GET | Method::HEAD);
        let action = match Route::parse(rest) {
            // nuget.exe loads the service index without credentials before a push (and sends
            // the API key only with the push): it is public, and names nothing but URLs.
            Route::ServiceIndex => return Access::Public,
            Route::Unknown => Action::Admin,
            _ if read => Action::Read,
            Route::Publish if *method == Method::PUT => Action::Write,
            Route::Listing(..) if *method == Method::POST => Action::Write,
            Route::Listing(..) if *method == Method::DELETE => Action::Delete,
            _ => Action::Admin,
        };
        Access::repo(repo, action)
    }

    /// A package (and its nuspec) never changes once pushed.
    fn immutable_read(&self, _service: &ArtifactService, path: &str) -> bool {
        api::split_path(path)
            .is_some_and(|(_, rest)| matches!(Route::parse(rest), Route::Content(..)))
    }

    fn describe_metrics(&self) {
        metrics::METRICS.describe();
    }

    fn packages(&self) -> Option<&'static dyn Packages> {
        Some(&NugetPackages)
    }
}

/// The packages of a NuGet feed, for `arca ls` and `arca stat`.
struct NugetPackages;

impl Packages for NugetPackages {
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>> {
        let catalog = &service.catalog;
        let (packages, more) = catalog.nuget_packages(repo, after, limit)?;
        let next = more
            .then(|| packages.last().map(|p| p.id.clone()))
            .flatten();
        let mut items = Vec::with_capacity(packages.len());
        for package in packages {
            let latest = catalog
                .nuget_versions(repo, &package.id)?
                .last()
                .map(|v| v.version.clone());
            items.push(PackageSummary {
                versions: package.versions as usize,
                latest,
                updated_at: format_ms(package.modified_at_ms),
                name: package.id,
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
        let catalog = &service.catalog;
        let record = catalog
            .nuget_package(repo, name)?
            .ok_or_else(|| Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("package {name}"),
            })?;
        let versions = catalog.nuget_versions(repo, &record.id)?;
        let lower = record.id.to_ascii_lowercase();
        Ok(PackageDetail {
            versions: versions
                .into_iter()
                .map(|v| {
                    let file = |name: String, stored: &model::StoredFile| PackageFile {
                        name,
                        size: stored.size,
                        sha256: stored.sha256.to_hex(),
                        blake3: stored.blob.to_hex(),
                        uploaded_at: format_ms(v.published_at_ms),
                    };
                    PackageVersion {
                        files: vec![
                            file(
                                format!("{lower}.{}.nupkg", v.version.to_ascii_lowercase()),
                                &v.nupkg,
                            ),
                            file(format!("{lower}.nuspec"), &v.nuspec),
                        ],
                        withdrawn: (!v.listed).then(|| "unlisted".to_string()),
                        version: v.version,
                    }
                })
                .collect(),
            name: record.id,
        })
    }
}
