//! Maven artifacts in the workload: deploys as `mvn deploy` sends them (a `PUT` of the jar to
//! its Maven 2 layout path) to the `maven` repository [`MAVEN_REPO`], retries and overwrite
//! attempts (refused with 409), deploys to a mirror (refused with 403), and resolves as Maven
//! does: the artifact's `maven-metadata.xml` is read on any node of any region, and when it
//! lists the version the jar is downloaded and checked against its `.sha1` sibling.
//!
//! A version is a key `maven:mv/com.chaos:<artifact>:<version>` (the node names a deploy
//! `deploy mv/com.chaos:<artifact>:<version> …`, so a divergent write's summary names the key
//! without its `maven:` prefix); version `v` of the key is a jar whose bytes are a pure function
//! of `(seed, key, v)`. Client `c` owns artifact `com.chaos:c{c}`.

use futures::future::BoxFuture;
use sha1::Digest as _;

use crate::content::content;
use crate::history::Outcome;
use crate::packages::{fetch_listed, read_index, PackageFormat, Resolved, Spec};

/// The `maven` repository.
pub const MAVEN_REPO: &str = "mv";
/// Every Maven key starts with this.
pub const MAVEN_KEY_PREFIX: &str = "maven:";
/// The groupId of every artifact of the workload.
pub const MAVEN_GROUP: &str = "com.chaos";
/// Keys deployed to mirrors start with this (they must never exist anywhere).
pub const MAVEN_MIRROR_PROBE_PREFIX: &str = "maven:mv/com.chaos:mirror-probe-";

/// `(artifactId, version)` of a Maven key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(MAVEN_KEY_PREFIX)?
        .strip_prefix(MAVEN_REPO)?
        .strip_prefix('/')?
        .strip_prefix(MAVEN_GROUP)?
        .strip_prefix(':')?
        .split_once(':')
}

/// The URL path of an artifact's directory (`/maven/mv/com/chaos/<artifact>`).
fn artifact_path(artifact: &str) -> String {
    format!(
        "/maven/{MAVEN_REPO}/{}/{artifact}",
        MAVEN_GROUP.replace('.', "/")
    )
}

/// The URL path of a key's jar.
pub fn file_path(key: &str) -> Option<String> {
    let (artifact, version) = parse_key(key)?;
    Some(format!(
        "{}/{version}/{artifact}-{version}.jar",
        artifact_path(artifact)
    ))
}

/// Lowercase hex sha1, what Maven writes in a `.sha1` file and compares on download.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(bytes))
}

/// The Maven part of the workload ([`crate::packages`]).
pub struct Maven;

impl PackageFormat for Maven {
    fn spec(&self) -> Spec {
        Spec {
            format: "maven",
            repo: MAVEN_REPO,
            key_prefix: MAVEN_KEY_PREFIX,
            mirror_probe_prefix: MAVEN_MIRROR_PROBE_PREFIX,
            share: 12,
        }
    }

    fn key(&self, client: u32, release: u64) -> String {
        format!("{MAVEN_KEY_PREFIX}{MAVEN_REPO}/{MAVEN_GROUP}:c{client}:1.0.{release}")
    }

    fn mirror_probe_key(&self, client: u32, probe: u64) -> String {
        format!("{MAVEN_MIRROR_PROBE_PREFIX}c{client}:1.0.{probe}")
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
        let data = content(seed, key, version);
        let path = file_path(key).unwrap_or_default();
        let request = http
            .put(format!("{url}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/java-archive")
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

/// Resolves `key` as Maven does: the artifact's `maven-metadata.xml` (a version it does not
/// list reads as absent), then the jar, checked against the `.sha1` the node serves for it.
async fn resolve(http: &reqwest::Client, url: &str, key: &str) -> Resolved {
    let Some((artifact, version)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not a maven key".into());
    };
    let absent = (Outcome::Ok, Some(404), None, String::new());
    let metadata = format!("{url}{}/maven-metadata.xml", artifact_path(artifact));
    match read_index(http.get(metadata)).await {
        Ok(Some(document)) if document.contains(&format!("<version>{version}</version>")) => {}
        Ok(_) => return absent,
        Err(failed) => return failed,
    }
    let jar = format!("{url}{}", file_path(key).unwrap_or_default());
    // Listed but without a checksum is a failed read, as a listed file that does not download
    // is for the other formats (a node replacing its state after a failover can answer so).
    let listed = match read_index(http.get(format!("{jar}.sha1"))).await {
        Ok(Some(sha1)) => sha1.trim().to_string(),
        Ok(None) => {
            let detail = "the metadata lists the version but its .sha1 is 404".to_string();
            return (Outcome::Failed, Some(404), None, detail);
        }
        Err(failed) => return failed,
    };
    fetch_listed(http, &jar, &listed, sha1_hex).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_layout_paths() {
        let key = Maven.key(3, 7);
        assert_eq!(key, "maven:mv/com.chaos:c3:1.0.7");
        assert_eq!(parse_key(&key), Some(("c3", "1.0.7")));
        assert_eq!(
            file_path(&key).as_deref(),
            Some("/maven/mv/com/chaos/c3/1.0.7/c3-1.0.7.jar")
        );
        let probe = Maven.mirror_probe_key(3, 1);
        assert_eq!(
            file_path(&probe).as_deref(),
            Some("/maven/mv/com/chaos/mirror-probe-c3/1.0.1/mirror-probe-c3-1.0.1.jar")
        );
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
