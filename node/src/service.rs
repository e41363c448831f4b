//! The operations every API shares: validate, ingest, propose through Raft, read back.
//!
//! HTTP handlers (and later format adapters) stay thin: they parse their protocol and call
//! here, so the write path and its invariants exist once.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use crate::blob_stream::{self, ChunkSource};
use crate::catalog::{Catalog, Page};
use crate::chunk_store::ChunkStore;
use crate::cluster::{ReadConsistency, Region};
use crate::config::NodeConfig;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::gc::Collector;
use crate::ingest::{self, IngestedBlob};
use crate::model::{
    now_ms, Artifact, BlobDescriptor, BlobRecord, Command, Format, Outcome, Repository,
};
use crate::names::{ArtifactPath, RepoName};

/// The result of storing a file.
#[derive(Debug, Clone)]
pub struct PutResult {
    pub artifact: Artifact,
    pub chunks: usize,
    pub new_chunks: usize,
    /// False when the path already held byte-identical content (nothing changed).
    pub created: bool,
}

/// A node's artifact operations.
pub struct ArtifactService {
    pub catalog: Catalog,
    pub chunks: Arc<ChunkStore>,
    pub collector: Collector,
    pub region: Arc<Region>,
    pub geo: Arc<crate::geo::Geo>,
    pub config: Arc<NodeConfig>,
}

impl ArtifactService {
    /// Proposes a command and returns what applying it did.
    /// Proposes from any node (forwarding to the leader) and returns once this node applied it.
    pub async fn propose(&self, command: &Command) -> Result<Outcome> {
        self.region.propose_command(command).await
    }

    /// Proposes a command that references freshly ingested blobs.
    ///
    /// Every path that commits new chunks goes through here: the blobs' chunks are made durable
    /// on a majority of the region's voters (ingest already fsynced them here) before the command
    /// can make them visible.
    pub async fn propose_with_blobs(
        &self,
        command: &Command,
        blobs: &[&BlobDescriptor],
    ) -> Result<Outcome> {
        let ids: Vec<_> = blobs
            .iter()
            .flat_map(|b| b.chunks.iter().map(|c| c.id))
            .collect();
        self.region.replicate_chunks(&ids).await?;
        self.propose(command).await
    }

    /// The repository a write targets. This node may not have applied the repository's
    /// creation yet (it was created through another node a moment ago): on a miss, catch up
    /// with the leader and look again before answering `REPO_NOT_FOUND`.
    pub async fn repo_for_write(&self, name: &RepoName) -> Result<Repository> {
        if let Some(repo) = self.catalog.repo(name)? {
            return Ok(repo);
        }
        self.read_barrier().await?;
        self.catalog.must_repo(name)
    }

    /// Makes this node's view current before a read (see [`Region::read_barrier`]); refused
    /// when that cannot be confirmed.
    pub async fn read_barrier(&self) -> Result<ReadConsistency> {
        self.region.read_barrier(false).await
    }

