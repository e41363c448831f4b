//! The commands of generic file repositories: create a repository, put and delete a file.

use super::{dec, inc, Txn};
use crate::keys;
use crate::model::{Artifact, BlobDescriptor, Format, Outcome, RepoStats, Repository};
use crate::names::{ArtifactPath, RepoName};

impl Txn<'_, '_> {
    /// The generic repository `repo_name`, or the outcome that refuses a file command on it.
    fn generic_repo(&self, repo_name: &RepoName) -> anyhow::Result<Result<Repository, Outcome>> {
        let Some(repo) = self.get::<Repository>(&keys::repo(repo_name))? else {
            return Ok(Err(Outcome::RepoNotFound));
        };
        if repo.format != Format::Generic {
            return Ok(Err(Outcome::WrongFormat {
                format: repo.format,
            }));
        }
        Ok(Ok(repo))
    }

    pub(super) fn create_repo(&mut self, repo: &Repository) -> anyhow::Result<Outcome> {
        let key = keys::repo(&repo.name);
        if self.get_raw(&key)?.is_some() {
            return Ok(Outcome::RepoExists);
        }
        self.put(key, repo)?;
        self.put(keys::repo_stats(&repo.name), &RepoStats::default())?;
        let mut stats = self.stats()?;
        inc(&mut stats.repositories, 1, "repositories")?;
        self.put(keys::GLOBAL_STATS.to_vec(), &stats)?;
        Ok(Outcome::RepoCreated)
    }

    pub(super) fn put_artifact(
        &mut self,
        repo_name: &RepoName,
        path: &ArtifactPath,
        blob: &BlobDescriptor,
        at_ms: i64,
    ) -> anyhow::Result<Outcome> {
        let repo = match self.generic_repo(repo_name)? {
            Ok(repo) => repo,
            Err(refused) => return Ok(refused),
        };
        let key = keys::artifact(repo_name, path);
        let existing: Option<Artifact> = self.get(&key)?;
        let mut repo_stats: RepoStats = self.get(&keys::repo_stats(repo_name))?.unwrap_or_default();
        let mut stats = self.stats()?;
        if let Some(old) = &existing {
            if old.blob == blob.blake3 {
                return Ok(Outcome::ArtifactUnchanged);
            }
            if repo.immutable {
                return Ok(Outcome::Immutable);
            }
            self.release_blob(repo_name, &old.blob, &mut repo_stats, &mut stats)?;
            dec(&mut repo_stats.logical_bytes, old.size, "repository bytes")?;
            dec(&mut stats.logical_bytes, old.size, "logical bytes")?;
        } else {
            inc(&mut repo_stats.artifacts, 1, "repository artifacts")?;
            inc(&mut stats.artifacts, 1, "artifacts")?;
        }
        self.acquire_blob(repo_name, blob, &mut repo_stats, &mut stats)?;
        inc(&mut repo_stats.logical_bytes, blob.size, "repository bytes")?;
        inc(&mut stats.logical_bytes, blob.size, "logical bytes")?;
        let artifact = Artifact {
            repo: repo_name.clone(),
            path: path.clone(),
            blob: blob.blake3,
            sha256: blob.sha256,
            size: blob.size,
            created_at_ms: existing.as_ref().map_or(at_ms, |old| old.created_at_ms),
            updated_at_ms: at_ms,
        };
        self.put(key, &artifact)?;
        self.put(keys::repo_stats(repo_name), &repo_stats)?;
        self.put(keys::GLOBAL_STATS.to_vec(), &stats)?;
        Ok(Outcome::ArtifactStored {
            replaced: existing.is_some(),
            seq: 0,
        })
    }

    pub(super) fn delete_artifact(
        &mut self,
        repo_name: &RepoName,
        path: &ArtifactPath,
    ) -> anyhow::Result<Outcome> {
        let repo = match self.generic_repo(repo_name)? {
            Ok(repo) => repo,
            Err(refused) => return Ok(refused),
        };
        let key = keys::artifact(repo_name, path);
        let Some(old) = self.get::<Artifact>(&key)? else {
            return Ok(Outcome::ArtifactNotFound);
        };
        if repo.immutable {
            return Ok(Outcome::Immutable);
        }
        let mut repo_stats: RepoStats = self.get(&keys::repo_stats(repo_name))?.unwrap_or_default();
        let mut stats = self.stats()?;
        self.release_blob(repo_name, &old.blob, &mut repo_stats, &mut stats)?;
        dec(&mut repo_stats.artifacts, 1, "repository artifacts")?;
        dec(&mut repo_stats.logical_bytes, old.size, "repository bytes")?;
        dec(&mut stats.artifacts, 1, "artifacts")?;
        dec(&mut stats.logical_bytes, old.size, "logical bytes")?;
        self.delete(key)?;
        self.put(keys::repo_stats(repo_name), &repo_stats)?;
        self.put(keys::GLOBAL_STATS.to_vec(), &stats)?;
        Ok(Outcome::ArtifactDeleted { seq: 0 })
    }
}
