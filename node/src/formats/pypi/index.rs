//! The PyPI format's operations: the legacy upload twine speaks (multipart, streamed into
//! the chunk store and hashed on the way), yanks, and the reads the index pages are built
//! from.

use std::sync::Arc;

use blake2::Digest as _;
use bytes::Bytes;
use futures::StreamExt;

use super::dist::{self, BlobReader, DistError};
use super::keys::MAX_FILES_PER_PROJECT;
use super::model::{DistFile, MetadataFile, ProjectRecord, PypiCommand, PypiOutcome};
use super::names::{self, normalize, same_version, DistFilename};
use super::NAME;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::metadata::model::{now_ms, Repository};
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest::{self, IngestedBlob};

impl FormatCommand for PypiCommand {
    type Outcome = PypiOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &PypiOutcome) -> bool {
        outcome.changed()
    }
}

/// Longest form field other than the file (a long description fits).
const MAX_FIELD: u64 = 1 << 20;
/// Most bytes of form fields other than the file, together.
const MAX_FORM: usize = 4 << 20;
/// Most form fields (repeated classifiers and requirements included).
const MAX_FIELDS: usize = 2_000;

/// What an upload stored.
#[derive(Debug)]
pub struct Uploaded {
    pub filename: String,
    /// False when the file name already held these exact bytes.
    pub created: bool,
}

