//! OCI remote (pull-through) repositories: `/v2/REPO/IMAGE/…` of a remote repository serves
//! `IMAGE` of the upstream registry.
//!
//! - Blobs and manifests by digest are immutable: once cached they are served with no
//!   upstream call at all; a miss is fetched, verified against the digest, and stored.
//!   Blobs stream to every client while they download (single-flight, resumable).
//! - A tag is revalidated with `HEAD` once its TTL passed (Docker Hub does not count `HEAD`
//!   against its pull limit); an upstream that cannot answer leaves the cached tag served,
//!   marked stale. Manifests are stored byte for byte, never re-serialized; the layers they
//!   name are fetched when a client asks for them.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::Digest as _;

use super::error::{OciError, OciResult};
use super::manifest;
use super::model::{OciCommand, OciOutcome};
use super::names::{digest_string, parse_digest, OciName, Reference};
use super::registry::Registry;
use crate::digest::Sha256;
use crate::error::Error;
use crate::metadata::model::{now_ms, Repository};
use crate::remote::fill::{FillFailure, FillFailureKind, FillJob, FillWriter};
use crate::remote::{self, CacheResult, FailureKind, Upstream, UpstreamError};
use crate::service::ArtifactService;

/// The registry's digest header (as the API module names it, without importing it back).
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// What a client's `Accept` may be answered with, asked of the upstream.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The repository and its upstream, when the repository is remote.
async fn upstream_of(
    registry: &Registry,
    name: &OciName,
) -> OciResult<Option<(Repository, Arc<Upstream>)>> {
    let repo = registry.repo(name).await?;
    Ok(registry
        .service
        .remotes
        .upstream(&repo)?
        .map(|upstream| (repo, upstream)))
}

