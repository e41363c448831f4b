//! Repository formats, each in its own folder, and the one list that registers them.
//!
//! A format implements [`Format`] once: its commands and their apply function
//! ([`crate::metadata::format::FormatApply`], the metadata side), its routes, its error body and its
//! metrics (this trait, the HTTP side). The core never names a format: the state machine and
//! the write path are built with the [`FormatSet`] that [`registered`] gives, the router
//! mounts each format's routes, and the API's middleware answers with the body of the format
//! whose prefix the request path starts with. Adding a format is a folder here plus one line
//! in [`registered`].
//!
//! Formats never depend on each other or on the router (`crate::api`).

pub mod cargo;
pub mod file_response;
pub mod generic;
pub mod helm;
pub mod listing;
pub mod maven;
pub mod npm;
pub mod nuget;
pub mod oci;
pub mod pypi;
pub mod routes;

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, Challenge};
use crate::error::Error;
use crate::metadata::format::{FormatApply, FormatSet};
use crate::service::ArtifactService;

/// Every format this build serves: the registration list.
pub fn registered() -> Vec<&'static dyn Format> {
    vec![
        &generic::Generic,
        &oci::Oci,
        &pypi::Pypi,
        &npm::Npm,
        &maven::Maven,
        &cargo::Cargo,
        &helm::Helm,
        &nuget::Nuget,
    ]
}

/// The metadata side of [`registered`], for the state machine and the write path, with the
/// core's own record kinds that travel through the same seam (accounts and credentials, the
/// audit log).
pub fn set() -> FormatSet {
    let mut formats: Vec<&'static dyn FormatApply> = registered()
        .into_iter()
        .map(|format| format as &'static dyn FormatApply)
        .collect();
    formats.push(&crate::auth::apply::AuthApply);
    formats.push(&crate::auth::apply::AuditApply);
    FormatSet::new(formats)
}

/// What a format is given when the node starts.
pub struct FormatContext {
    pub service: Arc<ArtifactService>,
    /// Credentials and permissions (a format that issues or checks its own tokens uses it).
    pub auth: Arc<crate::auth::Auth>,
    /// Cancelled when the node shuts down: background tasks stop on it.
    pub cancel: CancellationToken,
    /// The node's span (region, node): background tasks run in a span under it.
    pub span: tracing::Span,
}

impl FormatContext {
    /// The format's own settings (`[formats.<name>]`), or their defaults.
    pub fn settings<T: serde::de::DeserializeOwned + Default>(
        &self,
        format: &str,
    ) -> anyhow::Result<T> {
        self.service.config.format_settings(format)
    }

    /// Spawns one of the format's background tasks, in a span naming it.
    pub fn spawn<F>(&self, task: &'static str, future: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument;
        tokio::spawn(future.instrument(tracing::info_span!(parent: &self.span, "task", task)))
    }
}

/// A started format: its routes and the background tasks it runs (the node awaits them at
/// shutdown).
pub struct Started {
    pub router: Router,
    pub tasks: Vec<JoinHandle<()>>,
}

/// A repository format, as the node serves it (see the module documentation).
pub trait Format: FormatApply {
    /// The URL prefixes its routes live under (`/files/`, `/v2/`): requests whose path starts
    /// with one are the format's, and get its error body.
    fn prefixes(&self) -> &'static [&'static str];

    /// Opens what the format keeps besides the state machine, starts its background tasks
    /// and builds its routes (with their state: the router needs nothing more).
    fn start(&self, context: &FormatContext) -> anyhow::Result<Started>;

    /// An error of the core (a mirror refusing a write, a read that cannot be confirmed, a
    /// limit) in the format's own error body.
    fn error_response(&self, error: Error) -> Response;

    /// Whether a GET or HEAD of `path` (one of the format's) names content that never
    /// changes, so it can be served from this node's state without a read barrier.
    fn immutable_read(&self, _service: &ArtifactService, _path: &str) -> bool {
        false
    }

    /// The repository a request path of the format names, for request spans.
    fn repo_of<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = self
            .prefixes()
            .iter()
            .find_map(|prefix| path.strip_prefix(prefix))?;
        rest.split('/').next().filter(|repo| !repo.is_empty())
    }

    /// Describes the format's metrics (names start with `arca_<format>_`).
    fn describe_metrics(&self) {}

    /// What a request needs (see [`Access`]): every route of the format is covered, because
    /// the API's middleware asks this before any handler runs. A path the format does not
    /// know should need the most (its handler answers 404 to those who may ask).
    fn access(&self, method: &Method, path: &str) -> Access;

    /// The challenge its clients expect on `401`.
    fn challenge(&self) -> Challenge {
        Challenge::Basic
    }

    /// Its packages, for the admin API and the CLI, when its repositories hold packages.
    fn packages(&self) -> Option<&'static dyn listing::Packages> {
        None
    }

    /// Removes what a remote repository cached under `prefix` (at most
    /// [`crate::remote::MAX_PURGE`] items per call): the next request fetches it again.
    /// Returns how many items went.
    fn purge<'a>(
        &'a self,
        _service: &'a Arc<ArtifactService>,
        repo: &'a crate::metadata::model::Repository,
        _prefix: &'a str,
    ) -> futures::future::BoxFuture<'a, crate::error::Result<u64>> {
        Box::pin(async move {
            Err(Error::InvalidRequest {
                message: format!("repositories of format {} keep no cache", repo.format),
            })
        })
    }
}

