//! The npm format's keys (all under `np/`) and its reads of the applied state.

use super::model::{PackageRecord, VersionRecord};
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::names::RepoName;

pub const PREFIX: &[u8] = b"np/";
const PACKAGE: &[u8] = b"np/p/";
const VERSION: &[u8] = b"np/v/";

/// Most versions (unpublished ones included) one package may hold: its packument is built
/// from all of them.
pub const MAX_VERSIONS_PER_PACKAGE: u64 = 10_000;

/// `np/p/<repo>\0`: every package of a repository, by name.
pub fn package_prefix(repo: &RepoName) -> Vec<u8> {
    [PACKAGE, repo.as_str().as_bytes(), b"\0"].concat()
}

pub fn package(repo: &RepoName, name: &str) -> Vec<u8> {
    [package_prefix(repo).as_slice(), name.as_bytes()].concat()
}

/// `np/v/<repo>\0<name>\0`: every version of a package.
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

impl Catalog {
    pub fn npm_package(&self, repo: &RepoName, name: &str) -> Result<Option<PackageRecord>> {
        self.get(&package(repo, name))
    }

    /// Packages in name order strictly after `after`: at most `limit`, and whether more
    /// follow.
    pub fn npm_packages(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<PackageRecord>, bool)> {
        let prefix = package_prefix(repo);
        let after = after.map(|after| package(repo, after));
        self.scan(&prefix, after.as_deref(), limit, |_, value| {
            decode::<PackageRecord>(value)
        })
    }

    /// Every version record of a package (unpublished ones included).
    pub fn npm_versions(&self, repo: &RepoName, name: &str) -> Result<Vec<VersionRecord>> {
        let prefix = version_prefix(repo, name);
        let (versions, _) = self.scan(
            &prefix,
            None,
            MAX_VERSIONS_PER_PACKAGE as usize,
            |_, value| decode::<VersionRecord>(value),
        )?;
        Ok(versions)
    }

    pub fn npm_version(
        &self,
        repo: &RepoName,
        name: &str,
        version: &str,
    ) -> Result<Option<VersionRecord>> {
        self.get(&self::version(repo, name, version))
    }
}
