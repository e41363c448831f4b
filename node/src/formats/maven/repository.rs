//! The Maven format's operations on the shared write kit: a deploy streams a file into the
//! chunk store (hashed for its checksum siblings on the way) and records it through Raft; a
//! metadata PUT keeps only a group's plugin prefixes; a checksum PUT is checked against the
//! stored file. And the reads the documents are rendered from.

use std::sync::Arc;

use axum::body::Body;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::checksum::{self, Hashers};
use super::coords::{Checksum, FileCoords, MavenPath, Target};
use super::keys::{MAX_FILES_PER_VERSION, MAX_PLUGINS_PER_GROUP, MAX_VERSIONS_PER_ARTIFACT};
use super::metadata;
use super::model::{MavenCommand, MavenFile, MavenOutcome, PluginRecord};
use super::NAME;
use crate::error::{Error, Result};
use crate::metadata::model::{now_ms, Repository};
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest;

impl FormatCommand for MavenCommand {
    type Outcome = MavenOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &MavenOutcome) -> bool {
        outcome.changed()
    }
}

/// Most metadata and checksum bodies held in memory at once (files stream, and the node's
/// upload admission bounds them).
const CONCURRENT_BUFFERED: usize = 16;
/// Largest checksum body (a `.sha512` and a file name).
const MAX_CHECKSUM_BODY: usize = 4 << 10;

pub fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    Unchanged,
}

/// A rendered metadata document and when what it shows last changed.
pub struct Rendered {
    pub body: Vec<u8>,
    pub modified_ms: i64,
}

/// Maven repositories.
pub struct MavenRepos {
    pub service: Arc<ArtifactService>,
    buffered: Semaphore,
}

impl MavenRepos {
    pub fn new(service: Arc<ArtifactService>) -> Self {
        Self {
            service,
            buffered: Semaphore::new(CONCURRENT_BUFFERED),
        }
    }

    /// The repository, which must hold Maven artifacts.
    pub fn maven_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// Refuses a body whose declared length is over `limit` before any of it is read (so a
    /// client waiting on `Expect: 100-continue` sends none).
    pub fn check_length(declared: Option<u64>, limit: u64) -> Result<()> {
        match declared {
            Some(length) if length > limit => Err(Error::TooLarge { limit }),
            _ => Ok(()),
        }
    }

    /// Stores one file of a version. Nothing becomes visible unless the whole body arrived
    /// and the command applied; a limit the artifact or version already reached is refused
    /// before a byte is read.
    pub async fn deploy(
        &self,
        repo: &RepoName,
        coords: &FileCoords,
        declared: Option<u64>,
        body: Body,
    ) -> Result<Written> {
        let service = &self.service;
        service.repo_for_write(repo).await?.require_format(NAME)?;
        let limits = service.config.limits.ingest_limits();
        Self::check_length(declared, limits.max_bytes)?;
        self.check_room(repo, coords)?;
        let mut hashers = Hashers::default();
        let hashed = body.into_data_stream().map(|frame| {
            if let Ok(data) = &frame {
                hashers.update(data);
            }
            frame
        });
        let ingested = ingest::ingest(
            service.chunks.clone(),
            service.config.chunking,
            Box::pin(hashed),
            limits,
            service.collector.clone(),
        )
        .await?;
        let digests = hashers.finish();
        let at_ms = now_ms();
        let file = MavenFile {
            filename: coords.filename.clone(),
            classifier: coords.classifier.clone(),
            extension: coords.extension.clone(),
            build: coords.build.clone(),
            blob: ingested.descriptor.blake3,
            sha256: ingested.descriptor.sha256,
            sha1: digests.sha1,
            md5: digests.md5,
            sha512: digests.sha512,
            size: ingested.descriptor.size,
            uploaded_at_ms: at_ms,
        };
        let command = MavenCommand::Deploy {
            repo: repo.clone(),
            group: coords.group.clone(),
            artifact: coords.artifact.clone(),
            version: coords.version.clone(),
            file: Box::new(file),
            blob: ingested.descriptor.clone(),
            at_ms,
        };
        let outcome = service.propose_format(&command, [ingested]).await?;
        self.written(repo, &coords.filename, outcome).await
    }

    /// The limits, checked on this node's state before the body is read (the state machine
    /// checks them again).
    fn check_room(&self, repo: &RepoName, coords: &FileCoords) -> Result<()> {
        let catalog = &self.service.catalog;
        let (group, artifact) = (coords.group.as_str(), coords.artifact.as_str());
        let version = catalog.maven_version(repo, group, artifact, &coords.version)?;
        let Some(version) = version else {
            let versions = catalog
                .maven_artifact(repo, group, artifact)?
                .map_or(0, |a| a.versions);
            return match super::apply::over_limit(versions, MAX_VERSIONS_PER_ARTIFACT) {
                true => Err(refusal(
                    MavenOutcome::TooManyVersions {
                        limit: MAX_VERSIONS_PER_ARTIFACT,
                    },
                    repo,
                    &coords.filename,
                )),
                false => Ok(()),
            };
        };
        let exists = catalog
            .maven_file(repo, group, artifact, &coords.version, &coords.filename)?
            .is_some();
        if !exists && super::apply::over_limit(version.files, MAX_FILES_PER_VERSION) {
            return Err(refusal(
                MavenOutcome::TooManyFiles {
                    limit: MAX_FILES_PER_VERSION,
                },
                repo,
                &coords.filename,
            ));
        }
        Ok(())
    }

