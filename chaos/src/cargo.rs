//! Crates in the workload: publishes as `cargo publish` sends them (the binary frame of
//! metadata and `.crate`, `PUT /api/v1/crates/new`) to the `cargo` repository [`CARGO_REPO`],
//! retries and overwrite attempts (refused with 409), publishes to a mirror (refused with 403),
//! and resolves as cargo does: the crate's sparse index file is read on any node of any region
//! and, when it lists the version, the `.crate` is downloaded and checked against the `cksum`
//! (sha256) the line lists.
//!
//! A version is a key `cargo:rs/<crate>@<version>` (the node describes a publish as
//! `publish rs/<crate>@<version> …`); version `v` of the key is a `.crate` (a gzipped tar with
//! fixed headers: `Cargo.toml` naming the crate and version, and a payload `f(seed, key, v)`).
//! Client `c` owns crate `chaos-c{c}`.

use futures::future::BoxFuture;

use crate::content::{content, sha256_hex, tar_gz};
use crate::history::Outcome;
use crate::packages::{fetch_listed, read_index, PackageFormat, Resolved, Spec};

/// The `cargo` repository.
pub const CARGO_REPO: &str = "rs";
/// Every cargo key starts with this.
pub const CARGO_KEY_PREFIX: &str = "cargo:";
/// Keys published to mirrors start with this (they must never exist anywhere).
pub const CARGO_MIRROR_PROBE_PREFIX: &str = "cargo:rs/mirror-probe-";

/// `(crate, version)` of a cargo key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(CARGO_KEY_PREFIX)?
        .strip_prefix(CARGO_REPO)?
        .strip_prefix('/')?
        .split_once('@')
}

/// The URL path a key's `.crate` downloads from (`config.json`'s `dl` plus cargo's default
/// template).
pub fn file_path(key: &str) -> Option<String> {
    let (name, version) = parse_key(key)?;
    Some(format!(
        "/cargo/{CARGO_REPO}/api/v1/crates/{name}/{version}/download"
    ))
}

/// The sparse index path of a crate name (the names here are 4 characters or more).
fn index_path(name: &str) -> String {
    format!(
        "/cargo/{CARGO_REPO}/index/{}/{}/{name}",
        &name[..2],
        &name[2..4]
    )
}

/// The `.crate` published as `version` of `key`.
pub fn crate_file(seed: u64, key: &str, version: u64) -> Vec<u8> {
    let Some((name, release)) = parse_key(key) else {
        return Vec::new();
    };
    let root = format!("{name}-{release}");
    let manifest = format!("[package]\nname = \"{name}\"\nversion = \"{release}\"\n");
    let payload = content(seed, key, version);
    tar_gz(&[
        (&format!("{root}/Cargo.toml"), manifest.as_bytes()),
        (&format!("{root}/payload.bin"), &payload),
    ])
}

/// The body `cargo publish` sends for `name` `version` with `.crate` `file`.
pub fn publish_frame(name: &str, version: &str, file: &[u8]) -> Vec<u8> {
    let metadata = serde_json::json!({
        "name": name, "vers": version, "deps": [], "features": {}, "authors": [],
        "description": "a chaos crate", "license": "MIT", "links": null
    })
    .to_string();
    let mut body = Vec::with_capacity(metadata.len() + file.len() + 8);
    body.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    body.extend_from_slice(metadata.as_bytes());
    body.extend_from_slice(&(file.len() as u32).to_le_bytes());
    body.extend_from_slice(file);
    body
}

/// The cargo part of the workload ([`crate::packages`]).
pub struct Cargo;

impl PackageFormat for Cargo {
    fn spec(&self) -> Spec {
        Spec {
            format: "cargo",
            repo: CARGO_REPO,
            key_prefix: CARGO_KEY_PREFIX,
            mirror_probe_prefix: CARGO_MIRROR_PROBE_PREFIX,
            share: 12,
        }
    }

    fn key(&self, client: u32, release: u64) -> String {
        format!("{CARGO_KEY_PREFIX}{CARGO_REPO}/chaos-c{client}@1.0.{release}")
    }

    fn mirror_probe_key(&self, client: u32, probe: u64) -> String {
        format!("{CARGO_MIRROR_PROBE_PREFIX}c{client}@1.0.{probe}")
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
        let data = crate_file(seed, key, version);
        let (name, release) = parse_key(key).unwrap_or_default();
        let request = http
            .put(format!("{url}/cargo/{CARGO_REPO}/api/v1/crates/new"))
            .body(publish_frame(name, release, &data));
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

/// Resolves `key` as cargo does: the index file (a version it does not list reads as absent),
/// then the `.crate`, checked against the line's `cksum`.
async fn resolve(http: &reqwest::Client, url: &str, key: &str) -> Resolved {
    let Some((name, version)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not a cargo key".into());
    };
    let absent = (Outcome::Ok, Some(404), None, String::new());
    let index = match read_index(http.get(format!("{url}{}", index_path(name)))).await {
        Ok(Some(index)) => index,
        Ok(None) => return absent,
        Err(failed) => return failed,
    };
    let listed = index
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["vers"] == version)
        .and_then(|line| line["cksum"].as_str().map(str::to_string));
    let Some(listed) = listed else {
        return absent;
    };
    let file = format!("{url}{}", file_path(key).unwrap_or_default());
    fetch_listed(http, &file, &listed, sha256_hex).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_crates_are_a_function_of_seed_key_and_version() {
        let key = Cargo.key(3, 7);
        assert_eq!(parse_key(&key), Some(("chaos-c3", "1.0.7")));
        assert_eq!(
            file_path(&key).as_deref(),
            Some("/cargo/rs/api/v1/crates/chaos-c3/1.0.7/download")
        );
        assert_eq!(index_path("chaos-c3"), "/cargo/rs/index/ch/ao/chaos-c3");
        assert_eq!(
            index_path("mirror-probe-c3"),
            "/cargo/rs/index/mi/rr/mirror-probe-c3"
        );
        assert_eq!(crate_file(1, &key, 1), crate_file(1, &key, 1));
        assert_ne!(crate_file(1, &key, 1), crate_file(1, &key, 2));
        assert!(crate_file(1, &key, 1).starts_with(&[0x1f, 0x8b]));
        let frame = publish_frame("chaos-c3", "1.0.7", b"xyz");
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert!(frame[4..4 + len].starts_with(b"{"));
        assert!(frame.ends_with(b"xyz"));
    }
}