/// The format whose routes `path` belongs to, if any.
pub fn for_path(formats: &[&'static dyn Format], path: &str) -> Option<&'static dyn Format> {
    formats.iter().copied().find(|format| {
        format
            .prefixes()
            .iter()
            .any(|prefix| path.starts_with(prefix) || path == prefix.trim_end_matches('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The core's key ranges (see `crate::metadata::keys`): no format may write into them.
    const CORE_PREFIXES: &[&[u8]] = &[
        b"r/", b"s/", b"b/", b"h/", b"c/", b"rb/", b"rc/", b"g/", b"m/", b"d/", b"x/", b"dc/",
        b"fr/", b"l/", b"av/",
    ];

    fn overlaps(a: &[u8], b: &[u8]) -> bool {
        a.starts_with(b) || b.starts_with(a)
    }

    #[test]
    fn the_core_record_kinds_have_key_ranges_of_their_own() {
        let set = set();
        let all: Vec<_> = set.iter().collect();
        for (i, a) in all.iter().enumerate() {
            for key in a.key_prefixes() {
                for core in CORE_PREFIXES {
                    assert!(
                        !overlaps(key, core),
                        "{} writes core keys {core:?}",
                        a.name()
                    );
                }
                for b in &all[i + 1..] {
                    for other in b.key_prefixes() {
                        assert!(!overlaps(key, other), "{} and {}", a.name(), b.name());
                    }
                }
            }
        }
        assert!(!set.must_find("auth").expect("auth").hosts_repositories());
        assert!(set
            .must_find("generic")
            .expect("generic")
            .hosts_repositories());
    }

    #[test]
    fn formats_have_distinct_names_prefixes_and_key_ranges() {
        let formats = registered();
        for (i, a) in formats.iter().enumerate() {
            assert!(
                a.name().as_str().bytes().all(|b| b.is_ascii_lowercase()),
                "{}",
                a.name()
            );
            assert!(a.version() >= 1);
            for key in a.key_prefixes() {
                assert_eq!(key.last(), Some(&b'/'), "{}: {key:?}", a.name());
                for core in CORE_PREFIXES {
                    assert!(
                        !overlaps(key, core),
                        "{} writes core keys {core:?}",
                        a.name()
                    );
                }
            }
            for b in &formats[i + 1..] {
                assert_ne!(a.name(), b.name());
                for x in a.key_prefixes() {
                    for y in b.key_prefixes() {
                        assert!(!overlaps(x, y), "{} and {} share {x:?}", a.name(), b.name());
                    }
                }
                for x in a.prefixes() {
                    for y in b.prefixes() {
                        assert!(!x.starts_with(y) && !y.starts_with(x), "{x} and {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn paths_find_their_format() {
        let formats = registered();
        let name = |path: &str| for_path(&formats, path).map(|f| f.name().to_string());
        assert_eq!(name("/files/builds/a.bin").as_deref(), Some("generic"));
        assert_eq!(name("/v2/").as_deref(), Some("oci"));
        assert_eq!(name("/v2").as_deref(), Some("oci"));
        assert_eq!(
            name("/v2/containers/app/manifests/1").as_deref(),
            Some("oci")
        );
        assert_eq!(name("/api/v1/repos"), None);
        assert_eq!(name("/v20"), None);
    }
}
