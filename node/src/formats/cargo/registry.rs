//! The cargo format's operations on top of the shared write kit: publish (the `.crate` checked
//! and stored as an ordinary blob), yank and unyank, owners, and the index files rendered from
//! the state machine.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::model::{CargoCommand, CargoOutcome, CrateRecord, VersionRecord};
use super::names::{check_name, normalized};
use super::publish::{self, invalid};
use super::NAME;
use crate::auth::model::Action;
use crate::auth::{Auth, Identity};
use crate::error::{Error, Result};
use crate::metadata::model::{now_ms, Repository};
use crate::names::RepoName;
use crate::service::{ArtifactService, FormatCommand};
use crate::storage::ingest;

impl FormatCommand for CargoCommand {
    type Outcome = CargoOutcome;
    const FORMAT: crate::metadata::format::FormatName = NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &CargoOutcome) -> bool {
        outcome.changed()
    }
}

/// Most publish bodies held in memory at once (a `.crate` arrives whole in its frame).
const CONCURRENT_PUBLISHES: usize = 4;

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Changed,
    Unchanged,
}

/// Cargo registries.
pub struct Registry {
    pub service: Arc<ArtifactService>,
    pub auth: Arc<Auth>,
    publishes: Semaphore,
    /// Rendered index files by crate, with the change they were rendered at.
    index_files: parking_lot::Mutex<HashMap<(RepoName, String), (u64, Bytes)>>,
}

/// Most index files a node keeps rendered.
const CACHED_INDEX_FILES: usize = 1024;

