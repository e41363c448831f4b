//! The write kit every format shares: ingest, quorum push, propose through Raft, decode the
//! answer, wait for sync replication; and the reads every format needs (repositories, blobs).
//!
//! A format's handlers parse their protocol and call [`ArtifactService::propose_format`] with
//! the format's own command type ([`FormatCommand`]): the steps and their invariants (chunks
//! on a majority before the command that makes them visible; chunks abandoned unless the
//! command committed; a write refused because the region became a mirror answers
//! `READ_ONLY_MIRROR` for every format) exist once, here.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::metadata::catalog::Catalog;
use crate::metadata::format::{FormatName, FormatSet};
use crate::metadata::model::{now_ms, BlobDescriptor, Command, Outcome, Repository};
use crate::names::RepoName;
use crate::region::{ReadConsistency, Region};
use crate::storage::blob_stream::{self, ChunkSource};
use crate::storage::chunk_store::ChunkStore;
use crate::storage::gc::Collector;
use crate::storage::ingest::IngestedBlob;

/// A format's command type, as the write path proposes it.
pub trait FormatCommand: serde::Serialize + Sync {
    /// What applying it answers.
    type Outcome: serde::de::DeserializeOwned + std::fmt::Debug;
    /// The format it belongs to.
    const FORMAT: FormatName;
    /// The payload version it encodes as.
    const VERSION: u32;
    /// Whether an answer says the state changed (the command's chunks are then kept).
    fn changed(outcome: &Self::Outcome) -> bool;
}

/// A node's artifact operations.
pub struct ArtifactService {
    pub catalog: Catalog,
    pub chunks: Arc<ChunkStore>,
    pub collector: Collector,
    pub region: Arc<Region>,
    pub geo: Arc<crate::geo::Geo>,
    pub config: Arc<NodeConfig>,
    /// The formats this node serves.
    pub formats: FormatSet,
    /// Upstreams, fills and freshness of the remote repositories.
    pub remotes: Arc<crate::remote::Remotes>,
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

    /// Ingests a finished cache-fill spool file into the chunk store, as an upload of its
    /// bytes would be.
    pub async fn ingest_spool(
        &self,
        spool: &std::path::Path,
    ) -> std::result::Result<IngestedBlob, crate::remote::FillFailure> {
        use crate::remote::{FillFailure, FillFailureKind};
        let file = tokio::fs::File::open(spool)
            .await
            .map_err(FillFailure::internal)?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        crate::storage::ingest::ingest(
            self.chunks.clone(),
            self.config.chunking,
            body,
            self.config.limits.ingest_limits(),
            self.collector.clone(),
        )
        .await
        .map_err(|e| match e {
            Error::TooLarge { limit } => FillFailure::new(
                FillFailureKind::TooLarge,
                format!("the upstream's content is larger than the limit of {limit} bytes"),
            ),
            other => FillFailure::internal(other),
        })
    }

    /// Whether cache fills are stored here: a mirror region serves misses of its remote
    /// repositories straight from the upstream without storing them (it takes no writes); the
    /// primary's fills reach it by replication.
    pub fn stores_fills(&self) -> bool {
        !matches!(
            self.geo.role(),
            crate::metadata::model::RegionRole::Mirror { .. }
        )
    }

    pub async fn create_repo(
        &self,
        name: RepoName,
        format: &str,
        immutable: bool,
        sync_replication: bool,
        remote: Option<crate::metadata::remote_spec::RemoteSpec>,
    ) -> Result<Repository> {
        let implementation = self
            .formats
            .must_find(format)
            .ok()
            .filter(|f| f.hosts_repositories())
            .ok_or_else(|| Error::UnsupportedFormat {
                format: format.chars().take(40).collect(),
                supported: self.formats.repository_formats(),
            })?;
        implementation.check_repo_name(&name)?;
        if let Some(spec) = &remote {
            if !implementation.proxies() {
                return Err(Error::InvalidRequest {
                    message: format!(
                        "remote repositories of format {format} are not supported yet (remote formats: {})",
                        self.formats.remote_formats()
                    ),
                });
            }
            spec.validate()?;
        }
        let format = implementation.name();
        let repo = Repository {
            name: name.clone(),
            format,
            immutable,
            created_at_ms: now_ms(),
            sync_replication,
            remote,
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

    /// Proposes a format's command (the one write step for every format): pushes the chunks
    /// of every blob in `ingested` (none, one, or several: a package and the metadata file
    /// extracted from it) to a majority, proposes the command in the format envelope, and
    /// decodes the format's answer. The blobs' chunks are kept if the command changed the
    /// state and abandoned if it did not; a refusal because the region is (now) a mirror is
    /// `READ_ONLY_MIRROR`, the same for every format.
    pub async fn propose_format<C: FormatCommand>(
        &self,
        command: &C,
        ingested: impl IntoIterator<Item = IngestedBlob>,
    ) -> Result<C::Outcome> {
        let payload = rmp_serde::to_vec_named(command)
            .map_err(|e| Error::internal("encode a format command", e))?;
        let envelope = Command::format(C::FORMAT, C::VERSION, payload);
        let ingested: Vec<IngestedBlob> = ingested.into_iter().collect();
        if ingested.is_empty() {
            let outcome = self.propose(&envelope).await?;
            return self.format_answer::<C>(&outcome);
        }
        let descriptors: Vec<&BlobDescriptor> = ingested.iter().map(|i| &i.descriptor).collect();
        let outcome = match self.propose_with_blobs(&envelope, &descriptors).await {
            Ok(outcome) => outcome,
            Err(e) => {
                ingested.into_iter().for_each(IngestedBlob::outcome_unknown);
                return Err(e);
            }
        };
        let answer = self.format_answer::<C>(&outcome)?;
        if C::changed(&answer) {
            ingested.into_iter().for_each(IngestedBlob::committed);
        }
        Ok(answer)
    }

    /// A format's answer from an outcome: refusals of the core (a mirror, a command no node
    /// could apply) become errors here, once for every format.
    fn format_answer<C: FormatCommand>(&self, outcome: &Outcome) -> Result<C::Outcome> {
        if let Some(payload) = outcome.format_payload(C::FORMAT.as_str()) {
            return rmp_serde::from_slice(&payload)
                .map_err(|e| Error::internal("decode a format's answer", e));
        }
        Err(match outcome {
            Outcome::ReadOnlyMirror => self.read_only_error(),
            Outcome::Refused { reason } => {
                Error::Internal(format!("the region refused the write: {reason}"))
            }
            other => Error::Internal(format!(
                "unexpected outcome {other:?} for a {} command",
                C::FORMAT
            )),
        })
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
}
