//! The NuGet format's operations on top of the shared write kit: push (the `.nupkg` checked,
//! stored as an ordinary blob with its `.nuspec` beside it), unlist and relist.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::model::{NugetCommand, NugetOutcome, VersionRecord};
use super::package::{normalize, read_nupkg};
use super::NAME;
use crate::error::{Error, Result};
use crate::metadata::model::{format_ms, now_ms, Repository};
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest::{self, IngestedBlob};

impl FormatCommand for NugetCommand {
    type Outcome = NugetOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &NugetOutcome) -> bool {
        outcome.changed()
    }
}

/// Most push bodies held in memory at once (a `.nupkg` is read whole to check it).
const CONCURRENT_PUSHES: usize = 4;

pub fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

/// NuGet feeds.
pub struct Registry {
    pub service: Arc<ArtifactService>,
    pushes: Semaphore,
}

impl Registry {
    pub fn new(service: Arc<ArtifactService>) -> Self {
        Self {
            service,
            pushes: Semaphore::new(CONCURRENT_PUSHES),
        }
    }

    /// The largest `.nupkg`: the node's upload limit.
    pub fn max_package(&self) -> usize {
        usize::try_from(self.service.config.limits.ingest_limits().max_bytes).unwrap_or(usize::MAX)
    }

    pub fn nuget_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// A stored version (`version` as a client writes it; normalized here).
    pub fn version(
        &self,
        repo: &RepoName,
        id: &str,
        version: &str,
    ) -> Result<Option<VersionRecord>> {
        let Ok((normalized, _)) = normalize(version) else {
            return Ok(None);
        };
        self.service.catalog.nuget_version(repo, id, &normalized)
    }

    async fn ingest(&self, bytes: Bytes) -> Result<IngestedBlob> {
        let service = &self.service;
        ingest::ingest(
            service.chunks.clone(),
            service.config.chunking,
            futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]),
            service.config.limits.ingest_limits(),
            service.collector.clone(),
        )
        .await
    }

    /// Pushes a `.nupkg`.
    pub async fn push(&self, repo: &RepoName, nupkg: Bytes) -> Result<()> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let _permit = self
            .pushes
            .acquire()
            .await
            .map_err(|_| Error::internal("push", "the feed is shutting down"))?;
        let check = nupkg.clone();
        let nuspec = tokio::task::spawn_blocking(move || read_nupkg(&check))
            .await
            .map_err(|e| Error::internal("read the package", e))?
            .map_err(invalid)?;
        if let Some(existing) = self.service.catalog.nuget_package(repo, &nuspec.id)? {
            if existing.id != nuspec.id {
                // Ids are case-insensitive: the first spelling stays.
                return Err(invalid(format!(
                    "the package id {} is {} in this feed: ids are compared ignoring case, push it as {}",
                    nuspec.id, existing.id, existing.id
                )));
            }
        }
        if self
            .service
            .catalog
            .nuget_version(repo, &nuspec.id, &nuspec.normalized)?
            .is_some()
        {
            return Err(exists(&nuspec.id, &nuspec.normalized));
        }
        let package = self.ingest(nupkg).await?;
        let spec = self.ingest(Bytes::from(nuspec.bytes.clone())).await?;
        let at_ms = now_ms();
        let version = VersionRecord {
            version: nuspec.normalized.clone(),
            original: nuspec.version.clone(),
            semver2: nuspec.semver2,
            listed: true,
            entry: nuspec.entry(&format_ms(at_ms)),
            nupkg: (&package.descriptor).into(),
            nuspec: (&spec.descriptor).into(),
            published_at_ms: at_ms,
        };
        let command = NugetCommand::Push {
            repo: repo.clone(),
            id: nuspec.id.clone(),
            version: Box::new(version),
            nupkg: Box::new(package.descriptor.clone()),
            nuspec: Box::new(spec.descriptor.clone()),
            description: nuspec.description.clone(),
            authors: nuspec.authors.clone(),
            at_ms,
        };
        let outcome = self
            .service
            .propose_format(&command, [package, spec])
            .await?;
        self.written(repo, &nuspec.id, &nuspec.normalized, outcome)
            .await
    }

    /// Unlists (`false`) or relists (`true`) a version.
    pub async fn set_listed(
        &self,
        repo: &RepoName,
        id: &str,
        version: &str,
        listed: bool,
    ) -> Result<()> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let not_found = || Error::ArtifactNotFound {
            repo: repo.to_string(),
            path: format!("{id} {version}"),
        };
        let package = self
            .service
            .catalog
            .nuget_package(repo, id)?
            .ok_or_else(not_found)?;
        let (normalized, _) = normalize(version).map_err(|_| not_found())?;
        let command = NugetCommand::SetListed {
            repo: repo.clone(),
            id: package.id.clone(),
            version: normalized.clone(),
            listed,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, &package.id, &normalized, outcome).await
    }

    async fn written(
        &self,
        repo: &RepoName,
        id: &str,
        version: &str,
        outcome: NugetOutcome,
    ) -> Result<()> {
        let service = &self.service;
        match outcome {
            NugetOutcome::Changed { seq } => service.wait_sync_replication(repo, seq).await,
            NugetOutcome::Unchanged => {
                let seq = service.catalog.changelog_head()?.last_seq;
                service.wait_sync_replication(repo, seq).await
            }
            NugetOutcome::Exists { .. } => Err(exists(id, version)),
            NugetOutcome::RepoNotFound => Err(Error::RepoNotFound {
                repo: repo.to_string(),
            }),
            NugetOutcome::WrongFormat { format } => Err(Error::WrongFormat {
                repo: repo.to_string(),
                format: format.to_string(),
                expected: NAME.to_string(),
            }),
            NugetOutcome::PackageNotFound | NugetOutcome::VersionNotFound => {
                Err(Error::ArtifactNotFound {
                    repo: repo.to_string(),
                    path: format!("{id} {version}"),
                })
            }
            NugetOutcome::TooManyVersions { limit } => Err(invalid(format!(
                "{id} already has {limit} versions, the most a package may hold"
            ))),
        }
    }
}

/// NuGet's answer to every push of a version that exists (`409`; nuget.exe offers
/// `-SkipDuplicate`).
fn exists(id: &str, version: &str) -> Error {
    Error::AlreadyExists {
        what: format!(
            "{id} {version} (a pushed version never changes; push a new version, or pass -SkipDuplicate to treat this as success)"
        ),
    }
}