/// The image's name at the upstream: Docker Hub's official images live under `library/`.
fn upstream_image(upstream: &Upstream, image: &str) -> String {
    let host = reqwest::Url::parse(&upstream.spec.url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_default();
    let hub = matches!(
        host.as_str(),
        "registry-1.docker.io" | "docker.io" | "index.docker.io" | "registry.hub.docker.com"
    );
    if hub && !image.contains('/') {
        format!("library/{image}")
    } else {
        image.to_string()
    }
}

struct Target {
    upstream: Arc<Upstream>,
    /// `IMAGE` at the upstream.
    image: String,
    scope: String,
}

impl Target {
    fn new(upstream: Arc<Upstream>, name: &OciName) -> Self {
        let image = upstream_image(&upstream, name.image.as_str());
        let scope = format!("repository:{image}:pull");
        Self {
            upstream,
            image,
            scope,
        }
    }

    async fn send(
        &self,
        method: Method,
        kind: &str,
        reference: &str,
    ) -> Result<remote::upstream::Fetched, UpstreamError> {
        let mut headers = HeaderMap::new();
        if kind == "manifests" {
            headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        }
        let path = format!("/v2/{}/{kind}/{reference}", self.image);
        self.upstream
            .send(method, &path, headers, Some(&self.scope))
            .await
    }
}

fn unavailable(e: impl std::fmt::Display) -> OciError {
    OciError::Node(Error::UpstreamFailed {
        reason: e.to_string(),
    })
}

/// A blob the image lacks locally: fetched from the upstream when the repository is remote
/// (`BLOB_UNKNOWN` otherwise, or when the upstream lacks it too).
pub async fn blob(
    registry: &Registry,
    name: &OciName,
    digest: &Sha256,
    is_head: bool,
    unknown: OciError,
) -> OciResult<Response> {
    let Some((repo, upstream)) = upstream_of(registry, name).await? else {
        return Err(unknown);
    };
    let remotes = registry.service.remotes.clone();
    let key = format!("b:{}@{}", name.image, digest.to_hex());
    if remotes.known_missing(&upstream, &key) {
        remotes.count(&repo.name, CacheResult::Negative);
        return Err(unknown);
    }
    let target = Target::new(upstream.clone(), name);
    let digest_text = digest_string(digest);
    let mut headers = HeaderMap::new();
    set(&mut headers, CONTENT_DIGEST, &digest_text);
    set(&mut headers, header::ETAG, &format!("\"{digest_text}\""));
    set(
        &mut headers,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    CacheResult::Miss.mark(&mut headers);
    if is_head {
        // An existence check needs no download.
        let fetched = match target.send(Method::HEAD, "blobs", &digest_text).await {
            Ok(fetched) => fetched,
            Err(e) if e.kind == FailureKind::NotFound => {
                remotes.missing(&upstream, &key);
                return Err(unknown);
            }
            Err(e) => return Err(unavailable(e)),
        };
        if let Some(length) = fetched.response.content_length() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        return Ok((StatusCode::OK, headers).into_response());
    }
    let fill_key = format!("oci\u{0}{}\u{0}{}", repo.name, key);
    let job = blob_job(registry.service.clone(), target, name.clone(), *digest);
    let reader = remotes
        .fills
        .join(&fill_key, true, job)
        .map_err(|f| OciError::Node(remote::fill_error(&f)))?;
    let total = match reader.fill().head().await {
        Ok((total, _)) => total,
        Err(failure) if failure.kind == FillFailureKind::Upstream(FailureKind::NotFound) => {
            remotes.missing(&upstream, &key);
            remotes.count(&repo.name, CacheResult::Negative);
            return Err(unknown);
        }
        Err(failure) => return Err(OciError::Node(remote::fill_error(&failure))),
    };
    remotes.count(&repo.name, CacheResult::Miss);
    if let Some(total) = total {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    }
    Ok((
        StatusCode::OK,
        headers,
        Body::from_stream(reader.into_stream()),
    )
        .into_response())
}

/// Downloads a blob, verifies it against its digest and links it into the image.
fn blob_job(
    service: Arc<ArtifactService>,
    target: Target,
    name: OciName,
    digest: Sha256,
) -> FillJob {
    Box::new(move |mut writer: FillWriter| {
        Box::pin(async move {
            let max = service.config.limits.max_upload_bytes;
            let path = format!("/v2/{}/blobs/{}", target.image, digest_string(&digest));
            writer
                .download(
                    &target.upstream,
                    &path,
                    Some(&target.scope),
                    HeaderMap::new(),
                    max,
                )
                .await?;
            let ingested = service.ingest_spool(writer.spool()).await?;
            if ingested.descriptor.sha256 != digest {
                return Err(FillFailure::new(
                    FillFailureKind::Mismatch,
                    format!(
                        "the upstream sent {} for blob {}",
                        digest_string(&ingested.descriptor.sha256),
                        digest_string(&digest)
                    ),
                ));
            }
            if !service.stores_fills() {
                return Ok(());
            }
            let command = OciCommand::LinkBlob {
                repo: name.repo.clone(),
                image: name.image.clone(),
                blob: ingested.descriptor.clone(),
                at_ms: now_ms(),
            };
            match service.propose_format(&command, Some(ingested)).await {
                Ok(OciOutcome::BlobLinked { .. } | OciOutcome::BlobUnchanged) => Ok(()),
                Ok(other) => Err(FillFailure::internal(format!("link refused: {other:?}"))),
                Err(e) => Err(FillFailure::internal(e)),
            }
        })
    })
}

/// A manifest fetched from the upstream now.
pub struct FetchedManifest {
    pub digest: Sha256,
    pub media_type: String,
    pub bytes: Bytes,
}

/// How a manifest read of a remote repository is served.
pub enum ManifestSource {
    /// From the local store (what the cache holds is current, or the upstream cannot say).
    Local(CacheResult),
    /// Fetched now (and stored, unless this region is a mirror).
    Fetched(FetchedManifest),
}

/// Brings a remote repository's manifest `reference` up to date: `None` for a local
/// repository.
pub async fn manifest(
    registry: &Registry,
    name: &OciName,
    reference: &Reference,
) -> OciResult<Option<ManifestSource>> {
    let Some((repo, upstream)) = upstream_of(registry, name).await? else {
        return Ok(None);
    };
    let remotes = registry.service.remotes.clone();
    let catalog = &registry.service.catalog;
    let target = Target::new(upstream.clone(), name);
    let unknown = || OciError::ManifestUnknown {
        name: name.to_string(),
        reference: reference.to_string(),
    };
    let source = match reference {
        Reference::Digest(digest) => {
            if catalog
                .oci_manifest(&name.repo, &name.image, digest)?
                .is_some()
            {
                ManifestSource::Local(CacheResult::Hit)
            } else {
                let key = format!("m:{}@{}", name.image, digest.to_hex());
                if remotes.known_missing(&upstream, &key) {
                    remotes.count(&repo.name, CacheResult::Negative);
                    return Err(unknown());
                }
                match fetch(registry, &target, name, &digest_string(digest), None).await {
                    Ok(fetched) if fetched.digest == *digest => ManifestSource::Fetched(fetched),
                    Ok(fetched) => {
                        return Err(unavailable(format!(
                            "the upstream answered {} with a manifest of digest {}",
                            digest_string(digest),
                            digest_string(&fetched.digest)
                        )))
                    }
                    Err(Fetch::Missing) => {
                        remotes.missing(&upstream, &key);
                        remotes.count(&repo.name, CacheResult::Negative);
                        return Err(unknown());
                    }
                    Err(Fetch::Failed(e)) => return Err(e),
                }
            }
        }
        Reference::Tag(tag) => {
            let key = format!("t:{}:{}", name.image, tag);
            let local = catalog.oci_tag(&name.repo, &name.image, tag)?;
            match local {
                Some(_) if repo.immutable || remotes.fresh(&upstream, &key) => {
                    ManifestSource::Local(CacheResult::Hit)
                }
                Some(local) => {
                    let head = target.send(Method::HEAD, "manifests", tag.as_str()).await;
                    let upstream_digest = head.as_ref().ok().and_then(|fetched| {
                        fetched
                            .header(CONTENT_DIGEST)
                            .and_then(|d| parse_digest(d).ok())
                    });
                    match head {
                        Ok(_) if upstream_digest == Some(local.digest) => {
                            remotes.validated(&upstream, &key);
                            ManifestSource::Local(CacheResult::Revalidated)
                        }
                        Ok(_) => {
                            match fetch(registry, &target, name, tag.as_str(), Some(tag)).await {
                                Ok(fetched) => {
                                    remotes.validated(&upstream, &key);
                                    ManifestSource::Fetched(fetched)
                                }
                                Err(_) => ManifestSource::Local(CacheResult::Stale),
                            }
                        }
                        Err(e) => {
                            tracing::info!(repo = %repo.name, %tag, error = %e, "serving a cached tag the upstream could not confirm");
                            ManifestSource::Local(CacheResult::Stale)
                        }
                    }
                }
                None => {
                    if remotes.known_missing(&upstream, &key) {
                        remotes.count(&repo.name, CacheResult::Negative);
                        return Err(unknown());
                    }
                    match fetch(registry, &target, name, tag.as_str(), Some(tag)).await {
                        Ok(fetched) => {
                            remotes.validated(&upstream, &key);
                            ManifestSource::Fetched(fetched)
                        }
                        Err(Fetch::Missing) => {
                            remotes.missing(&upstream, &key);
                            remotes.count(&repo.name, CacheResult::Negative);
                            return Err(unknown());
                        }
                        Err(Fetch::Failed(e)) => return Err(e),
                    }
                }
            }
        }
    };
    let result = match &source {
        ManifestSource::Local(result) => *result,
        ManifestSource::Fetched(_) => CacheResult::Miss,
    };
    remotes.count(&repo.name, result);
    Ok(Some(source))
}

enum Fetch {
    Missing,
    Failed(OciError),
}

/// GETs a manifest from the upstream, checks it against the digest the upstream declares,
/// and stores it (under `tag`, if any) byte for byte.
async fn fetch(
    registry: &Registry,
    target: &Target,
    name: &OciName,
    reference: &str,
    tag: Option<&super::names::Tag>,
) -> Result<FetchedManifest, Fetch> {
    let fetched = match target.send(Method::GET, "manifests", reference).await {
        Ok(fetched) => fetched,
        Err(e) if e.kind == FailureKind::NotFound => return Err(Fetch::Missing),
        Err(e) => return Err(Fetch::Failed(unavailable(e))),
    };
    let content_type = fetched.header(header::CONTENT_TYPE).map(str::to_string);
    let declared = fetched
        .header(CONTENT_DIGEST)
        .and_then(|d| parse_digest(d).ok());
    let limit = registry.max_manifest_bytes();
    let mut body = fetched.response.bytes_stream();
    let mut bytes = BytesMut::new();
    while let Some(piece) = tokio::time::timeout(target.upstream.spec.timeout(), body.next())
        .await
        .map_err(|_| Fetch::Failed(unavailable("the upstream's manifest body stalled")))?
    {
        let piece = piece.map_err(|e| Fetch::Failed(unavailable(e)))?;
        if (bytes.len() + piece.len()) as u64 > limit {
            return Err(Fetch::Failed(unavailable(format!(
                "the upstream's manifest is larger than {limit} bytes"
            ))));
        }
        bytes.extend_from_slice(&piece);
    }
    let bytes = bytes.freeze();
    if bytes.is_empty() {
        return Err(Fetch::Failed(unavailable(
            "the upstream sent an empty manifest",
        )));
    }
    let digest = Sha256(sha2::Sha256::digest(&bytes).into());
    if declared.is_some_and(|declared| declared != digest) {
        return Err(Fetch::Failed(unavailable(
            "the upstream's manifest does not match its Docker-Content-Digest",
        )));
    }
    let parsed = manifest::parse(&bytes, content_type.as_deref())
        .map_err(|e| Fetch::Failed(unavailable(format!("the upstream's manifest: {e}"))))?;
    let media_type = parsed.media_type.clone();
    if registry.service.stores_fills() {
        registry
            .store_manifest(name, tag.cloned(), digest, parsed, bytes.clone())
            .await
            .map_err(Fetch::Failed)?;
    }
    Ok(FetchedManifest {
        digest,
        media_type,
        bytes,
    })
}

/// Deletes the cached manifests that tags of images under `prefix` point at (with their
/// tags), so the next pull asks the upstream, and forgets the repository's freshness.
/// Layers stay until no manifest references them.
pub async fn purge(
    service: &Arc<ArtifactService>,
    repo: &Repository,
    prefix: &str,
) -> crate::error::Result<u64> {
    let catalog = &service.catalog;
    let own = format!("{}/", repo.name);
    let start = format!("{own}{prefix}");
    let mut removed = 0u64;
    // Images are listed in name order: start just before the repository's first one.
    let mut last = Some(own.clone());
    'images: loop {
        let (images, more) = catalog.oci_images(last.as_deref(), 1000)?;
        for full in &images {
            if !full.starts_with(&own) {
                break 'images;
            }
            if !full.starts_with(&start) {
                continue;
            }
            let Ok(name) = OciName::parse(full) else {
                continue;
            };
            let (tags, _) = catalog.oci_tags(&name.repo, &name.image, None, remote::MAX_PURGE)?;
            for tag in tags {
                let Some(record) = catalog.oci_tag(&name.repo, &name.image, &tag)? else {
                    continue;
                };
                let command = OciCommand::DeleteManifest {
                    repo: name.repo.clone(),
                    image: name.image.clone(),
                    digest: record.digest,
                    at_ms: now_ms(),
                };
                if let OciOutcome::ManifestDeleted { .. } =
                    service.propose_format(&command, None).await?
                {
                    removed += 1;
                }
                if removed as usize >= remote::MAX_PURGE {
                    break 'images;
                }
            }
        }
        if !more {
            break;
        }
        last = images.last().cloned();
    }
    service.remotes.forget(&repo.name, "");
    Ok(removed)
}