/// The form fields of an upload that matter here.
#[derive(Default)]
struct Form {
    action: Option<String>,
    name: Option<String>,
    version: Option<String>,
    filetype: Option<String>,
    sha256: Option<String>,
    blake2_256: Option<String>,
    bytes: usize,
    fields: usize,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

/// PyPI repositories on top of the shared write kit.
pub struct Index {
    pub service: Arc<ArtifactService>,
}

impl Index {
    /// The repository, which must hold PyPI projects.
    pub fn pypi_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// Stores one distribution from twine's multipart upload. Nothing becomes visible unless
    /// the whole file arrived, its digests match the form's, its name and version match the
    /// form's and its own metadata's, and the command applied.
    pub async fn upload(
        &self,
        repo_name: &RepoName,
        content_type: Option<&str>,
        body: axum::body::Body,
    ) -> Result<Uploaded> {
        let service = &self.service;
        service
            .repo_for_write(repo_name)
            .await?
            .require_format(NAME)?;
        let boundary = content_type
            .and_then(|value| multer::parse_boundary(value).ok())
            .ok_or_else(|| invalid("an upload is multipart/form-data (the legacy upload API)"))?;
        let limits = service.config.limits.ingest_limits();
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .whole_stream(limits.max_bytes.saturating_add(MAX_FORM as u64 + (1 << 20)))
                .per_field(MAX_FIELD)
                .for_field("content", limits.max_bytes),
        );
        let mut multipart =
            multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
        let mut form = Form::default();
        let mut stored: Option<(
            DistFilename,
            String,
            IngestedBlob,
            blake2::Blake2b<blake2::digest::consts::U32>,
        )> = None;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return Err(multipart_error(e, limits.max_bytes)),
            };
            form.fields += 1;
            if form.fields > MAX_FIELDS {
                return Err(invalid(format!(
                    "an upload has at most {MAX_FIELDS} fields"
                )));
            }
            let field_name = field.name().unwrap_or_default().to_string();
            if field_name == "content" {
                if stored.is_some() {
                    return Err(invalid("an upload carries one file (one 'content' field)"));
                }
                let filename = field
                    .file_name()
                    .ok_or_else(|| invalid("the 'content' field has no file name"))?
                    .to_string();
                let parsed = check_file(&form, &filename)?;
                let mut hasher = blake2::Blake2b::<blake2::digest::consts::U32>::new();
                let hashed = field.map(|frame| {
                    if let Ok(data) = &frame {
                        hasher.update(data);
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
                stored = Some((parsed, filename, ingested, hasher));
                continue;
            }
            let text = field
                .text()
                .await
                .map_err(|e| multipart_error(e, limits.max_bytes))?;
            form.bytes += text.len();
            if form.bytes > MAX_FORM {
                return Err(Error::TooLarge {
                    limit: MAX_FORM as u64,
                });
            }
            let slot = match field_name.as_str() {
                ":action" => &mut form.action,
                "name" => &mut form.name,
                "version" => &mut form.version,
                "filetype" => &mut form.filetype,
                "sha256_digest" => &mut form.sha256,
                "blake2_256_digest" => &mut form.blake2_256,
                _ => continue,
            };
            *slot = Some(text.trim().to_string());
        }
        let Some((parsed, filename, ingested, hasher)) = stored else {
            return Err(invalid("the upload has no file (no 'content' field)"));
        };
        // Dropping `ingested` on any refusal below abandons its chunks.
        check_digests(&form, &ingested, hasher)?;
        self.commit(repo_name, &form, parsed, filename, ingested)
            .await
    }

    async fn commit(
        &self,
        repo: &RepoName,
        form: &Form,
        parsed: DistFilename,
        filename: String,
        ingested: IngestedBlob,
    ) -> Result<Uploaded> {
        let service = &self.service;
        let project = form.name.clone().unwrap_or_default();
        let version = form.version.clone().unwrap_or_default();
        let reader = BlobReader::new(service.chunks.clone(), ingested.descriptor.chunks.clone());
        let kind = parsed.kind;
        let metadata = tokio::task::spawn_blocking(move || dist::core_metadata(kind, reader))
            .await
            .map_err(|e| Error::internal("read the uploaded file", e))?
            .map_err(|e| match e {
                DistError::TooLarge => invalid(format!(
                    "the core metadata file is larger than {} bytes",
                    dist::MAX_METADATA
                )),
                DistError::Storage(reason) => Error::internal("read the uploaded file", reason),
                other => invalid(format!("{filename}: {other}")),
            })?;
        let core = dist::parse_core_metadata(&metadata)
            .map_err(|reason| invalid(format!("{filename}: {reason}")))?;
        if normalize(&core.name) != normalize(&project) || !same_version(&core.version, &version) {
            return Err(invalid(format!(
                "{filename} holds the metadata of {} {}, not of {project} {version}",
                core.name, core.version
            )));
        }
        let metadata_blob = ingest::ingest(
            service.chunks.clone(),
            service.config.chunking,
            futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(metadata))]),
            service.config.limits.ingest_limits(),
            service.collector.clone(),
        )
        .await?;
        let at_ms = now_ms();
        let file = DistFile {
            filename: filename.clone(),
            version: version.clone(),
            filetype: parsed.kind.filetype().to_string(),
            requires_python: core.requires_python,
            blob: ingested.descriptor.blake3,
            sha256: ingested.descriptor.sha256,
            size: ingested.descriptor.size,
            metadata: MetadataFile {
                blob: metadata_blob.descriptor.blake3,
                sha256: metadata_blob.descriptor.sha256,
                size: metadata_blob.descriptor.size,
            },
            uploaded_at_ms: at_ms,
            yanked: None,
        };
        let command = PypiCommand::Upload {
            repo: repo.clone(),
            project: project.clone(),
            file: Box::new(file),
            blob: ingested.descriptor.clone(),
            metadata: metadata_blob.descriptor.clone(),
            at_ms,
        };
        let (created, seq) = match service
            .propose_format(&command, [ingested, metadata_blob])
            .await?
        {
            PypiOutcome::Stored { seq } => (true, seq),
            // A retried upload: wait as the first attempt would have.
            PypiOutcome::Unchanged => (false, service.catalog.changelog_head()?.last_seq),
            PypiOutcome::FileExists { sha256 } => {
                return Err(Error::Immutable {
                    repo: repo.to_string(),
                    path: filename.clone(),
                    reason: format!(
                        "File already exists: {filename} was uploaded before with different content (sha256 {}); released files never change, upload a new version",
                        sha256.to_hex()
                    ),
                })
            }
            refused => return Err(refusal(refused, repo, &project, &version)),
        };
        service.wait_sync_replication(repo, seq).await?;
        Ok(Uploaded { filename, created })
    }

    /// Yanks (`reason` given) or un-yanks every file of a version.
    pub async fn yank(
        &self,
        repo: &RepoName,
        project: &str,
        version: &str,
        reason: Option<String>,
    ) -> Result<u64> {
        let service = &self.service;
        service.repo_for_write(repo).await?.require_format(NAME)?;
        let command = PypiCommand::Yank {
            repo: repo.clone(),
            project: project.to_string(),
            version: version.to_string(),
            reason,
            at_ms: now_ms(),
        };
        match service.propose_format(&command, None).await? {
            PypiOutcome::Yanked { files, seq } => {
                service.wait_sync_replication(repo, seq).await?;
                Ok(files)
            }
            PypiOutcome::YankUnchanged => Ok(0),
            refused => Err(refusal(refused, repo, project, version)),
        }
    }

    /// A project and its files, by normal name (of a repository [`Index::pypi_repo`] checked).
    pub fn project(
        &self,
        repo: &RepoName,
        normalized: &str,
    ) -> Result<Option<(ProjectRecord, Vec<DistFile>)>> {
        let catalog = &self.service.catalog;
        let Some(record) = catalog.pypi_project(repo, normalized)? else {
            return Ok(None);
        };
        Ok(Some((record, catalog.pypi_files(repo, normalized)?)))
    }
}

