//! What a remote repository records about its upstream: where it is, how to sign in, and how
//! long metadata stays fresh. Stored in the repository's record (replicated through Raft and
//! the change log), so every node and every mirror region proxies the same upstream.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Metadata (tags, index documents) is served without asking the upstream for this long.
pub const DEFAULT_METADATA_TTL_SECS: u64 = 300;
/// A name the upstream does not have is answered 404 without asking again for this long.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 30;
/// Requests in flight to one upstream at once, per node.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;
/// Longest wait for an upstream's response headers, and for each piece of its body.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// A secret that never reaches a log line, a `Debug` print or an API answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The upstream of a remote repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// Base URL: `https://registry-1.docker.io` for OCI, the index root for package formats,
    /// a directory URL for generic files.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default = "default_ttl")]
    pub metadata_ttl_secs: u64,
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u64,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_ttl() -> u64 {
    DEFAULT_METADATA_TTL_SECS
}
fn default_negative_ttl() -> u64 {
    DEFAULT_NEGATIVE_TTL_SECS
}
fn default_concurrency() -> u32 {
    DEFAULT_MAX_CONCURRENCY
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl RemoteSpec {
    /// A spec with the default TTLs and limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            metadata_ttl_secs: DEFAULT_METADATA_TTL_SECS,
            negative_ttl_secs: DEFAULT_NEGATIVE_TTL_SECS,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }

    /// Refuses a spec no upstream could satisfy: a URL that is not absolute http(s), carries
    /// credentials or a query, a password without a username, limits out of range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Error::InvalidRequest { message };
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| invalid(format!("remote URL {:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!(
                "remote URL {:?} must be an absolute http or https URL",
                self.url
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "put upstream credentials in upstream_username / upstream_password, not in the URL"
                    .into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "remote URL {:?} must not have a query or fragment",
                self.url
            )));
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(invalid(
                "an upstream password needs an upstream username".into(),
            ));
        }
        if self
            .username
            .as_deref()
            .is_some_and(|u| u.is_empty() || u.len() > 256 || u.contains(':'))
        {
            return Err(invalid(
                "the upstream username must be 1-256 characters without ':'".into(),
            ));
        }
        if !(1..=256).contains(&self.max_concurrency) {
            return Err(invalid("max_concurrency must be 1-256".into()));
        }
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(invalid("timeout_secs must be 1-600".into()));
        }
        if self.metadata_ttl_secs > 30 * 86_400 || self.negative_ttl_secs > 86_400 {
            return Err(invalid(
                "metadata_ttl_secs is at most 30 days, negative_ttl_secs at most a day".into(),
            ));
        }
        Ok(())
    }

    /// The upstream URL of `path` (relative to the base URL, no leading slash needed).
    pub fn join(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    pub fn metadata_ttl(&self) -> Duration {
        Duration::from_secs(self.metadata_ttl_secs)
    }

    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.negative_ttl_secs)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let mut spec = RemoteSpec::new("http://127.0.0.1:5000");
        spec.username = Some("ci".into());
        spec.password = Some(Secret::new("hunter2"));
        assert!(!format!("{spec:?}").contains("hunter2"));
        spec.validate().expect("valid");
    }

    #[test]
    fn bad_specs_are_refused() {
        for url in [
            "ftp://host/",
            "not a url",
            "http://user:pw@host/",
            "http://host/?q=1",
            "/relative",
        ] {
            assert!(RemoteSpec::new(url).validate().is_err(), "{url}");
        }
        let mut spec = RemoteSpec::new("http://host/");
        spec.password = Some(Secret::new("x"));
        assert!(spec.validate().is_err());
        let mut spec = RemoteSpec::new("http://host/");
        spec.max_concurrency = 0;
        assert!(spec.validate().is_err());
    }

    #[test]
    fn joins_paths() {
        let spec = RemoteSpec::new("http://host/files/libs/");
        assert_eq!(spec.join("/a/b"), "http://host/files/libs/a/b");
        assert_eq!(spec.join("a"), "http://host/files/libs/a");
    }
}
