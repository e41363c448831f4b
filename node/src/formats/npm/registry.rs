//! The npm format's operations on top of the shared write kit: publish (the tarball checked
//! and stored as an ordinary blob), deprecations, dist-tags, unpublish, and the reads the
//! packuments are built from.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::login::Sessions;
use super::model::{NpmCommand, NpmOutcome, PackageRecord, VersionRecord};
use super::names::PackageName;
use super::publish::{self, bounded, invalid, Document, MAX_MESSAGE};
use super::NAME;
use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::metadata::model::{now_ms, Repository};
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest;

impl FormatCommand for NpmCommand {
    type Outcome = NpmOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &NpmOutcome) -> bool {
        outcome.changed()
    }
}

/// Most publish documents parsed at once: each is held in memory (the tarball arrives
/// base64 inside JSON), so this bounds the memory publishes take.
const CONCURRENT_PUBLISHES: usize = 4;

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Changed { rev: u64 },
    Unchanged,
}

/// npm repositories.
pub struct Registry {
    pub service: Arc<ArtifactService>,
    pub auth: Arc<Auth>,
    pub logins: Sessions,
    publishes: Semaphore,
}

impl Registry {
    pub fn new(service: Arc<ArtifactService>, auth: Arc<Auth>) -> Self {
        Self {
            service,
            auth,
            logins: Sessions::default(),
            publishes: Semaphore::new(CONCURRENT_PUBLISHES),
        }
    }

    /// The largest publish body: the ingest limit in base64, plus the document around it.
    pub fn max_publish_body(&self) -> usize {
        let max = self.service.config.limits.ingest_limits().max_bytes;
        usize::try_from(max.saturating_mul(4) / 3 + (8 << 20)).unwrap_or(usize::MAX)
    }

    /// The repository, which must hold npm packages.
    pub fn npm_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// A package and all its version records.
    pub fn package(
        &self,
        repo: &RepoName,
        name: &PackageName,
    ) -> Result<Option<(PackageRecord, Vec<VersionRecord>)>> {
        let catalog = &self.service.catalog;
        let Some(record) = catalog.npm_package(repo, name.as_str())? else {
            return Ok(None);
        };
        Ok(Some((record, catalog.npm_versions(repo, name.as_str())?)))
    }

    /// `PUT /{package}`: a publish when the document carries a tarball, otherwise a metadata
    /// update (`npm deprecate` sends the whole document back with `deprecated` set).
    pub async fn put_document(
        &self,
        repo: &RepoName,
        name: &PackageName,
        body: Bytes,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let _permit = self
            .publishes
            .acquire()
            .await
            .map_err(|_| Error::internal("publish", "the registry is shutting down"))?;
        let mut doc = Document::parse(&body)?;
        drop(body);
        if doc.name != name.as_str() {
            return Err(invalid(format!(
                "the document is for {:?}, the URL for {name:?}",
                doc.name
            )));
        }
        if doc.attachments.is_empty() {
            return self.update_metadata(repo, name, &doc).await;
        }
        let publication = publish::publication(name, &mut doc)?;
        let checked = {
            let (package, version) = (name.to_string(), publication.version.clone());
            let tarball = Bytes::from(publication.tarball);
            let check = tarball.clone();
            let verdict = tokio::task::spawn_blocking(move || {
                publish::check_tarball(&check, &package, &version)
            })
            .await
            .map_err(|e| Error::internal("read the tarball", e))?;
            verdict
                .map_err(|reason| invalid(format!("{name}@{}: {reason}", publication.version)))?;
            tarball
        };
        let service = &self.service;
        let ingested = ingest::ingest(
            service.chunks.clone(),
            service.config.chunking,
            futures::stream::iter([Ok::<_, std::convert::Infallible>(checked)]),
            service.config.limits.ingest_limits(),
            service.collector.clone(),
        )
        .await?;
        let at_ms = now_ms();
        let version = VersionRecord {
            version: publication.version.clone(),
            manifest: publication.manifest,
            abbreviated: publication.abbreviated,
            blob: ingested.descriptor.blake3,
            sha256: ingested.descriptor.sha256,
            integrity: publication.integrity,
            shasum: publication.shasum,
            size: ingested.descriptor.size,
            published_at_ms: at_ms,
            deprecated: None,
            unpublished_at_ms: None,
        };
        let command = NpmCommand::Publish {
            repo: repo.clone(),
            name: name.to_string(),
            version: Box::new(version),
            blob: ingested.descriptor.clone(),
            tags: publication.tags,
            description: doc.description,
            readme: doc.readme,
            at_ms,
        };
        let outcome = service.propose_format(&command, [ingested]).await?;
        self.written(repo, name, outcome).await
    }

