//! The Helm format's keys (all under `hm/`) and its reads of the applied state.

use super::model::{ChartRecord, Generation, VersionRecord};
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::names::RepoName;

pub const PREFIX: &[u8] = b"hm/";
const CHART: &[u8] = b"hm/c/";
const VERSION: &[u8] = b"hm/v/";
const GENERATION: &[u8] = b"hm/g/";

/// Most versions one chart may hold, and most charts one repository's index lists.
pub const MAX_VERSIONS_PER_CHART: u64 = 10_000;
pub const MAX_CHARTS: usize = 100_000;

/// `hm/c/<repo>\0`: every chart of a repository, by name.
pub fn chart_prefix(repo: &RepoName) -> Vec<u8> {
    [CHART, repo.as_str().as_bytes(), b"\0"].concat()
}

pub fn chart(repo: &RepoName, name: &str) -> Vec<u8> {
    [chart_prefix(repo).as_slice(), name.as_bytes()].concat()
}

/// `hm/v/<repo>\0<name>\0`: every version of a chart.
pub fn version_prefix(repo: &RepoName, name: &str) -> Vec<u8> {
    [
        VERSION,
        repo.as_str().as_bytes(),
        b"\0",
        name.as_bytes(),
        b"\0",
    ]
    .concat()
}

pub fn version(repo: &RepoName, name: &str, version: &str) -> Vec<u8> {
    [version_prefix(repo, name).as_slice(), version.as_bytes()].concat()
}

pub fn generation(repo: &RepoName) -> Vec<u8> {
    [GENERATION, repo.as_str().as_bytes()].concat()
}

impl Catalog {
    pub fn helm_chart(&self, repo: &RepoName, name: &str) -> Result<Option<ChartRecord>> {
        self.get(&chart(repo, name))
    }

    /// Charts in name order strictly after `after`: at most `limit`, and whether more follow.
    pub fn helm_charts(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ChartRecord>, bool)> {
        let prefix = chart_prefix(repo);
        let after = after.map(|after| chart(repo, after));
        self.scan(&prefix, after.as_deref(), limit, |_, value| {
            decode::<ChartRecord>(value)
        })
    }

    pub fn helm_versions(&self, repo: &RepoName, name: &str) -> Result<Vec<VersionRecord>> {
        let prefix = version_prefix(repo, name);
        let (versions, _) = self.scan(
            &prefix,
            None,
            MAX_VERSIONS_PER_CHART as usize,
            |_, value| decode::<VersionRecord>(value),
        )?;
        Ok(versions)
    }

    pub fn helm_version(
        &self,
        repo: &RepoName,
        name: &str,
        version: &str,
    ) -> Result<Option<VersionRecord>> {
        self.get(&self::version(repo, name, version))
    }

    /// The repository's last change (none before its first upload).
    pub fn helm_generation(&self, repo: &RepoName) -> Result<Option<Generation>> {
        self.get(&generation(repo))
    }
}
