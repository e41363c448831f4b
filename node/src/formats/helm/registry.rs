//! The Helm format's operations on top of the shared write kit: chart uploads (the archive
//! checked and stored as an ordinary blob), provenance files, and `index.yaml`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::chart::{archive_name, check_name, prov_digest, read_chart};
use super::index::{assemble, entry, Assembled, IndexCache};
use super::keys::MAX_CHARTS;
use super::model::{Generation, HelmCommand, HelmOutcome, StoredFile, VersionRecord};
use super::NAME;
use crate::error::{Error, Result};
use crate::metadata::model::{now_ms, Repository};
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest::{self, IngestedBlob};

impl FormatCommand for HelmCommand {
    type Outcome = HelmOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &HelmOutcome) -> bool {
        outcome.changed()
    }
}

/// Most upload bodies held in memory at once (an archive is read whole to check it).
const CONCURRENT_UPLOADS: usize = 4;
/// Largest provenance file.
pub const MAX_PROV: usize = 1 << 20;

pub fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Changed,
    Unchanged,
}

/// Helm chart repositories.
pub struct Registry {
    pub service: Arc<ArtifactService>,
    uploads: Semaphore,
    index: IndexCache,
}

impl Registry {
    pub fn new(service: Arc<ArtifactService>) -> Self {
        Self {
            service,
            uploads: Semaphore::new(CONCURRENT_UPLOADS),
            index: IndexCache::default(),
        }
    }

    /// The largest chart archive: the node's upload limit.
    pub fn max_chart(&self) -> usize {
        usize::try_from(self.service.config.limits.ingest_limits().max_bytes).unwrap_or(usize::MAX)
    }

    /// The repository, which must hold charts.
    pub fn helm_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// The repository's generation (none before its first upload).
    pub fn generation(&self, repo: &RepoName) -> Result<Option<Generation>> {
        self.service.catalog.helm_generation(repo)
    }

    /// `index.yaml` at `generation`: the cached document while the generation stays.
    pub fn index(&self, repo: &RepoName, generation: Option<Generation>) -> Result<Assembled> {
        let catalog = &self.service.catalog;
        let seq = generation.map_or(0, |g| g.seq);
        self.index.get_or_build(repo, seq, || {
            let (charts, _) = catalog.helm_charts(repo, None, MAX_CHARTS)?;
            Ok(assemble(&charts, generation))
        })
    }