    /// Reads a small body whole (metadata, checksums), bounded in size and in how many are
    /// held at once.
    async fn small_body(
        &self,
        declared: Option<u64>,
        body: Body,
        limit: usize,
    ) -> Result<(tokio::sync::SemaphorePermit<'_>, bytes::Bytes)> {
        Self::check_length(declared, limit as u64)?;
        let permit = self
            .buffered
            .acquire()
            .await
            .map_err(|_| Error::internal("read a body", "the repository is shutting down"))?;
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::TooLarge {
                limit: limit as u64,
            })?;
        Ok((permit, bytes))
    }

    /// A client's `maven-metadata.xml`: parsed and checked against what is stored; only a
    /// group's plugin prefixes are kept (everything else is rendered from the state).
    pub async fn put_metadata(
        &self,
        repo: &RepoName,
        target: &Target,
        declared: Option<u64>,
        body: Body,
    ) -> Result<Written> {
        let service = &self.service;
        service.repo_for_write(repo).await?.require_format(NAME)?;
        let (_permit, body) = self
            .small_body(declared, body, metadata::MAX_DOCUMENT)
            .await?;
        let uploaded = metadata::parse(&body, MAX_PLUGINS_PER_GROUP as usize).map_err(invalid)?;
        service.read_barrier().await?;
        match target {
            Target::SnapshotMetadata {
                group,
                artifact,
                version,
            } => {
                let stored = service
                    .catalog
                    .maven_version(repo, group, artifact, version)?
                    .is_some_and(|v| v.files > 0);
                if !stored {
                    return Err(invalid(format!(
                        "{group}:{artifact}:{version} has no deployed files; deploy them before its maven-metadata.xml"
                    )));
                }
                same(&uploaded.version, version, "version")?;
                Ok(Written::Unchanged)
            }
            Target::Metadata { artifact, group } => {
                if !uploaded.plugins.is_empty() {
                    let Some(group) = group else {
                        return Err(invalid(
                            "plugin prefixes belong in a group's maven-metadata.xml",
                        ));
                    };
                    return self.set_plugins(repo, group, uploaded.plugins).await;
                }
                let Some((group, name)) = artifact else {
                    return Err(invalid(
                        "a group's maven-metadata.xml lists plugin prefixes, and this one has none",
                    ));
                };
                let stored = service
                    .catalog
                    .maven_artifact(repo, group, name)?
                    .is_some_and(|a| a.versions > 0);
                if !stored {
                    return Err(invalid(format!(
                        "{group}:{name} has no deployed files; deploy them before its maven-metadata.xml"
                    )));
                }
                same(&uploaded.group, group, "groupId")?;
                same(&uploaded.artifact, name, "artifactId")?;
                Ok(Written::Unchanged)
            }
            Target::File(_) => Err(Error::Internal("a file is not metadata".into())),
        }
    }

    async fn set_plugins(
        &self,
        repo: &RepoName,
        group: &str,
        plugins: Vec<PluginRecord>,
    ) -> Result<Written> {
        let command = MavenCommand::SetPlugins {
            repo: repo.clone(),
            group: group.to_string(),
            plugins,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, &format!("{group} plugins"), outcome)
            .await
    }

    /// A checksum sibling PUT: a file's must match the stored file's digest; metadata's is
    /// accepted when well-formed (the document it was computed over is not kept: the one
    /// served is rendered, with its own checksums).
    pub async fn put_checksum(
        &self,
        repo: &RepoName,
        path: &MavenPath,
        algo: Checksum,
        declared: Option<u64>,
        body: Body,
    ) -> Result<()> {
        let service = &self.service;
        service.repo_for_write(repo).await?.require_format(NAME)?;
        let (_permit, body) = self.small_body(declared, body, MAX_CHECKSUM_BODY).await?;
        let sent = checksum::parse_body(algo, &body).map_err(invalid)?;
        service.read_barrier().await?;
        match &path.target {
            Target::File(coords) => {
                let file = self
                    .file(repo, coords)?
                    .ok_or_else(|| not_found(repo, coords))?;
                let stored = file_digest(&file, algo);
                if stored != sent {
                    return Err(invalid(format!(
                        "checksum mismatch: {} has {} {stored}, the uploaded .{} says {sent}",
                        coords.filename,
                        algo.name(),
                        algo.name()
                    )));
                }
                Ok(())
            }
            target => match self.render(repo, target)? {
                Some(_) => Ok(()),
                None => Err(Error::ArtifactNotFound {
                    repo: repo.to_string(),
                    path: "maven-metadata.xml".into(),
                }),
            },
        }
    }

    /// A stored file, from this node's state.
    pub fn file(&self, repo: &RepoName, coords: &FileCoords) -> Result<Option<MavenFile>> {
        self.service.catalog.maven_file(
            repo,
            &coords.group,
            &coords.artifact,
            &coords.version,
            &coords.filename,
        )
    }

    /// The metadata document `target` names, rendered from this node's state (`None`: it
    /// names nothing stored).
    pub fn render(&self, repo: &RepoName, target: &Target) -> Result<Option<Rendered>> {
        let catalog = &self.service.catalog;
        match target {
            Target::Metadata { artifact, group } => {
                let plugins = match group {
                    Some(group) => catalog.maven_plugins(repo, group)?,
                    None => Vec::new(),
                };
                let mut found = None;
                if let Some((group, name)) = artifact {
                    if let Some(record) = catalog
                        .maven_artifact(repo, group, name)?
                        .filter(|a| a.versions > 0)
                    {
                        let versions = catalog.maven_versions(repo, group, name)?;
                        found = Some((record, versions));
                    }
                }
                if found.is_none() && plugins.is_empty() {
                    return Ok(None);
                }
                let modified_ms = found.as_ref().map_or(0, |(r, _)| r.updated_at_ms);
                let body = metadata::artifact_level(
                    found.as_ref().map(|(r, v)| (r, v.as_slice())),
                    &plugins,
                );
                Ok(Some(Rendered { body, modified_ms }))
            }
            Target::SnapshotMetadata {
                group,
                artifact,
                version,
            } => {
                let Some(record) = catalog
                    .maven_version(repo, group, artifact, version)?
                    .filter(|v| v.files > 0)
                else {
                    return Ok(None);
                };
                let files = catalog.maven_files(repo, group, artifact, version)?;
                Ok(Some(Rendered {
                    body: metadata::snapshot_level(group, artifact, &record, &files),
                    modified_ms: record.updated_at_ms,
                }))
            }
            Target::File(_) => Ok(None),
        }
    }

    /// Waits for a change to reach the mirrors that must have it, or turns a refusal into
    /// its error.
    async fn written(&self, repo: &RepoName, what: &str, outcome: MavenOutcome) -> Result<Written> {
        let service = &self.service;
        let (written, seq) = match outcome {
            MavenOutcome::Stored { seq } | MavenOutcome::PluginsSet { seq } => {
                (Written::Created, seq)
            }
            MavenOutcome::Replaced { seq } => (Written::Replaced, seq),
            // A retried write: wait as the first attempt would have.
            MavenOutcome::Unchanged => (
                Written::Unchanged,
                service.catalog.changelog_head()?.last_seq,
            ),
            refused => return Err(refusal(refused, repo, what)),
        };
        service.wait_sync_replication(repo, seq).await?;
        Ok(written)
    }
}

