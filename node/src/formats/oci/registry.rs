//! The registry's operations, shared by the `/v2/` handlers: name checks, blob uploads through
//! the common ingest pipeline, manifest pushes, reads of the applied state.
//!
//! Writes go through the shared write step, [`ArtifactService::propose_format`], like every
//! other format's (with the freshly ingested blob when there is one). Checks
//! made here before proposing (a blob exists, a tag is free) are for precise errors only: the
//! state machine makes the same decisions again when the command applies.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::Digest as _;

use crate::digest::Sha256;
use crate::error::Error;
use crate::formats::oci::error::{OciError, OciResult};
use crate::formats::oci::manifest::{self, ParsedManifest};
use crate::formats::oci::model::{BlobLink, ManifestInfo, ManifestRecord, OciCommand, OciOutcome};
use crate::formats::oci::names::{digest_string, OciName, Reference, Tag};
use crate::formats::oci::uploads::{SessionGuard, UploadStore};
use crate::metadata::model::{now_ms, BlobDescriptor, BlobRecord, Repository};
use crate::service::ArtifactService;
use crate::storage::ingest::{self, IngestedBlob};

/// A manifest that was stored (or already was).
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Sha256,
    pub subject: Option<Sha256>,
}

/// The OCI registry of a node.
pub struct Registry {
    pub service: Arc<ArtifactService>,
    pub uploads: Arc<UploadStore>,
    pub auth: Arc<crate::auth::Auth>,
}

type BoxedBody = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

impl Registry {
    pub fn new(
        service: Arc<ArtifactService>,
        uploads: Arc<UploadStore>,
        auth: Arc<crate::auth::Auth>,
    ) -> Self {
        Self {
            service,
            uploads,
            auth,
        }
    }

