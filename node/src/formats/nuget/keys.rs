//! The NuGet format's keys (all under `ng/`, ids lowercased) and its reads of the applied
//! state.

use super::model::{PackageRecord, VersionRecord};
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::names::RepoName;

pub const PREFIX: &[u8] = b"ng/";
const PACKAGE: &[u8] = b"ng/p/";
const VERSION: &[u8] = b"ng/v/";

/// Most versions one package id may hold.
pub const MAX_VERSIONS_PER_PACKAGE: u64 = 10_000;

pub fn package_prefix(repo: &RepoName) -> Vec<u8> {
    [PACKAGE, repo.as_str().as_bytes(), b"\0"].concat()
}

pub fn package(repo: &RepoName, id: &str) -> Vec<u8> {
    [
        package_prefix(repo).as_slice(),
        id.to_ascii_lowercase().as_bytes(),
    ]
    .concat()
}

pub fn version_prefix(repo: &RepoName, id: &str) -> Vec<u8> {
    [
        VERSION,
        repo.as_str().as_bytes(),
        b"\0",
        id.to_ascii_lowercase().as_bytes(),
        b"\0",
    ]
    .concat()
}

pub fn version(repo: &RepoName, id: &str, version: &str) -> Vec<u8> {
    [
        version_prefix(repo, id).as_slice(),
        version.to_ascii_lowercase().as_bytes(),
    ]
    .concat()
}

impl Catalog {
    pub fn nuget_package(&self, repo: &RepoName, id: &str) -> Result<Option<PackageRecord>> {
        self.get(&package(repo, id))
    }

    pub fn nuget_packages(
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

    /// Every version of a package id, in NuGet's version order.
    pub fn nuget_versions(&self, repo: &RepoName, id: &str) -> Result<Vec<VersionRecord>> {
        let prefix = version_prefix(repo, id);
        let (mut versions, _) = self.scan(
            &prefix,
            None,
            MAX_VERSIONS_PER_PACKAGE as usize,
            |_, value| decode::<VersionRecord>(value),
        )?;
        versions.sort_by(|a, b| super::package::compare(&a.version, &b.version));
        Ok(versions)
    }

    pub fn nuget_version(
        &self,
        repo: &RepoName,
        id: &str,
        version: &str,
    ) -> Result<Option<VersionRecord>> {
        self.get(&self::version(repo, id, version))
    }
}