/// A file's stored digest for a checksum sibling.
pub fn file_digest(file: &MavenFile, algo: Checksum) -> String {
    match algo {
        Checksum::Sha1 => file.sha1.clone(),
        Checksum::Md5 => file.md5.clone(),
        Checksum::Sha256 => file.sha256.to_hex(),
        Checksum::Sha512 => file.sha512.clone(),
    }
}

pub fn not_found(repo: &RepoName, coords: &FileCoords) -> Error {
    Error::ArtifactNotFound {
        repo: repo.to_string(),
        path: format!(
            "{}:{}:{} {}",
            coords.group, coords.artifact, coords.version, coords.filename
        ),
    }
}

/// A coordinate a client's document names must be the one its URL names.
fn same(sent: &Option<String>, expected: &str, what: &str) -> Result<()> {
    match sent {
        Some(sent) if sent != expected => Err(invalid(format!(
            "the document's {what} is {sent:?}, the URL's {expected:?}"
        ))),
        _ => Ok(()),
    }
}

fn refusal(outcome: MavenOutcome, repo: &RepoName, what: &str) -> Error {
    match outcome {
        MavenOutcome::RepoNotFound => Error::RepoNotFound {
            repo: repo.to_string(),
        },
        MavenOutcome::WrongFormat { format } => Error::WrongFormat {
            repo: repo.to_string(),
            format: format.to_string(),
            expected: NAME.to_string(),
        },
        MavenOutcome::FileExists { sha256 } => Error::Immutable {
            repo: repo.to_string(),
            path: what.to_string(),
            reason: format!(
                "{what} was deployed before with other bytes (sha256 {}); released files and timestamped SNAPSHOT builds never change, deploy a new version",
                sha256.to_hex()
            ),
        },
        MavenOutcome::TooManyVersions { limit } => invalid(format!(
            "the artifact already has {limit} versions, the most one may hold"
        )),
        MavenOutcome::TooManyFiles { limit } => invalid(format!(
            "the version already has {limit} files, the most one may hold"
        )),
        MavenOutcome::TooManyPlugins { limit } => invalid(format!(
            "the group already has {limit} plugin prefixes, the most one may hold"
        )),
        MavenOutcome::NoSuchArtifact { artifact } => invalid(format!(
            "the plugin {artifact} has no deployed files in this group; deploy it before the group's maven-metadata.xml"
        )),
        other => Error::Internal(format!("unexpected outcome {other:?}")),
    }
}