    /// Streams `range` of a blob, fetching chunks this node lacks from its peers.
    pub async fn open_blob(
        &self,
        blob: &BlobDescriptor,
        range: std::ops::Range<u64>,
    ) -> Result<impl Stream<Item = std::result::Result<Bytes, Error>> + Send + 'static> {
        let source: Arc<dyn ChunkSource> = self.region.clone();
        blob_stream::open(source, &blob.chunks, range).await
    }

    pub async fn create_repo(
        &self,
        name: RepoName,
        format: Format,
        immutable: bool,
        sync_replication: bool,
    ) -> Result<Repository> {
        if format == Format::Oci {
            crate::oci::names::check_repo_name(&name)?;
        }
        let repo = Repository {
            name: name.clone(),
            format,
            immutable,
            created_at_ms: now_ms(),
            sync_replication,
        };
        match self
            .propose(&Command::CreateRepo { repo: repo.clone() })
            .await?
        {
            Outcome::RepoCreated => Ok(repo),
            Outcome::RepoExists => Err(Error::RepoExists {
                repo: name.to_string(),
            }),
            Outcome::ReadOnlyMirror => Err(self.read_only_error()),
            other => Err(Error::Internal(format!(
                "unexpected outcome {other:?} for create repo"
            ))),
        }
    }

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
        let repo = self.repo_for_write(repo_name).await?;
        require_generic(&repo)?;
        let ingested = ingest::ingest(
            self.chunks.clone(),
            self.config.chunking,
            body,
            ingest::IngestLimits::from_config(&self.config.limits),
            self.collector.clone(),
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

    async fn commit_file(
        &self,
        repo: &RepoName,
        path: &ArtifactPath,
        ingested: IngestedBlob,
    ) -> Result<PutResult> {
        let chunks = ingested.descriptor.chunks.len();
        let new_chunks = ingested.new_chunks();
        let command = Command::PutArtifact {
            repo: repo.clone(),
            path: path.clone(),
            blob: ingested.descriptor.clone(),
            at_ms: now_ms(),
        };
        let (created, seq) = match self.propose_ingested(&command, ingested).await? {
            Outcome::ArtifactStored { seq, .. } => (true, seq),
            // A retry of an upload that already applied: wait as the first attempt would
            // have (the mirror must hold everything up to now).
            Outcome::ArtifactUnchanged => (false, self.catalog.changelog_head()?.last_seq),
            refused => return Err(self.refusal(refused, repo, path)),
        };
        let artifact = self.catalog.artifact(repo, path)?.ok_or_else(|| {
            Error::Internal(format!("{repo}/{path} missing right after it was applied"))
        })?;
        self.wait_sync_replication(repo, seq).await?;
        Ok(PutResult {
            artifact,
            chunks,
            new_chunks: if created { new_chunks } else { 0 },
            created,
        })
    }

    pub async fn delete_file(&self, repo: &RepoName, path: &ArtifactPath) -> Result<()> {
        require_generic(&self.repo_for_write(repo).await?)?;
        let command = Command::DeleteArtifact {
            repo: repo.clone(),
            path: path.clone(),
            at_ms: now_ms(),
        };
        match self.propose(&command).await? {
            // A delete in a sync-replicated repository is acknowledged like a push: once the
            // mirrors hold it (a deleted vulnerable file must not come back after a failover).
            Outcome::ArtifactDeleted { seq } => self.wait_sync_replication(repo, seq).await,
            refused => Err(self.refusal(refused, repo, path)),
        }
    }

    /// The repository, which must hold generic files (`WRONG_FORMAT` otherwise).
    fn generic_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.catalog.must_repo(name)?;
        require_generic(&repo)?;
        Ok(repo)
    }

    /// Proposes a command that references `ingested` (one write step for every format): on a
    /// proposal error the command may still commit later, so the chunks stay (the orphan sweep
    /// removes them if it never does); once it applied, the chunks are kept if it changed the
    /// state, and abandoned if it did not (already there, or refused).
    pub async fn propose_ingested(
        &self,
        command: &Command,
        ingested: IngestedBlob,
    ) -> Result<Outcome> {
        let outcome = match self
            .propose_with_blobs(command, &[&ingested.descriptor])
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                ingested.outcome_unknown();
                return Err(e);
            }
        };
        if outcome.changed() {
            ingested.committed();
        }
        Ok(outcome)
    }

    /// For a sync-replicated repository, waits until a mirror region applied `seq`.
    pub async fn wait_sync_replication(&self, repo: &RepoName, seq: u64) -> Result<()> {
        match self.catalog.repo(repo)? {
            Some(repository) if repository.sync_replication => self.geo.wait_mirrored(seq).await,
            _ => Ok(()),
        }
    }

    /// The answer to a write the state machine refused because this region is (now) a mirror:
    /// the same error, naming the primary, for every format.
    pub(crate) fn read_only_error(&self) -> Error {
        self.geo
            .read_only_error()
            .unwrap_or_else(|| Error::NoQuorum {
                reason: "the region changed role while the write was in flight; retry".into(),
            })
    }

    fn refusal(&self, outcome: Outcome, repo: &RepoName, path: &ArtifactPath) -> Error {
        match outcome {
            Outcome::ReadOnlyMirror => self.read_only_error(),
            Outcome::RepoNotFound => Error::RepoNotFound {
                repo: repo.to_string(),
            },
            Outcome::ArtifactNotFound => Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: path.to_string(),
            },
            Outcome::Immutable => Error::Immutable {
                repo: repo.to_string(),
                path: path.to_string(),
                reason: "the repository is immutable and the path already holds different content"
                    .into(),
            },
            Outcome::WrongFormat { format } => Error::WrongFormat {
                repo: repo.to_string(),
                format: format.as_str().into(),
                expected: Format::Generic.as_str().into(),
            },
            other => Error::Internal(format!("unexpected outcome {other:?}")),
        }
    }

    /// A stored file with its repository and blob.
    pub fn file(
        &self,
        repo_name: &RepoName,
        path: &ArtifactPath,
    ) -> Result<(Repository, Artifact, BlobRecord)> {
        let repo = self.generic_repo(repo_name)?;
        let artifact =
            self.catalog
                .artifact(repo_name, path)?
                .ok_or_else(|| Error::ArtifactNotFound {
                    repo: repo_name.to_string(),
                    path: path.to_string(),
                })?;
        let blob = self.catalog.blob(&artifact.blob)?.ok_or_else(|| {
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
        let limit = limit.clamp(1, self.config.limits.max_list_page);
        self.catalog.artifacts(repo, prefix, after, limit)
    }
}

/// `WRONG_FORMAT` unless the repository holds generic files (the `/files/` API's).
fn require_generic(repo: &Repository) -> Result<()> {
    if repo.format != Format::Generic {
        return Err(Error::WrongFormat {
            repo: repo.name.to_string(),
            format: repo.format.as_str().into(),
            expected: Format::Generic.as_str().into(),
        });
    }
    Ok(())
}
