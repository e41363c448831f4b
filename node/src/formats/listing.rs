//! What a package format shows of its packages to the admin API and the CLI (`arca ls`,
//! `arca stat`): one shape for every format, served by the core at
//! `/api/v1/repos/{repo}/packages[/{name}]` and filled by the repository's format.

use serde::Serialize;

use crate::error::Result;
use crate::metadata::catalog::Page;
use crate::names::RepoName;
use crate::service::ArtifactService;

/// One package of a repository, for a listing.
#[derive(Debug, Clone, Serialize)]
pub struct PackageSummary {
    /// The name as the format displays it (`Arca-Hello`, `@acme/hello`, `com.acme:hello`).
    pub name: String,
    pub versions: usize,
    /// The newest version (the format's own ordering).
    pub latest: Option<String>,
    pub updated_at: String,
}

/// One stored file of a package version.
#[derive(Debug, Clone, Serialize)]
pub struct PackageFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
    pub uploaded_at: String,
}

/// One version of a package and its files.
#[derive(Debug, Clone, Serialize)]
pub struct PackageVersion {
    pub version: String,
    pub files: Vec<PackageFile>,
    /// Why the version is yanked or deprecated, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
}

/// A package with every version.
#[derive(Debug, Clone, Serialize)]
pub struct PackageDetail {
    pub name: String,
    pub versions: Vec<PackageVersion>,
}

/// A format whose repositories hold packages (registered through
/// [`crate::formats::Format::packages`]).
pub trait Packages: Send + Sync {
    /// Packages of `repo` in name order, strictly after `after`; at most `limit`.
    fn list(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<PackageSummary>>;

    /// One package (`ARTIFACT_NOT_FOUND` when the repository has none of that name).
    fn package(
        &self,
        service: &ArtifactService,
        repo: &RepoName,
        name: &str,
    ) -> Result<PackageDetail>;
}