    /// The Arca repository of `name`, which must exist and have format `oci`. A repository
    /// created through another node a moment ago is found too (the node catches up first).
    pub async fn repo(&self, name: &OciName) -> OciResult<Repository> {
        let repo = match self.service.repo_for_write(&name.repo).await {
            Ok(repo) => repo,
            Err(Error::RepoNotFound { .. }) => {
                return Err(OciError::NameUnknown {
                    name: name.to_string(),
                    reason: format!(
                        "repository {} does not exist (create it with format \"oci\")",
                        name.repo
                    ),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if repo.format != super::NAME {
            return Err(OciError::NameUnknown {
                name: name.to_string(),
                reason: format!(
                    "repository {} has format {}; /v2/ serves oci repositories",
                    name.repo,
                    repo.format.as_str()
                ),
            });
        }
        Ok(repo)
    }

    /// A blob linked in the image.
    /// Reads by digest skip the read barrier (a local hit is proof: content under a digest
    /// never changes); a miss catches up with the leader and looks again.
    pub async fn blob(&self, name: &OciName, digest: &Sha256) -> OciResult<(BlobLink, BlobRecord)> {
        self.repo(name).await?;
        let catalog = &self.service.catalog;
        if let Some(found) = catalog.oci_blob(&name.repo, &name.image, digest)? {
            return Ok(found);
        }
        self.service.read_barrier().await?;
        catalog
            .oci_blob(&name.repo, &name.image, digest)?
            .ok_or_else(|| OciError::BlobUnknown {
                name: name.to_string(),
                digest: digest_string(digest),
            })
    }

    /// Ingests the bytes `session` received so far (if any) followed by `body`, checks the
    /// result against `expected` and links the blob into the image. A mismatch, a refusal or a
    /// broken body stores nothing.
    pub async fn put_blob<S, E>(
        &self,
        name: &OciName,
        expected: Sha256,
        session: Option<&SessionGuard>,
        body: S,
    ) -> OciResult<BlobDescriptor>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.repo(name).await?;
        let body = body.map(|frame| frame.map_err(|e| e.to_string()));
        let stream: BoxedBody = match session {
            Some(session) => {
                let spooled = session
                    .spooled()
                    .await?
                    .map(|frame| frame.map_err(|e| format!("read upload data: {e}")));
                Box::pin(spooled.chain(body))
            }
            None => Box::pin(body),
        };
        let ingested = self.ingest(stream).await?;
        if ingested.descriptor.sha256 != expected {
            let actual = ingested.descriptor.sha256;
            // Dropping `ingested` abandons its chunks.
            return Err(OciError::DigestInvalid {
                reason: format!(
                    "the uploaded content has digest {}, not {}; nothing was stored",
                    digest_string(&actual),
                    digest_string(&expected)
                ),
            });
        }
        let descriptor = ingested.descriptor.clone();
        let command = OciCommand::LinkBlob {
            repo: name.repo.clone(),
            image: name.image.clone(),
            blob: descriptor.clone(),
            at_ms: now_ms(),
        };
        self.commit(&command, ingested, name).await?;
        Ok(descriptor)
    }

    async fn ingest(&self, stream: BoxedBody) -> OciResult<IngestedBlob> {
        Ok(ingest::ingest(
            self.service.chunks.clone(),
            self.service.config.chunking,
            stream,
            self.service.config.limits.ingest_limits(),
            self.service.collector.clone(),
        )
        .await?)
    }

    /// Proposes a command that references `ingested`, releasing its chunks unless it stored
    /// something new. On a proposal error the command may still commit later, so the chunks
    /// stay (the orphan sweep removes them if it never does).
    pub(super) async fn commit(
        &self,
        command: &OciCommand,
        ingested: IngestedBlob,
        name: &OciName,
    ) -> OciResult<()> {
        let seq = self.commit_inner(command, ingested, name).await?;
        self.wait_sync(name, seq).await
    }

    /// For a sync-replicated repository, waits until the mirrors hold change `seq` (or, for a
    /// write that changed nothing, everything up to now: a retry waits as the first try would).
    async fn wait_sync(&self, name: &OciName, seq: Option<u64>) -> OciResult<()> {
        let seq = match seq {
            Some(seq) => seq,
            None => self.service.catalog.changelog_head()?.last_seq,
        };
        Ok(self.service.wait_sync_replication(&name.repo, seq).await?)
    }

    async fn commit_inner(
        &self,
        command: &OciCommand,
        ingested: IngestedBlob,
        name: &OciName,
    ) -> OciResult<Option<u64>> {
        match self.service.propose_format(command, Some(ingested)).await? {
            OciOutcome::BlobLinked { seq } | OciOutcome::ManifestStored { seq, .. } => {
                Ok(Some(seq))
            }
            // Already there: the chunks this upload wrote (none, usually) were abandoned.
            OciOutcome::BlobUnchanged | OciOutcome::ManifestUnchanged => Ok(None),
            refused => Err(refusal(refused, name)),
        }
    }

    /// Links a blob of `from` into `name` without moving bytes. `Ok(false)` when `from` does
    /// not have it (the caller falls back to an upload).
    pub async fn mount_blob(
        &self,
        name: &OciName,
        digest: &Sha256,
        from: &OciName,
    ) -> OciResult<bool> {
        self.repo(name).await?;
        let mut source = self.mountable(digest, from)?;
        if source.is_none() {
            // Pushed through another node of the region a moment ago, perhaps: catch up.
            self.service.read_barrier().await?;
            source = self.mountable(digest, from)?;
        }
        let Some(record) = source else {
            return Ok(false);
        };
        // The chunks are already durable: they belong to a committed blob.
        let command = OciCommand::MountBlob {
            repo: name.repo.clone(),
            image: name.image.clone(),
            from_repo: from.repo.clone(),
            from_image: from.image.clone(),
            blob: record.descriptor,
            at_ms: now_ms(),
        };
        match self.service.propose_format(&command, None).await? {
            OciOutcome::BlobLinked { seq } => {
                self.wait_sync(name, Some(seq)).await?;
                Ok(true)
            }
            OciOutcome::BlobUnchanged => {
                self.wait_sync(name, None).await?;
                Ok(true)
            }
            OciOutcome::BlobUnknown => Ok(false),
            refused => Err(refusal(refused, name)),
        }
    }

    /// The blob `from` could lend, if it has it.
    fn mountable(&self, digest: &Sha256, from: &OciName) -> OciResult<Option<BlobRecord>> {
        let catalog = &self.service.catalog;
        let source_is_oci = catalog
            .repo(&from.repo)?
            .is_some_and(|repo| repo.format == super::NAME);
        if !source_is_oci {
            return Ok(None);
        }
        Ok(catalog
            .oci_blob(&from.repo, &from.image, digest)?
            .map(|(_, record)| record))
    }

    pub async fn delete_blob(&self, name: &OciName, digest: &Sha256) -> OciResult<()> {
        self.repo(name).await?;
        let command = OciCommand::UnlinkBlob {
            repo: name.repo.clone(),
            image: name.image.clone(),
            digest: *digest,
            at_ms: now_ms(),
        };
        match self.service.propose_format(&command, None).await? {
            OciOutcome::BlobUnlinked { seq } => self.wait_sync(name, Some(seq)).await,
            OciOutcome::BlobUnknown => Err(OciError::BlobUnknown {
                name: name.to_string(),
                digest: digest_string(digest),
            }),
            refused => Err(refusal(refused, name)),
        }
    }

    /// Stores a manifest pushed to `reference` (a tag, or its own digest).
    pub async fn put_manifest(
        &self,
        name: &OciName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> OciResult<StoredManifest> {
        self.repo(name).await?;
        let digest = Sha256(sha2::Sha256::digest(&bytes).into());
        if let Reference::Digest(claimed) = reference {
            if *claimed != digest {
                return Err(OciError::DigestInvalid {
                    reason: format!(
                        "the manifest's digest is {}, not {}",
                        digest_string(&digest),
                        digest_string(claimed)
                    ),
                });
            }
        }
        let parsed = manifest::parse(&bytes, content_type)?;
        if self.check_references(name, &parsed).is_err() {
            // Blobs pushed through another node of the region may not have applied here yet:
            // catch up before refusing.
            self.service.read_barrier().await?;
            self.check_references(name, &parsed)?;
        }
        let tag = match reference {
            Reference::Tag(tag) => Some(tag.clone()),
            Reference::Digest(_) => None,
        };
        let subject = parsed.subject;
        self.store_manifest(name, tag, digest, parsed, bytes)
            .await?;
        Ok(StoredManifest { digest, subject })
    }

    /// Stores a parsed manifest's bytes and proposes it (with `tag`, if any). The caller
    /// checked its references (a push) or need not have (a remote repository's cache fill:
    /// layers are fetched when asked for).
    pub(super) async fn store_manifest(
        &self,
        name: &OciName,
        tag: Option<Tag>,
        digest: Sha256,
        parsed: ParsedManifest,
        bytes: Bytes,
    ) -> OciResult<()> {
        let size = bytes.len();
        let ingested = self
            .ingest(Box::pin(futures::stream::once(async move {
                Ok::<_, String>(bytes)
            })))
            .await?;
        debug_assert_eq!(ingested.descriptor.size, size as u64);
        let info = ManifestInfo {
            digest,
            media_type: parsed.media_type,
            blob: ingested.descriptor.clone(),
            blobs: parsed.blobs.iter().map(|(digest, _)| *digest).collect(),
            manifests: parsed.manifests.iter().map(|(digest, _)| *digest).collect(),
            subject: parsed.subject,
            artifact_type: parsed.artifact_type,
            annotations: parsed.annotations,
        };
        let command = OciCommand::PutManifest {
            repo: name.repo.clone(),
            image: name.image.clone(),
            tag,
            manifest: info,
            at_ms: now_ms(),
        };
        // A sync-replicated repository acknowledges the push once the mirrors hold it.
        self.commit(&command, ingested, name).await
    }

    /// Refuses a manifest whose blobs or child manifests the image lacks, or whose descriptor
    /// sizes are wrong.
    fn check_references(&self, name: &OciName, parsed: &ParsedManifest) -> OciResult<()> {
        let catalog = &self.service.catalog;
        let mut missing = Vec::new();
        for (digest, size) in &parsed.blobs {
            match catalog.oci_blob_link(&name.repo, &name.image, digest)? {
                Some(link) if link.size != *size => {
                    return Err(OciError::ManifestInvalid {
                        reason: format!(
                            "the descriptor of {} says {size} bytes; the blob has {}",
                            digest_string(digest),
                            link.size
                        ),
                    })
                }
                Some(_) => {}
                None => missing.push(digest_string(digest)),
            }
        }
        for (digest, size) in &parsed.manifests {
            match catalog.oci_manifest(&name.repo, &name.image, digest)? {
                Some(record) if record.size != *size => {
                    return Err(OciError::ManifestInvalid {
                        reason: format!(
                            "the descriptor of {} says {size} bytes; the manifest has {}",
                            digest_string(digest),
                            record.size
                        ),
                    })
                }
                Some(_) => {}
                None => missing.push(digest_string(digest)),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(OciError::ManifestBlobUnknown {
                name: name.to_string(),
                digests: missing,
            })
        }
    }

    /// The manifest `reference` names, with its digest and the blob of its bytes.
    pub async fn manifest(
        &self,
        name: &OciName,
        reference: &Reference,
    ) -> OciResult<(Sha256, ManifestRecord, BlobRecord)> {
        self.repo(name).await?;
        let catalog = &self.service.catalog;
        let unknown = || OciError::ManifestUnknown {
            name: name.to_string(),
            reference: reference.to_string(),
        };
        let digest = match reference {
            Reference::Digest(digest) => *digest,
            Reference::Tag(tag) => {
                catalog
                    .oci_tag(&name.repo, &name.image, tag)?
                    .ok_or_else(unknown)?
                    .digest
            }
        };
        let mut record = catalog.oci_manifest(&name.repo, &name.image, &digest)?;
        if record.is_none() && matches!(reference, Reference::Digest(_)) {
            // Fetched by digest without a barrier: a miss catches up and looks again.
            self.service.read_barrier().await?;
            record = catalog.oci_manifest(&name.repo, &name.image, &digest)?;
        }
        let record = record.ok_or_else(unknown)?;
        let blob = catalog.blob(&record.blob)?.ok_or_else(|| {
            OciError::Node(Error::Internal(format!(
                "manifest {name}@{} has no blob record",
                digest_string(&digest)
            )))
        })?;
        Ok((digest, record, blob))
    }

    /// Deletes a tag, or a manifest (with every tag pointing at it) by digest.
    pub async fn delete_manifest(&self, name: &OciName, reference: &Reference) -> OciResult<()> {
        self.repo(name).await?;
        let command = match reference {
            Reference::Tag(tag) => OciCommand::DeleteTag {
                repo: name.repo.clone(),
                image: name.image.clone(),
                tag: tag.clone(),
                at_ms: now_ms(),
            },
            Reference::Digest(digest) => OciCommand::DeleteManifest {
                repo: name.repo.clone(),
                image: name.image.clone(),
                digest: *digest,
                at_ms: now_ms(),
            },
        };
        match self.service.propose_format(&command, None).await? {
            OciOutcome::ManifestDeleted { seq } | OciOutcome::TagDeleted { seq } => {
                self.wait_sync(name, Some(seq)).await
            }
            OciOutcome::ManifestUnknown | OciOutcome::TagUnknown => {
                Err(OciError::ManifestUnknown {
                    name: name.to_string(),
                    reference: reference.to_string(),
                })
            }
            refused => Err(refusal(refused, name)),
        }
    }

    /// A page of the image's tags; `NAME_UNKNOWN` when the image has no content.
    pub async fn tags(
        &self,
        name: &OciName,
        last: Option<&str>,
        limit: usize,
    ) -> OciResult<(Vec<Tag>, bool)> {
        self.repo(name).await?;
        let catalog = &self.service.catalog;
        if catalog.oci_image(&name.repo, &name.image)?.is_none() {
            return Err(OciError::NameUnknown {
                name: name.to_string(),
                reason: format!("repository {} holds no image {}", name.repo, name.image),
            });
        }
        Ok(catalog.oci_tags(&name.repo, &name.image, last, limit)?)
    }

    /// Largest page a listing returns.
    pub fn max_page(&self) -> usize {
        self.service.config.limits.max_list_page
    }

    pub fn max_manifest_bytes(&self) -> u64 {
        self.service.config.oci.max_manifest_bytes
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.service.config.limits.max_upload_bytes
    }
}

/// The error for an outcome the caller did not expect.
fn refusal(outcome: OciOutcome, name: &OciName) -> OciError {
    match outcome {
        OciOutcome::RepoNotFound => OciError::NameUnknown {
            name: name.to_string(),
            reason: format!("repository {} does not exist", name.repo),
        },
        OciOutcome::WrongFormat { format } => OciError::NameUnknown {
            name: name.to_string(),
            reason: format!(
                "repository {} has format {}; /v2/ serves oci repositories",
                name.repo,
                format.as_str()
            ),
        },
        OciOutcome::Immutable => OciError::Denied {
            reason: format!(
                "repository {} is immutable: its tags, manifests and blobs cannot be deleted",
                name.repo
            ),
        },
        OciOutcome::TagImmutable { current } => OciError::Denied {
            reason: format!(
                "repository {} is immutable and the tag already points at {}; push that same \
                 manifest or use a new tag",
                name.repo,
                digest_string(&current)
            ),
        },
        OciOutcome::ManifestBlobUnknown { digests } => OciError::ManifestBlobUnknown {
            name: name.to_string(),
            digests: digests.iter().map(digest_string).collect(),
        },
        other => OciError::Node(Error::Internal(format!("unexpected outcome {other:?}"))),
    }
}