impl Registry {
    pub fn new(service: Arc<ArtifactService>, auth: Arc<Auth>) -> Self {
        Self {
            service,
            auth,
            publishes: Semaphore::new(CONCURRENT_PUBLISHES),
            index_files: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The largest `.crate`: the node's upload limit.
    pub fn max_file(&self) -> u64 {
        self.service.config.limits.ingest_limits().max_bytes
    }

    /// The largest publish body: a `.crate` and its metadata.
    pub fn max_publish_body(&self) -> usize {
        usize::try_from(
            self.max_file()
                .saturating_add(publish::MAX_METADATA as u64 + 8),
        )
        .unwrap_or(usize::MAX)
    }

    /// The repository, which must hold crates.
    pub fn cargo_repo(&self, name: &RepoName) -> Result<Repository> {
        let repo = self.service.catalog.must_repo(name)?;
        repo.require_format(NAME)?;
        Ok(repo)
    }

    /// Whether reads need a credential (the `auth-required` of `config.json`).
    pub fn auth_required(&self, repo: &RepoName) -> bool {
        !self
            .auth
            .allows(&Identity::anonymous(), repo.as_str(), Action::Read)
    }

    /// The crate `name` exactly as published (another spelling modulo case and `-`/`_` is
    /// not found: the index serves a crate at its own name's path).
    pub fn exact_crate(&self, repo: &RepoName, name: &str) -> Result<Option<CrateRecord>> {
        Ok(self
            .service
            .catalog
            .cargo_crate(repo, name)?
            .filter(|record| record.name.eq_ignore_ascii_case(name)))
    }

    /// The `ETag` of a crate's index file: the change it is rendered at.
    pub fn index_etag(record: &CrateRecord) -> String {
        format!("\"{}-{}\"", record.seq, record.versions)
    }

    /// The index file of a crate: one JSON line per version, in publish order, rendered once
    /// per change and kept (at most [`CACHED_INDEX_FILES`] per node).
    pub fn index_file(&self, repo: &RepoName, record: &CrateRecord) -> Result<Option<Bytes>> {
        let key = (repo.clone(), record.name.clone());
        if let Some((seq, body)) = self.index_files.lock().get(&key) {
            if *seq == record.seq && record.seq != 0 {
                return Ok(Some(body.clone()));
            }
        }
        let versions = self.service.catalog.cargo_versions(repo, &record.name)?;
        if versions.is_empty() {
            return Ok(None);
        }
        let mut body = Vec::with_capacity(versions.iter().map(|v| v.line.len() + 96).sum());
        for version in &versions {
            render_line(&mut body, version);
        }
        let body = Bytes::from(body);
        let mut cached = self.index_files.lock();
        if cached.len() >= CACHED_INDEX_FILES && !cached.contains_key(&key) {
            if let Some(evicted) = cached.keys().next().cloned() {
                cached.remove(&evicted);
            }
        }
        cached.insert(key, (record.seq, body.clone()));
        Ok(Some(body))
    }

    /// May `identity` change crate `record` (publish a version, yank, change owners)? Its
    /// owners may; so may whoever administers the repository.
    fn check_owner(
        &self,
        repo: &RepoName,
        record: &CrateRecord,
        identity: &Identity,
    ) -> Result<()> {
        let owner = identity
            .account()
            .is_some_and(|account| record.owners.iter().any(|o| o == account));
        if owner || self.auth.allows(identity, repo.as_str(), Action::Admin) {
            return Ok(());
        }
        Err(Error::Forbidden {
            reason: format!(
                "{} is not an owner of crate {} (owners: {}); an owner can add you with `cargo owner --add`",
                identity.name(),
                record.name,
                record.owners.join(", ")
            ),
        })
    }

    /// `PUT /api/v1/crates/new`.
    pub async fn publish(
        &self,
        repo: &RepoName,
        identity: &Identity,
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
        let publication = publish::parse(body, self.max_file())?;
        if let Some(existing) = self.service.catalog.cargo_crate(repo, &publication.name)? {
            if existing.name != publication.name {
                return Err(name_taken(&publication.name, &existing.name));
            }
            self.check_owner(repo, &existing, identity)?;
        }
        let file = publication.file.clone();
        let (name, vers) = (publication.name.clone(), publication.vers.clone());
        let verdict =
            tokio::task::spawn_blocking(move || publish::check_crate_file(&file, &name, &vers))
                .await
                .map_err(|e| Error::internal("read the .crate", e))?;
        verdict.map_err(|reason| {
            invalid(format!(
                "{} {}: {reason}",
                publication.name, publication.vers
            ))
        })?;
        let service = &self.service;
        let ingested = ingest::ingest(
            service.chunks.clone(),
            service.config.chunking,
            futures::stream::iter([Ok::<_, std::convert::Infallible>(publication.file)]),
            service.config.limits.ingest_limits(),
            service.collector.clone(),
        )
        .await?;
        let mut line = publication.line;
        line.insert(
            "cksum".into(),
            serde_json::Value::String(ingested.descriptor.sha256.to_hex()),
        );
        let at_ms = now_ms();
        line.insert("pubtime".into(), serde_json::Value::String(pubtime(at_ms)));
        let version = VersionRecord {
            vers: publication.vers.clone(),
            line: serde_json::Value::Object(line).to_string(),
            blob: ingested.descriptor.blake3,
            sha256: ingested.descriptor.sha256,
            size: ingested.descriptor.size,
            yanked: false,
            published_at_ms: at_ms,
            seq: 0,
        };
        let command = CargoCommand::Publish {
            repo: repo.clone(),
            name: publication.name.clone(),
            version: Box::new(version),
            blob: ingested.descriptor.clone(),
            description: publication.description,
            publisher: identity.account().map(str::to_string),
            at_ms,
        };
        let outcome = service.propose_format(&command, [ingested]).await?;
        self.written(repo, &publication.name, &publication.vers, outcome)
            .await
    }

    /// `DELETE …/{crate}/{version}/yank` (`true`) and `PUT …/unyank` (`false`).
    pub async fn yank(
        &self,
        repo: &RepoName,
        identity: &Identity,
        name: &str,
        vers: &str,
        yanked: bool,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let record = self.must_crate(repo, name)?;
        self.check_owner(repo, &record, identity)?;
        let command = CargoCommand::Yank {
            repo: repo.clone(),
            name: record.name.clone(),
            vers: vers.to_string(),
            yanked,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, &record.name, vers, outcome).await
    }

    /// `PUT` (add) and `DELETE` (remove) `…/{crate}/owners`. Owners are account names.
    pub async fn change_owners(
        &self,
        repo: &RepoName,
        identity: &Identity,
        name: &str,
        users: Vec<String>,
        add: bool,
    ) -> Result<Written> {
        self.service
            .repo_for_write(repo)
            .await?
            .require_format(NAME)?;
        let record = self.must_crate(repo, name)?;
        self.check_owner(repo, &record, identity)?;
        if users.is_empty() || users.len() > super::keys::MAX_OWNERS {
            return Err(invalid(format!(
                "name 1 to {} owners",
                super::keys::MAX_OWNERS
            )));
        }
        if add {
            let state = self.auth.state()?;
            if let Some(unknown) = users
                .iter()
                .find(|u| !state.accounts.contains_key(u.as_str()))
            {
                return Err(invalid(format!("there is no account named {unknown:?}")));
            }
        }
        let (add, remove) = if add {
            (users, Vec::new())
        } else {
            (Vec::new(), users)
        };
        let command = CargoCommand::Owners {
            repo: repo.clone(),
            name: record.name.clone(),
            add,
            remove,
            at_ms: now_ms(),
        };
        let outcome = self.service.propose_format(&command, None).await?;
        self.written(repo, &record.name, "", outcome).await
    }

    pub fn must_crate(&self, repo: &RepoName, name: &str) -> Result<CrateRecord> {
        check_name(name).map_err(|reason| Error::InvalidPath { reason })?;
        self.exact_crate(repo, name)?
            .ok_or_else(|| Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("crate {name}"),
            })
    }

    /// Waits for a change to reach the mirrors that must have it, or turns a refusal into
    /// its error.
    async fn written(
        &self,
        repo: &RepoName,
        name: &str,
        vers: &str,
        outcome: CargoOutcome,
    ) -> Result<Written> {
        let service = &self.service;
        match outcome {
            CargoOutcome::Changed { seq } => {
                service.wait_sync_replication(repo, seq).await?;
                Ok(Written::Changed)
            }
            CargoOutcome::Unchanged => {
                // A retried write: wait as the first attempt would have.
                let seq = service.catalog.changelog_head()?.last_seq;
                service.wait_sync_replication(repo, seq).await?;
                Ok(Written::Unchanged)
            }
            CargoOutcome::VersionExists { cksum } => Err(Error::Immutable {
                repo: repo.to_string(),
                path: format!("{name} {vers}"),
                reason: format!(
                    "crate version {name}@{vers} already exists with other contents (cksum {cksum}); published versions never change, publish a new version"
                ),
            }),
            CargoOutcome::NameTaken { existing } => Err(name_taken(name, &existing)),
            CargoOutcome::RepoNotFound => Err(Error::RepoNotFound {
                repo: repo.to_string(),
            }),
            CargoOutcome::WrongFormat { format } => Err(Error::WrongFormat {
                repo: repo.to_string(),
                format: format.to_string(),
                expected: NAME.to_string(),
            }),
            CargoOutcome::CrateNotFound => Err(Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("crate {name}"),
            }),
            CargoOutcome::VersionNotFound => Err(Error::ArtifactNotFound {
                repo: repo.to_string(),
                path: format!("crate {name} version {vers}"),
            }),
            CargoOutcome::TooManyVersions { limit } => Err(invalid(format!(
                "{name} already has {limit} versions, the most a crate may hold"
            ))),
            CargoOutcome::TooManyOwners { limit } => Err(invalid(format!(
                "{name} would have more than {limit} owners"
            ))),
            CargoOutcome::LastOwner => Err(invalid(format!(
                "{name} would be left without an owner; add another owner first"
            ))),
        }
    }
}

fn name_taken(name: &str, existing: &str) -> Error {
    Error::AlreadyExists {
        what: format!(
            "crate {existing} (crate names are unique ignoring case and `-` against `_`, so {name} is taken; normalized {})",
            normalized(name)
        ),
    }
}

/// One index line: the stored line with `yanked` set, and a newline.
fn render_line(out: &mut Vec<u8>, version: &VersionRecord) {
    let yanked = if version.yanked { "true" } else { "false" };
    // The stored line is a JSON object: insert the field before its closing brace.
    match version.line.strip_suffix('}') {
        Some(open) => {
            out.extend_from_slice(open.as_bytes());
            out.extend_from_slice(b",\"yanked\":");
            out.extend_from_slice(yanked.as_bytes());
            out.extend_from_slice(b"}\n");
        }
        None => {
            out.extend_from_slice(version.line.as_bytes());
            out.push(b'\n');
        }
    }
}

/// RFC 3339 with seconds, as crates.io writes `pubtime`.
fn pubtime(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
