//! The cargo format's keys (all under `cg/`) and its reads of the applied state. Crates are
//! keyed by their normalized name ([`super::names::normalized`]), versions by the version
//! without build metadata (the parts cargo compares).

use super::model::{CrateRecord, VersionRecord};
use super::names::{normalized, without_build};
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::names::RepoName;

pub const PREFIX: &[u8] = b"cg/";
const CRATE: &[u8] = b"cg/c/";
const VERSION: &[u8] = b"cg/v/";

/// Most versions one crate may hold: its index file lists all of them.
pub const MAX_VERSIONS_PER_CRATE: u64 = 10_000;
/// Most owners of one crate.
pub const MAX_OWNERS: usize = 100;

/// `cg/c/<repo>\0`: every crate of a repository, by normalized name.
pub fn crate_prefix(repo: &RepoName) -> Vec<u8> {
    [CRATE, repo.as_str().as_bytes(), b"\0"].concat()
}

pub fn crate_key(repo: &RepoName, name: &str) -> Vec<u8> {
    [crate_prefix(repo).as_slice(), normalized(name).as_bytes()].concat()
}

/// `cg/v/<repo>\0<normalized>\0`: every version of a crate.
pub fn version_prefix(repo: &RepoName, name: &str) -> Vec<u8> {
    [
        VERSION,
        repo.as_str().as_bytes(),
        b"\0",
        normalized(name).as_bytes(),
        b"\0",
    ]
    .concat()
}

pub fn version(repo: &RepoName, name: &str, vers: &str) -> Vec<u8> {
    [
        version_prefix(repo, name).as_slice(),
        without_build(vers).as_bytes(),
    ]
    .concat()
}

impl Catalog {
    /// The crate `name` (any spelling modulo case and `-`/`_`).
    pub fn cargo_crate(&self, repo: &RepoName, name: &str) -> Result<Option<CrateRecord>> {
        self.get(&crate_key(repo, name))
    }

    /// Crates in normalized-name order strictly after `after`: at most `limit`, and whether
    /// more follow.
    pub fn cargo_crates(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<CrateRecord>, bool)> {
        let prefix = crate_prefix(repo);
        let after = after.map(|after| crate_key(repo, after));
        self.scan(&prefix, after.as_deref(), limit, |_, value| {
            decode::<CrateRecord>(value)
        })
    }

    /// Every version of a crate, in publish order (the index file's order).
    pub fn cargo_versions(&self, repo: &RepoName, name: &str) -> Result<Vec<VersionRecord>> {
        let prefix = version_prefix(repo, name);
        let (mut versions, _) = self.scan(
            &prefix,
            None,
            MAX_VERSIONS_PER_CRATE as usize,
            |_, value| decode::<VersionRecord>(value),
        )?;
        versions.sort_by_key(|v| v.seq);
        Ok(versions)
    }

    pub fn cargo_version(
        &self,
        repo: &RepoName,
        name: &str,
        vers: &str,
    ) -> Result<Option<VersionRecord>> {
        self.get(&self::version(repo, name, vers))
    }
}