/// Checks the file name against the form before any byte of it is stored.
fn check_file(form: &Form, filename: &str) -> Result<DistFilename> {
    match form.action.as_deref() {
        Some("file_upload") => {}
        Some(other) => return Err(invalid(format!("unsupported :action {other:?}"))),
        None => return Err(invalid("the upload names no :action (file_upload)")),
    }
    let (Some(project), Some(version)) = (&form.name, &form.version) else {
        return Err(invalid(
            "the upload names no 'name' and 'version' before its file",
        ));
    };
    names::check_project_name(project).map_err(invalid)?;
    names::parse_version(version).map_err(invalid)?;
    let parsed = names::parse_filename(filename).map_err(|reason| Error::InvalidPath { reason })?;
    if normalize(&parsed.name) != normalize(project) || !same_version(&parsed.version, version) {
        return Err(invalid(format!(
            "the file {filename} is not of {project} {version}"
        )));
    }
    if let Some(filetype) = &form.filetype {
        if filetype != parsed.kind.filetype() {
            return Err(invalid(format!(
                "the file {filename} is a {}, not a {filetype}",
                parsed.kind.filetype()
            )));
        }
    }
    Ok(parsed)
}

/// Checks the digests the form declares against the bytes that arrived.
fn check_digests(
    form: &Form,
    ingested: &IngestedBlob,
    blake2: blake2::Blake2b<blake2::digest::consts::U32>,
) -> Result<()> {
    if let Some(declared) = &form.sha256 {
        let declared = Sha256::from_hex(declared).ok_or_else(|| Error::InvalidDigest {
            header: "sha256_digest",
            reason: "expected 64 hex characters".into(),
        })?;
        if declared != ingested.descriptor.sha256 {
            return Err(Error::DigestMismatch {
                expected: declared.to_hex(),
                actual: ingested.descriptor.sha256.to_hex(),
            });
        }
    }
    if let Some(declared) = &form.blake2_256 {
        let actual = hex::encode(blake2.finalize());
        if !declared.eq_ignore_ascii_case(&actual) {
            return Err(Error::DigestMismatch {
                expected: declared.clone(),
                actual,
            });
        }
    }
    Ok(())
}

fn multipart_error(error: multer::Error, max_file: u64) -> Error {
    match error {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() == Some("content") =>
        {
            Error::TooLarge { limit: max_file }
        }
        multer::Error::FieldSizeExceeded { .. } => Error::TooLarge { limit: MAX_FIELD },
        multer::Error::StreamSizeExceeded { limit } => Error::TooLarge { limit },
        other => invalid(format!("malformed multipart body: {other}")),
    }
}

fn refusal(outcome: PypiOutcome, repo: &RepoName, project: &str, version: &str) -> Error {
    match outcome {
        PypiOutcome::RepoNotFound => Error::RepoNotFound {
            repo: repo.to_string(),
        },
        PypiOutcome::WrongFormat { format } => Error::WrongFormat {
            repo: repo.to_string(),
            format: format.to_string(),
            expected: NAME.to_string(),
        },
        PypiOutcome::VersionNotFound => Error::ArtifactNotFound {
            repo: repo.to_string(),
            path: format!("{project} {version}"),
        },
        PypiOutcome::TooManyFiles { limit } => invalid(format!(
            "{project} already has {limit} files, the most a project may hold ({MAX_FILES_PER_PROJECT})"
        )),
        other => Error::Internal(format!("unexpected outcome {other:?}")),
    }
}
