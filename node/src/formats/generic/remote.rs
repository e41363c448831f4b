//! Generic remote repositories: a path the cache lacks is fetched from `UPSTREAM/PATH` (one
//! download however many clients ask, streamed to them while it is stored), verified against
//! the upstream's `X-Checksum-Sha256` when it sends one, and stored as an ordinary file of the
//! repository. A cached path of a mutable remote repository is revalidated with `HEAD` once its
//! TTL passed; an immutable one never is. An upstream that cannot answer never costs a client
//! a file the cache holds: it is served, marked stale.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::files::Files;
use crate::error::{Error, Result};
use crate::metadata::model::{Artifact, Repository};
use crate::names::ArtifactPath;
use crate::remote::fill::{FillFailure, FillFailureKind, FillJob, FillWriter};
use crate::remote::{self, CacheResult, FailureKind, Upstream};

/// What to do with a request to a remote repository.
pub enum Decision {
    /// Serve the cached file, with this cache result in `X-Arca-Cache`.
    Local(CacheResult),
    /// The answer (a fill's stream, or its failure).
    Answer(Response),
}

/// Decides how a read of `repo/path` is served: `None` when the repository is not remote.
pub async fn decide(
    files: &Files,
    repo: &Repository,
    path: &ArtifactPath,
    method: &Method,
    cached: Option<&Artifact>,
) -> Result<Option<Decision>> {
    let service = &files.service;
    let Some(upstream) = service.remotes.upstream(repo)? else {
        return Ok(None);
    };
    let key = path.as_str();
    let remotes = &service.remotes;
    let decision = match cached {
        Some(_) if repo.immutable || remotes.fresh(&upstream, key) => {
            Decision::Local(CacheResult::Hit)
        }
        Some(artifact) => match revalidate(&upstream, path, artifact).await {
            Ok(true) => {
                remotes.validated(&upstream, key);
                Decision::Local(CacheResult::Revalidated)
            }
            Ok(false) => Decision::Answer(fill(files, repo, &upstream, path, method).await?),
            Err(e) => {
                tracing::info!(repo = %repo.name, %path, error = %e, "serving a cached file the upstream could not confirm");
                Decision::Local(CacheResult::Stale)
            }
        },
        None if remotes.known_missing(&upstream, key) => {
            remotes.count(&repo.name, CacheResult::Negative);
            return Err(Error::RemoteNotFound {
                reason: format!("the upstream had no {path} moments ago"),
            });
        }
        None => Decision::Answer(fill(files, repo, &upstream, path, method).await?),
    };
    if let Decision::Local(result) = &decision {
        remotes.count(&repo.name, *result);
    }
    Ok(Some(decision))
}

/// Asks the upstream whether the cached copy is current: `Ok(false)` when it changed.
async fn revalidate(
    upstream: &Upstream,
    path: &ArtifactPath,
    artifact: &Artifact,
) -> std::result::Result<bool, remote::UpstreamError> {
    let fetched = upstream
        .send(
            Method::HEAD,
            &remote::encode_path(path.as_str()),
            HeaderMap::new(),
            None,
        )
        .await?;
    let head = fetched.response.headers();
    if let Some(sha256) = remote::declared_sha256(head) {
        return Ok(sha256 == artifact.sha256);
    }
    if let Some(length) = fetched.response.content_length() {
        if length != artifact.size {
            return Ok(false);
        }
    }
    let modified = head
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map(|t| t.timestamp_millis());
    Ok(modified.is_none_or(|modified| modified <= artifact.updated_at_ms))
}

/// Joins (or starts) the fill of `path` and answers with its stream.
async fn fill(
    files: &Files,
    repo: &Repository,
    upstream: &Arc<Upstream>,
    path: &ArtifactPath,
    method: &Method,
) -> Result<Response> {
    let service = files.service.clone();
    let remotes = service.remotes.clone();
    let key = format!("generic\u{0}{}\u{0}{path}", repo.name);
    let job: FillJob = {
        let upstream = upstream.clone();
        let path = path.clone();
        let service = service.clone();
        let repo = repo.name.clone();
        Box::new(move |mut writer: FillWriter| {
            Box::pin(async move {
                let max = service.config.limits.max_upload_bytes;
                let head = writer
                    .download(
                        &upstream,
                        &remote::encode_path(path.as_str()),
                        None,
                        HeaderMap::new(),
                        max,
                    )
                    .await?;
                let ingested = service.ingest_spool(writer.spool()).await?;
                if let Some(declared) = remote::declared_sha256(&head) {
                    if declared != ingested.descriptor.sha256 {
                        return Err(FillFailure::new(
                            FillFailureKind::Mismatch,
                            format!(
                                "the upstream declared sha256 {} and sent {}",
                                declared.to_hex(),
                                ingested.descriptor.sha256.to_hex()
                            ),
                        ));
                    }
                }
                if service.stores_fills() {
                    Files {
                        service: service.clone(),
                    }
                    .commit_file(&repo, &path, ingested)
                    .await
                    .map_err(FillFailure::internal)?;
                }
                service.remotes.validated(&upstream, path.as_str());
                Ok(())
            })
        })
    };
    let reader = remotes
        .fills
        .join(&key, false, job)
        .map_err(|f| remote::fill_error(&f))?;
    let (total, head) = match reader.fill().head().await {
        Ok(head) => head,
        Err(failure) => {
            if failure.kind == FillFailureKind::Upstream(FailureKind::NotFound) {
                remotes.missing(upstream, path.as_str());
                remotes.count(&repo.name, CacheResult::Negative);
            }
            return Err(remote::fill_error(&failure));
        }
    };
    remotes.count(&repo.name, CacheResult::Miss);
    let mut headers = HeaderMap::new();
    CacheResult::Miss.mark(&mut headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(sha) = remote::declared_sha256(&head) {
        if let Ok(value) = HeaderValue::from_str(&sha.to_hex()) {
            headers.insert(remote::CHECKSUM_SHA256, value);
        }
    }
    if let Some(total) = total {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    }
    if method == Method::HEAD {
        return Ok((StatusCode::OK, headers).into_response());
    }
    Ok((
        StatusCode::OK,
        headers,
        Body::from_stream(reader.into_stream()),
    )
        .into_response())
}

/// Deletes the cached files under `prefix` and forgets their freshness.
pub async fn purge(
    service: &Arc<crate::service::ArtifactService>,
    repo: &Repository,
    prefix: &str,
) -> Result<u64> {
    let mut removed = 0u64;
    let mut after: Option<String> = None;
    while (removed as usize) < remote::MAX_PURGE {
        let limit = (remote::MAX_PURGE - removed as usize).min(1000);
        let page = service
            .catalog
            .artifacts(&repo.name, prefix, after.as_deref(), limit)?;
        for artifact in &page.items {
            let command = super::model::GenericCommand::DeleteArtifact {
                repo: repo.name.clone(),
                path: artifact.path.clone(),
                at_ms: crate::metadata::model::now_ms(),
            };
            if let super::model::GenericOutcome::ArtifactDeleted { .. } =
                service.propose_format(&command, None).await?
            {
                removed += 1;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    service.remotes.forget(&repo.name, prefix);
    Ok(removed)
}