    /// The version an archive file name names, if stored.
    pub fn find_archive(
        &self,
        repo: &RepoName,
        file: &str,
    ) -> Result<Option<(String, VersionRecord)>> {
        for (name, version) in super::chart::splits(file) {
            if let Some(record) = self.service.catalog.helm_version(repo, name, version)? {
                return Ok(Some((name.to_string(), record)));
            }
        }
        Ok(None)
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

    /// Uploads a chart archive (and its provenance). `file`, when the URL names one, must be
    /// the archive's `{name}-{version}.tgz`.
    pub async fn upload(
        &self,
        repo: &RepoName,
        archive: Bytes,
        prov: Option<Bytes>,
        file: Option<&str>,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let _permit = self
            .uploads
            .acquire()
            .await
            .map_err(|_| Error::internal("upload", "the registry is shutting down"))?;
        let check = archive.clone();
        let meta = tokio::task::spawn_blocking(move || read_chart(&check))
            .await
            .map_err(|e| Error::internal("read the chart", e))?
            .map_err(invalid)?;
        let expected = archive_name(&meta.name, &meta.version);
        if let Some(file) = file.filter(|f| *f != expected) {
            return Err(invalid(format!(
                "the chart is {} {}, so its file is {expected}, not {file}",
                meta.name, meta.version
            )));
        }
        if let Some(prov) = &prov {
            use sha2::Digest as _;
            self.check_prov(
                prov,
                &expected,
                &hex::encode(sha2::Sha256::digest(&archive)),
            )?;
        }
        let ingested = self.ingest(archive).await?;
        let at_ms = now_ms();
        let descriptor = ingested.descriptor.clone();
        let version = VersionRecord {
            version: meta.version.clone(),
            entry: entry(&meta, &descriptor.sha256.to_hex(), at_ms),
            chart: StoredFile {
                blob: descriptor.blake3,
                sha256: descriptor.sha256,
                size: descriptor.size,
            },
            prov: None,
            created_at_ms: at_ms,
        };
        let command = HelmCommand::Upload {
            repo: repo.clone(),
            name: meta.name.clone(),
            version: Box::new(version),
            blob: descriptor,
            at_ms,
        };
        let outcome = self.service.propose_format(&command, [ingested]).await?;
        let written = self
            .written(repo, &meta.name, &meta.version, outcome)
            .await?;
        match prov {
            Some(prov) => {
                self.store_prov(repo, &meta.name, &meta.version, prov)
                    .await?;
                Ok(written)
            }
            None => Ok(written),
        }
    }

    /// A provenance file must name the archive and its digest.
    fn check_prov(&self, prov: &[u8], file: &str, sha256: &str) -> Result<()> {
        if prov.len() > MAX_PROV {
            return Err(Error::TooLarge {
                limit: MAX_PROV as u64,
            });
        }
        let text = std::str::from_utf8(prov)
            .map_err(|_| invalid("the provenance file is not UTF-8 text"))?;
        match prov_digest(text, file) {
            Some(digest) if digest.eq_ignore_ascii_case(sha256) => Ok(()),
            Some(digest) => Err(invalid(format!(
                "the provenance file gives {file} the sha256 {digest}, the stored chart's is {sha256}"
            ))),
            None => Err(invalid(format!(
                "the provenance file does not name {file} in its files: section"
            ))),
        }
    }

    /// Attaches `prov` to `file` (named by the URL, or found in the provenance itself).
    pub async fn provenance(
        &self,
        repo: &RepoName,
        file: Option<&str>,
        prov: Bytes,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let text = std::str::from_utf8(&prov)
            .map_err(|_| invalid("the provenance file is not UTF-8 text"))?;
        let file = match file {
            Some(file) => file.to_string(),
            None => text
                .lines()
                .map(str::trim)
                .find_map(|line| {
                    let (name, rest) = line.split_once(':')?;
                    (name.ends_with(".tgz") && rest.trim().starts_with("sha256:"))
                        .then(|| name.to_string())
                })
                .ok_or_else(|| invalid("the provenance file names no chart archive"))?,
        };
        let (name, record) =
            self.find_archive(repo, &file)?
                .ok_or_else(|| Error::ArtifactNotFound {
                    repo: repo.to_string(),
                    path: format!("charts/{file}: upload the chart before its provenance"),
                })?;
        let version = record.version.clone();
        self.store_prov(repo, &name, &version, prov).await
    }

    async fn store_prov(
        &self,
        repo: &RepoName,
        name: &str,
        version: &str,
        prov: Bytes,
    ) -> Result<Written> {
        check_name(name).map_err(invalid)?;
        let record = self
            .service
            .catalog
            .helm_version(repo, name, version)?
            .ok_or_else(|| Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("chart {name} {version}"),
            })?;
        let file = archive_name(name, version);
        self.check_prov(&prov, &file, &record.chart.sha256.to_hex())?;
        let ingested = self.ingest(prov).await?;
        let command = HelmCommand::Provenance {
            repo: repo.clone(),
            name: name.to_string(),
            version: version.to_string(),
            blob: ingested.descriptor.clone(),
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, [ingested]).await?;
        self.written(repo, name, version, outcome).await
    }

    /// Waits for a change to reach the mirrors that must have it, or turns a refusal into
    /// its error.
    async fn written(
        &self,
        repo: &RepoName,
        name: &str,
        version: &str,
        outcome: HelmOutcome,
    ) -> Result<Written> {
        let service = &self.service;
        match outcome {
            HelmOutcome::Changed { seq } => {
                service.wait_sync_replication(repo, seq).await?;
                Ok(Written::Changed)
            }
            HelmOutcome::Unchanged => {
                let seq = service.catalog.changelog_head()?.last_seq;
                service.wait_sync_replication(repo, seq).await?;
                Ok(Written::Unchanged)
            }
            HelmOutcome::Exists { digest } => Err(Error::Immutable {
                repo: repo.to_string(),
                path: archive_name(name, version),
                reason: format!(
                    "{name} {version} is stored with other bytes (sha256 {digest}); an uploaded chart version never changes, upload a new version"
                ),
            }),
            HelmOutcome::RepoNotFound => Err(Error::RepoNotFound {
                repo: repo.to_string(),
            }),
            HelmOutcome::WrongFormat { format } => Err(Error::WrongFormat {
                repo: repo.to_string(),
                format: format.to_string(),
                expected: NAME.to_string(),
            }),
            HelmOutcome::VersionNotFound => Err(Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("chart {name} {version}"),
            }),
            HelmOutcome::TooManyVersions { limit } => Err(invalid(format!(
                "{name} already has {limit} versions, the most a chart may hold"
            ))),
        }
    }
}
