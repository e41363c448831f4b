//! npm packages in the workload: publishes as npm 11 sends them (the tarball base64 in the
//! JSON document, PUT to the package's URL) to the `npm` repository [`NPM_REPO`], retries and
//! overwrite attempts (refused with 409), publishes to a mirror (refused with 403), and resolves:
//! the abbreviated packument is read on any node of any region and the tarball is downloaded
//! from the URL it lists, checked against the `integrity` (sha512) it lists.
//!
//! A version is a key `npm:np/<name>@<version>`; version `v` of the key is a tarball whose
//! payload is a pure function of `(seed, key, v)` (a tar with fixed headers, gzip at a fixed
//! level: the same bytes every time). Client `c` owns package `chaos-c{c}`.

use base64::Engine as _;
use futures::future::BoxFuture;
use sha1::Digest as _;

use crate::content::{content, tar_gz};
use crate::history::Outcome;
use crate::packages::{fetch_listed, read_json, PackageFormat, Resolved, Spec};

/// The `npm` repository.
pub const NPM_REPO: &str = "np";
/// Every npm key starts with this.
pub const NPM_KEY_PREFIX: &str = "npm:np/";
/// Keys published to mirrors start with this (they must never exist anywhere).
pub const NPM_MIRROR_PROBE_PREFIX: &str = "npm:np/mirror-probe-";
/// What npm sends as `Accept` for an install (the abbreviated packument).
const CORGI: &str = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

/// `(name, version)` of an npm key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(NPM_KEY_PREFIX)?.split_once('@')
}

/// The URL path of a key's tarball.
pub fn file_path(key: &str) -> Option<String> {
    let (name, version) = parse_key(key)?;
    Some(format!("/npm/{NPM_REPO}/{name}/-/{name}-{version}.tgz"))
}

/// The tarball published as `version` of `key`: `package/package.json` naming the key's package
/// and version, and the payload.
pub fn tarball(seed: u64, key: &str, version: u64) -> Vec<u8> {
    let Some((name, release)) = parse_key(key) else {
        return Vec::new();
    };
    let manifest = serde_json::json!({"name": name, "version": release}).to_string();
    let payload = content(seed, key, version);
    tar_gz(&[
        ("package/package.json", manifest.as_bytes()),
        ("package/payload.bin", &payload),
    ])
}

/// `sha512-<base64>`, as npm writes `dist.integrity`.
pub fn integrity(bytes: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    )
}

/// The document `npm publish` PUTs for `name@version` with tarball `bytes`.
pub fn publish_document(name: &str, version: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "_id": name, "name": name,
        "dist-tags": {"latest": version},
        "versions": {version: {
            "name": name, "version": version, "_id": format!("{name}@{version}"),
            "dist": {
                "integrity": integrity(bytes),
                "shasum": hex::encode(sha1::Sha1::digest(bytes)),
                "tarball": format!("http://localhost/{name}/-/{name}-{version}.tgz"),
            }
        }},
        "_attachments": {format!("{name}-{version}.tgz"): {
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(bytes),
            "length": bytes.len(),
        }}
    })
}

/// The npm part of the workload ([`crate::packages`]).
pub struct Npm;

impl PackageFormat for Npm {
    fn spec(&self) -> Spec {
        Spec {
            format: "npm",
            repo: NPM_REPO,
            key_prefix: NPM_KEY_PREFIX,
            mirror_probe_prefix: NPM_MIRROR_PROBE_PREFIX,
            share: 12,
        }
    }

    fn key(&self, client: u32, release: u64) -> String {
        format!("{NPM_KEY_PREFIX}chaos-c{client}@1.0.{release}")
    }

    fn mirror_probe_key(&self, client: u32, probe: u64) -> String {
        format!("{NPM_MIRROR_PROBE_PREFIX}c{client}@1.0.{probe}")
    }

    fn file_path(&self, key: &str) -> Option<String> {
        file_path(key)
    }

    fn publish(
        &self,
        http: &reqwest::Client,
        url: &str,
        seed: u64,
        key: &str,
        version: u64,
    ) -> (Vec<u8>, reqwest::RequestBuilder) {
        let data = tarball(seed, key, version);
        let (name, release) = parse_key(key).unwrap_or_default();
        let request = http
            .put(format!("{url}/npm/{NPM_REPO}/{name}"))
            .json(&publish_document(name, release, &data));
        (data, request)
    }

    fn resolve<'a>(
        &'a self,
        http: &'a reqwest::Client,
        url: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Resolved> {
        Box::pin(resolve(http, url, key))
    }
}

/// Resolves `key` as `npm install` does: the abbreviated packument, then the tarball at the
/// URL it lists, checked against the integrity it lists.
async fn resolve(http: &reqwest::Client, url: &str, key: &str) -> Resolved {
    let Some((name, version)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not an npm key".into());
    };
    let request = http
        .get(format!("{url}/npm/{NPM_REPO}/{name}"))
        .header(reqwest::header::ACCEPT, CORGI);
    let packument = match read_json(request).await {
        Ok(Some(packument)) => packument,
        Ok(None) => return (Outcome::Ok, Some(404), None, String::new()),
        Err(failed) => return failed,
    };
    let dist = &packument["versions"][version]["dist"];
    let (Some(listed), Some(tarball_url)) = (dist["integrity"].as_str(), dist["tarball"].as_str())
    else {
        // The packument does not list the version: absent.
        return (Outcome::Ok, Some(404), None, String::new());
    };
    fetch_listed(http, tarball_url, listed, integrity).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_tarballs_are_a_function_of_seed_key_and_version() {
        let key = Npm.key(3, 7);
        assert_eq!(parse_key(&key), Some(("chaos-c3", "1.0.7")));
        assert_eq!(
            file_path(&key).as_deref(),
            Some("/npm/np/chaos-c3/-/chaos-c3-1.0.7.tgz")
        );
        assert_eq!(tarball(1, &key, 1), tarball(1, &key, 1));
        assert_ne!(tarball(1, &key, 1), tarball(1, &key, 2));
        assert!(tarball(1, &key, 1).starts_with(&[0x1f, 0x8b]));
    }
}
