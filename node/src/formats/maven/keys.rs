//! The Maven format's keys (all under `mv/`) and its reads of the applied state. Coordinates
//! never hold `\0` (see `coords`), which separates them in keys.

use super::model::{ArtifactRecord, MavenFile, PluginRecord, VersionRecord};
use crate::error::Result;
use crate::metadata::catalog::Catalog;
use crate::metadata::codec::decode;
use crate::names::RepoName;

pub const PREFIX: &[u8] = b"mv/";
const ARTIFACT: &[u8] = b"mv/a/";
const VERSION: &[u8] = b"mv/v/";
const FILE: &[u8] = b"mv/f/";
const PLUGIN: &[u8] = b"mv/p/";

/// Most versions one artifact may hold (its metadata lists all of them).
pub const MAX_VERSIONS_PER_ARTIFACT: u64 = 10_000;
/// Most files one version may hold.
pub const MAX_FILES_PER_VERSION: u64 = 10_000;
/// Most plugin prefixes one group may hold.
pub const MAX_PLUGINS_PER_GROUP: u64 = 1_000;

fn joined(kind: &[u8], parts: &[&str], open: bool) -> Vec<u8> {
    let mut key = kind.to_vec();
    for part in parts {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    if !open {
        key.pop();
    }
    key
}

/// `mv/a/<repo>\0`: every artifact of a repository, by `group\0artifact`.
pub fn artifact_prefix(repo: &RepoName) -> Vec<u8> {
    joined(ARTIFACT, &[repo.as_str()], true)
}

pub fn artifact(repo: &RepoName, group: &str, artifact: &str) -> Vec<u8> {
    joined(ARTIFACT, &[repo.as_str(), group, artifact], false)
}

/// `mv/v/<repo>\0<group>\0<artifact>\0`: every version of an artifact.
pub fn version_prefix(repo: &RepoName, group: &str, artifact: &str) -> Vec<u8> {
    joined(VERSION, &[repo.as_str(), group, artifact], true)
}

pub fn version(repo: &RepoName, group: &str, artifact: &str, version: &str) -> Vec<u8> {
    joined(VERSION, &[repo.as_str(), group, artifact, version], false)
}

/// `mv/f/<repo>\0<group>\0<artifact>\0<version>\0`: every file of a version.
pub fn file_prefix(repo: &RepoName, group: &str, artifact: &str, version: &str) -> Vec<u8> {
    joined(FILE, &[repo.as_str(), group, artifact, version], true)
}

pub fn file(repo: &RepoName, group: &str, artifact: &str, version: &str, name: &str) -> Vec<u8> {
    joined(
        FILE,
        &[repo.as_str(), group, artifact, version, name],
        false,
    )
}

/// `mv/p/<repo>\0<group>\0`: every plugin prefix of a group.
pub fn plugin_prefix(repo: &RepoName, group: &str) -> Vec<u8> {
    joined(PLUGIN, &[repo.as_str(), group], true)
}

pub fn plugin(repo: &RepoName, group: &str, prefix: &str) -> Vec<u8> {
    joined(PLUGIN, &[repo.as_str(), group, prefix], false)
}

impl Catalog {
    pub fn maven_artifact(
        &self,
        repo: &RepoName,
        group: &str,
        name: &str,
    ) -> Result<Option<ArtifactRecord>> {
        self.get(&artifact(repo, group, name))
    }

    /// Artifacts in `group\0artifact` order strictly after `after` (`(group, artifact)`): at
    /// most `limit`, and whether more follow.
    pub fn maven_artifacts(
        &self,
        repo: &RepoName,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<(Vec<ArtifactRecord>, bool)> {
        let after = after.map(|(group, name)| artifact(repo, group, name));
        self.scan(
            &artifact_prefix(repo),
            after.as_deref(),
            limit,
            |_, value| decode::<ArtifactRecord>(value),
        )
    }

    /// Every version of an artifact (in key order; callers sort them as Maven does).
    pub fn maven_versions(
        &self,
        repo: &RepoName,
        group: &str,
        name: &str,
    ) -> Result<Vec<VersionRecord>> {
        let prefix = version_prefix(repo, group, name);
        let (versions, _) = self.scan(
            &prefix,
            None,
            MAX_VERSIONS_PER_ARTIFACT as usize,
            |_, value| decode::<VersionRecord>(value),
        )?;
        Ok(versions)
    }

    pub fn maven_version(
        &self,
        repo: &RepoName,
        group: &str,
        name: &str,
        number: &str,
    ) -> Result<Option<VersionRecord>> {
        self.get(&version(repo, group, name, number))
    }

    /// Every file of a version, by file name.
    pub fn maven_files(
        &self,
        repo: &RepoName,
        group: &str,
        name: &str,
        number: &str,
    ) -> Result<Vec<MavenFile>> {
        let prefix = file_prefix(repo, group, name, number);
        let (files, _) = self.scan(&prefix, None, MAX_FILES_PER_VERSION as usize, |_, value| {
            decode::<MavenFile>(value)
        })?;
        Ok(files)
    }

    pub fn maven_file(
        &self,
        repo: &RepoName,
        group: &str,
        name: &str,
        number: &str,
        filename: &str,
    ) -> Result<Option<MavenFile>> {
        self.get(&file(repo, group, name, number, filename))
    }

    /// Every plugin prefix of a group, by prefix.
    pub fn maven_plugins(&self, repo: &RepoName, group: &str) -> Result<Vec<PluginRecord>> {
        let prefix = plugin_prefix(repo, group);
        let (plugins, _) =
            self.scan(&prefix, None, MAX_PLUGINS_PER_GROUP as usize, |_, value| {
                decode::<PluginRecord>(value)
            })?;
        Ok(plugins)
    }
}