    /// A document without a tarball: the deprecations it sets or clears on published
    /// versions. A version it lists that is not published is refused (a publish carries
    /// its tarball).
    async fn update_metadata(
        &self,
        repo: &RepoName,
        name: &PackageName,
        doc: &Document,
    ) -> Result<Written> {
        let versions = self.service.catalog.npm_versions(repo, name.as_str())?;
        if versions.is_empty() {
            return Err(Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: name.to_string(),
            });
        }
        let mut changes = BTreeMap::new();
        for (version, manifest) in &doc.versions {
            let Some(stored) = versions.iter().find(|v| v.version == *version && v.live()) else {
                return Err(invalid(format!(
                    "{name}@{version} is not published; a publish carries its tarball in \"_attachments\""
                )));
            };
            let wanted = manifest
                .get("deprecated")
                .and_then(serde_json::Value::as_str)
                .filter(|m| !m.is_empty())
                .map(|m| bounded(m.to_string(), MAX_MESSAGE));
            if stored.deprecated != wanted {
                changes.insert(version.clone(), wanted);
            }
        }
        if changes.is_empty() {
            return Ok(Written::Unchanged);
        }
        let command = NpmCommand::Deprecate {
            repo: repo.clone(),
            name: name.to_string(),
            changes,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, name, outcome).await
    }

    /// `PUT /{package}/-rev/{rev}`: the document without the versions to unpublish.
    pub async fn unpublish_missing(
        &self,
        repo: &RepoName,
        name: &PackageName,
        rev: Option<u64>,
        body: Bytes,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let doc = Document::parse(&body)?;
        if doc.name != name.as_str() {
            return Err(invalid(format!(
                "the document is for {:?}, the URL for {name:?}",
                doc.name
            )));
        }
        let versions = self.service.catalog.npm_versions(repo, name.as_str())?;
        let gone: Vec<String> = versions
            .iter()
            .filter(|v| v.live() && !doc.versions.contains_key(&v.version))
            .map(|v| v.version.clone())
            .collect();
        if gone.is_empty() {
            return Ok(Written::Unchanged);
        }
        self.unpublish(repo, name, gone, rev).await
    }

    /// Unpublishes `versions` (every version when empty).
    pub async fn unpublish(
        &self,
        repo: &RepoName,
        name: &PackageName,
        versions: Vec<String>,
        rev: Option<u64>,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let command = NpmCommand::Unpublish {
            repo: repo.clone(),
            name: name.to_string(),
            versions,
            rev,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, name, outcome).await
    }

    /// Points `tag` at `version`, or removes it (`None`).
    pub async fn set_tag(
        &self,
        repo: &RepoName,
        name: &PackageName,
        tag: &str,
        version: Option<String>,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        super::names::check_tag(tag).map_err(invalid)?;
        let command = NpmCommand::SetTag {
            repo: repo.clone(),
            name: name.to_string(),
            tag: tag.to_string(),
            version,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, name, outcome).await
    }

    /// Waits for a change to reach the mirrors that must have it, or turns a refusal into
    /// its error.
    async fn written(
        &self,
        repo: &RepoName,
        name: &PackageName,
        outcome: NpmOutcome,
    ) -> Result<Written> {
        let service = &self.service;
        match outcome {
            NpmOutcome::Changed { seq, rev } => {
                service.wait_sync_replication(repo, seq).await?;
                Ok(Written::Changed { rev })
            }
            NpmOutcome::Unchanged => {
                // A retried write: wait as the first attempt would have.
                let seq = service.catalog.changelog_head()?.last_seq;
                service.wait_sync_replication(repo, seq).await?;
                Ok(Written::Unchanged)
            }
            NpmOutcome::VersionExists { integrity } => Err(Error::Immutable {
                repo: repo.to_string(),
                path: name.to_string(),
                reason: format!(
                    "cannot modify pre-existing version: {name} holds that version with other bytes ({integrity}); released versions never change, publish a new version"
                ),
            }),
            NpmOutcome::RepoNotFound => Err(Error::RepoNotFound {
                repo: repo.to_string(),
            }),
            NpmOutcome::WrongFormat { format } => Err(Error::WrongFormat {
                repo: repo.to_string(),
                format: format.to_string(),
                expected: NAME.to_string(),
            }),
            NpmOutcome::PackageNotFound => Err(Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: name.to_string(),
            }),
            NpmOutcome::VersionNotFound { version } => Err(Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("{name}@{version}"),
            }),
            NpmOutcome::RevMismatch { current } => Err(Error::AlreadyExists {
                what: format!(
                    "{name} changed since it was read (its revision is now {current}); read it again"
                ),
            }),
            NpmOutcome::TooManyVersions { limit } => Err(invalid(format!(
                "{name} already has {limit} versions, the most a package may hold"
            ))),
            NpmOutcome::LatestRequired => Err(invalid(
                "the latest dist-tag can be moved to another version but not removed",
            )),
        }
    }
}
