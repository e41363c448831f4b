//! The PyPI format's keys (all under `py/`) and its reads of the applied state.

use super::model::{DistFile, ProjectRecord};
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::names::RepoName;

pub const PREFIX: &[u8] = b"py/";
const PROJECT: &[u8] = b"py/p/";
const FILE: &[u8] = b"py/f/";

/// `py/p/<repo>\0`: every project of a repository, by normal name.
pub fn project_prefix(repo: &RepoName) -> Vec<u8> {
    [PROJECT, repo.as_str().as_bytes(), b"\0"].concat()
}

pub fn project(repo: &RepoName, normalized: &str) -> Vec<u8> {
    [project_prefix(repo).as_slice(), normalized.as_bytes()].concat()
}

/// `py/f/<repo>\0<project>\0`: every file of a project, by file name.
pub fn file_prefix(repo: &RepoName, normalized: &str) -> Vec<u8> {
    [
        FILE,
        repo.as_str().as_bytes(),
        b"\0",
        normalized.as_bytes(),
        b"\0",
    ]
    .concat()
}

pub fn file(repo: &RepoName, normalized: &str, filename: &str) -> Vec<u8> {
    [
        file_prefix(repo, normalized).as_slice(),
        filename.as_bytes(),
    ]
    .concat()
}

/// Most files one project may hold (its index page is built from all of them).
pub const MAX_FILES_PER_PROJECT: u64 = 20_000;

impl Catalog {
    pub fn pypi_project(&self, repo: &RepoName, normalized: &str) -> Result<Option<ProjectRecord>> {
        self.get(&project(repo, normalized))
    }

    /// Projects in normal-name order strictly after `after`: at most `limit`, and whether more
    /// follow.
    pub fn pypi_projects(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, ProjectRecord)>, bool)> {
        let prefix = project_prefix(repo);
        let after = after.map(|after| project(repo, after));
        self.scan(&prefix, after.as_deref(), limit, |key, value| {
            let name = String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default());
            Ok((name.into_owned(), decode::<ProjectRecord>(value)?))
        })
    }

    /// Every file of a project, by file name.
    pub fn pypi_files(&self, repo: &RepoName, normalized: &str) -> Result<Vec<DistFile>> {
        let prefix = file_prefix(repo, normalized);
        let (files, _) = self.scan(&prefix, None, MAX_FILES_PER_PROJECT as usize, |_, value| {
            decode::<DistFile>(value)
        })?;
        Ok(files)
    }

    pub fn pypi_file(
        &self,
        repo: &RepoName,
        normalized: &str,
        filename: &str,
    ) -> Result<Option<DistFile>> {
        self.get(&file(repo, normalized, filename))
    }
}
