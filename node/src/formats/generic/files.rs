//! The generic format's operations: store, delete, read and list files.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::model::{GenericCommand, GenericOutcome};
use super::NAME;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::metadata::catalog::Page;
use crate::metadata::model::{now_ms, Artifact, BlobRecord, Repository};
use crate::names::{ArtifactPath, RepoName};
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest::{self, IngestedBlob};

impl FormatCommand for GenericCommand {
    type Outcome = GenericOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &GenericOutcome) -> bool {
        outcome.changed()
    }
}

/// The result of storing a file.
#[derive(Debug, Clone)]
pub struct PutResult {
    pub artifact: Artifact,
    pub chunks: usize,
    pub new_chunks: usize,
    /// False when the path already held byte-identical content (nothing changed).
    pub created: bool,
}

/// Generic file repositories on top of the shared write kit.
pub struct Files {
    pub service: Arc<ArtifactService>,
}

impl Files {
    /// Streams `body` into the chunk store and records it at `repo/path`.
    ///
    /// Nothing becomes visible unless the whole body arrived, matched `expected_sha256` (when
    /// given) and the command applied; chunks written for a refused upload are released.
    pub async fn put_file<S, E>(
        &self,
        repo_name: &RepoName,
        path: &ArtifactPath,
        body: S,
        expected_sha256: Option<Sha256>,
    ) -> Result<PutResult>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let service = &self.service;
        let repo = service.repo_for_write(repo_name).await?;
        repo.require_format(NAME)?;
        repo.require_local()?;
        let ingested = ingest::ingest(
            service.chunks.clone(),
            service.config.chunking,
            body,
            service.config.limits.ingest_limits(),
            service.collector.clone(),
        )
        .await?;
        if let Some(expected) = expected_sha256 {
            if expected != ingested.descriptor.sha256 {
                // Dropping `ingested` abandons its chunks.
                return Err(Error::DigestMismatch {
                    expected: expected.to_hex(),
                    actual: ingested.descriptor.sha256.to_hex(),
                });
            }
        }
        self.commit_file(repo_name, path, ingested).await
    }

    pub(super) async fn commit_file(
        &self,
        repo: &RepoName,
        path: &ArtifactPath,
        ingested: IngestedBlob,
    ) -> Result<PutResult> {
        let chunks = ingested.descriptor.chunks.len();
        let new_chunks = ingested.new_chunks();
        let command = GenericCommand::PutArtifact {
            repo: repo.clone(),
            path: path.clone(),
            blob: ingested.descriptor.clone(),
            at_ms: now_ms(),
        };
        let service = &self.service;
        let (created, seq) = match service.propose_format(&command, Some(ingested)).await? {
            GenericOutcome::ArtifactStored { seq, .. } => (true, seq),
            // A retry of an upload that already applied: wait as the first attempt would
            // have (the mirror must hold everything up to now).
            GenericOutcome::ArtifactUnchanged => {
                (false, service.catalog.changelog_head()?.last_seq)
            }
            refused => return Err(refusal(refused, repo, path)),
        };
        let artifact = service.catalog.artifact(repo, path)?.ok_or_else(|| {
            Error::Internal(format!("{repo}/{path} missing right after it was applied"))
        })?;
        service.wait_sync_replication(repo, seq).await?;
        Ok(PutResult {
            artifact,
            chunks,
            new_chunks: if created { new_chunks } else { 0 },
            created,
        })
    }

    pub async fn delete_file(&self, repo: &RepoName, path: &ArtifactPath) -> Result<()> {
        let service = &self.service;
        let record = service.repo_for_write(repo).await?;
        record.require_format(NAME)?;
        record.require_local()?;
        let command = GenericCommand::DeleteArtifact {
            repo: repo.clone(),
            path: path.clone(),
            at_ms: now_ms(),
        };
        match service.propose_format(&command, None).await? {
            // A delete in a sync-replicated repository is acknowledged like a push: once the
            // mirrors hold it (a deleted vulnerable file must not come back after a failover).
            GenericOutcome::ArtifactDeleted { seq } => {
                service.wait_sync_replication(repo, seq).await
            }
            refused => Err(refusal(refused, repo, path)),
        }
    }

    /// The repository, which must hold generic files (`WRONG_FORMAT` otherwise).
    fn generic_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// A stored file with its repository and blob.
    pub fn file(
        &self,
        repo_name: &RepoName,
        path: &ArtifactPath,
    ) -> Result<(Repository, Artifact, BlobRecord)> {
        let repo = self.generic_repo(repo_name)?;
        let catalog = &self.service.catalog;
        let artifact =
            catalog
                .artifact(repo_name, path)?
                .ok_or_else(|| Error::ArtifactNotFound {
                    repo: repo_name.to_string(),
                    path: path.to_string(),
                })?;
        let blob = catalog.blob(&artifact.blob)?.ok_or_else(|| {
            Error::Internal(format!(
                "artifact {repo_name}/{path} references a missing blob"
            ))
        })?;
        Ok((repo, artifact, blob))
    }

    pub fn list_files(
        &self,
        repo: &RepoName,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Artifact>> {
        self.generic_repo(repo)?;
        let limit = limit.clamp(1, self.service.config.limits.max_list_page);
        self.service.catalog.artifacts(repo, prefix, after, limit)
    }
}

/// The error for a file command the state machine refused.
fn refusal(outcome: GenericOutcome, repo: &RepoName, path: &ArtifactPath) -> Error {
    match outcome {
        GenericOutcome::RepoNotFound => Error::RepoNotFound {
            repo: repo.to_string(),
        },
        GenericOutcome::ArtifactNotFound => Error::ArtifactNotFound {
            repo: repo.to_string(),
            path: path.to_string(),
        },
        GenericOutcome::Immutable => Error::Immutable {
            repo: repo.to_string(),
            path: path.to_string(),
            reason: "the repository is immutable and the path already holds different content"
                .into(),
        },
        GenericOutcome::WrongFormat { format } => Error::WrongFormat {
            repo: repo.to_string(),
            format: format.to_string(),
            expected: NAME.to_string(),
        },
        other => Error::Internal(format!("unexpected outcome {other:?}")),
    }
}
