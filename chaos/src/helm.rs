//! Helm charts in the workload: uploads as CI does them (chartmuseum's `POST /api/charts` with
//! the archive) to the `helm` repository [`HELM_REPO`], retries and overwrite attempts (refused
//! with 409), uploads to a mirror (refused with 403), and resolves as helm does: `index.yaml` is
//! read on any node of any region and, when it lists the version, the archive is downloaded
//! from the entry's (relative) URL and checked against the entry's `digest` (sha256).
//!
//! A version is a key `helm:hm/<chart>-<version>.tgz` (the node describes an upload as
//! `upload hm/<chart>-<version>.tgz …`); version `v` of the key is a chart archive (a gzipped
//! tar with fixed headers: `<chart>/Chart.yaml` naming the chart and version, and a payload
//! `f(seed, key, v)`). Client `c` owns chart `chaos-c{c}`.

use futures::future::BoxFuture;

use crate::content::{content, sha256_hex, tar_gz};
use crate::history::Outcome;
use crate::packages::{fetch_listed, read_json, PackageFormat, Resolved, Spec};

/// The `helm` repository.
pub const HELM_REPO: &str = "hm";
/// Every Helm key starts with this.
pub const HELM_KEY_PREFIX: &str = "helm:";
/// Keys uploaded to mirrors start with this (they must never exist anywhere).
pub const HELM_MIRROR_PROBE_PREFIX: &str = "helm:hm/mirror-probe-";

/// `(chart, version)` of a Helm key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let file = key
        .strip_prefix(HELM_KEY_PREFIX)?
        .strip_prefix(HELM_REPO)?
        .strip_prefix('/')?
        .strip_suffix(".tgz")?;
    // Versions here are `1.0.{n}`: the chart name is everything before the last `-`.
    file.rsplit_once('-')
}

/// The URL path of a key's archive.
pub fn file_path(key: &str) -> Option<String> {
    let (chart, version) = parse_key(key)?;
    Some(format!("/helm/{HELM_REPO}/charts/{chart}-{version}.tgz"))
}

/// The chart archive uploaded as `version` of `key`.
pub fn archive(seed: u64, key: &str, version: u64) -> Vec<u8> {
    let Some((chart, release)) = parse_key(key) else {
        return Vec::new();
    };
    let chart_yaml =
        format!("apiVersion: v2\nname: {chart}\nversion: {release}\ndescription: a chaos chart\n");
    let payload = content(seed, key, version);
    tar_gz(&[
        (&format!("{chart}/Chart.yaml"), chart_yaml.as_bytes()),
        (&format!("{chart}/files/payload.bin"), &payload),
    ])
}

/// The Helm part of the workload ([`crate::packages`]).
pub struct Helm;

impl PackageFormat for Helm {
    fn spec(&self) -> Spec {
        Spec {
            format: "helm",
            repo: HELM_REPO,
            key_prefix: HELM_KEY_PREFIX,
            mirror_probe_prefix: HELM_MIRROR_PROBE_PREFIX,
            share: 12,
        }
    }

    fn key(&self, client: u32, release: u64) -> String {
        format!("{HELM_KEY_PREFIX}{HELM_REPO}/chaos-c{client}-1.0.{release}.tgz")
    }

    fn mirror_probe_key(&self, client: u32, probe: u64) -> String {
        format!("{HELM_MIRROR_PROBE_PREFIX}c{client}-1.0.{probe}.tgz")
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
        let data = archive(seed, key, version);
        let request = http
            .post(format!("{url}/helm/{HELM_REPO}/api/charts"))
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(data.clone());
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

/// Resolves `key` as helm does: `index.yaml` (a version it does not list reads as absent), then
/// the archive at the entry's URL, checked against the entry's `digest`.
async fn resolve(http: &reqwest::Client, url: &str, key: &str) -> Resolved {
    let Some((chart, version)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not a helm key".into());
    };
    let repository = format!("{url}/helm/{HELM_REPO}");
    let index = match read_json(http.get(format!("{repository}/index.yaml"))).await {
        Ok(Some(index)) => index,
        // A repository always has an index (an empty one before its first upload).
        Ok(None) => return (Outcome::Failed, Some(404), None, "no index.yaml".into()),
        Err(failed) => return failed,
    };
    let entry = index["entries"][chart]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["version"] == version));
    let Some(entry) = entry else {
        return (Outcome::Ok, Some(404), None, String::new());
    };
    let (Some(listed), Some(file)) = (entry["digest"].as_str(), entry["urls"][0].as_str()) else {
        let detail = "the entry has no digest or url".to_string();
        return (Outcome::Failed, Some(200), None, detail);
    };
    fetch_listed(http, &format!("{repository}/{file}"), listed, sha256_hex).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_archives_are_a_function_of_seed_key_and_version() {
        let key = Helm.key(3, 7);
        assert_eq!(parse_key(&key), Some(("chaos-c3", "1.0.7")));
        assert_eq!(
            file_path(&key).as_deref(),
            Some("/helm/hm/charts/chaos-c3-1.0.7.tgz")
        );
        let probe = Helm.mirror_probe_key(3, 1);
        assert_eq!(parse_key(&probe), Some(("mirror-probe-c3", "1.0.1")));
        assert_eq!(archive(1, &key, 1), archive(1, &key, 1));
        assert_ne!(archive(1, &key, 1), archive(1, &key, 2));
        assert!(archive(1, &key, 1).starts_with(&[0x1f, 0x8b]));
    }
}
