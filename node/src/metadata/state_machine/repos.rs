//! Creating a repository (every format's: a format's own commands are applied by the format,
//! see `crate::metadata::format`).

use super::{inc, Txn};
use crate::metadata::keys;
use crate::metadata::model::{Outcome, RepoStats, Repository};

impl Txn<'_, '_> {
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
}
