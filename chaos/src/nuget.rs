//! NuGet packages in the workload: pushes as nuget.exe sends them (`PUT /api/v2/package/`) to
//! the `nuget` repository [`NUGET_REPO`], overwrite attempts and duplicates (refused with 409,
//! as NuGet refuses every duplicate push), pushes to a mirror (refused with 403), and resolves
//! as a restore does: the flat container's version list is read on any node of any region and,
//! when it lists the version, the `.nupkg` is downloaded (the flat container lists no digest:
//! the downloaded bytes are checked against every version written, invariant 2).
//!
//! A version is a key `nuget:nu/<id>@<version>` (the node describes a push as
//! `push nu/<id>@<version> …`); version `v` of the key is a `.nupkg` (a zip without timestamps:
//! `<id>.nuspec` naming the id and version, and a payload `f(seed, key, v)`). Client `c` owns
//! package `chaos-c{c}`.

use std::io::Write as _;

use futures::future::BoxFuture;

use crate::content::{content, sha256_hex};
use crate::history::Outcome;
use crate::packages::{detail, read_json, PackageFormat, Resolved, Spec};
use crate::workload::transport_outcome;

/// The `nuget` repository.
pub const NUGET_REPO: &str = "nu";
/// Every NuGet key starts with this.
pub const NUGET_KEY_PREFIX: &str = "nuget:";
/// Keys pushed to mirrors start with this (they must never exist anywhere).
pub const NUGET_MIRROR_PROBE_PREFIX: &str = "nuget:nu/mirror-probe-";

/// `(id, version)` of a NuGet key.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(NUGET_KEY_PREFIX)?
        .strip_prefix(NUGET_REPO)?
        .strip_prefix('/')?
        .split_once('@')
}

/// The URL path of a key's `.nupkg` in the flat container.
pub fn file_path(key: &str) -> Option<String> {
    let (id, version) = parse_key(key)?;
    Some(format!(
        "/nuget/{NUGET_REPO}/v3/package/{id}/{version}/{id}.{version}.nupkg"
    ))
}

/// The `.nupkg` pushed as `version` of `key`.
pub fn nupkg(seed: u64, key: &str, version: u64) -> Vec<u8> {
    let Some((id, release)) = parse_key(key) else {
        return Vec::new();
    };
    let nuspec = format!(
        "<?xml version=\"1.0\"?><package><metadata><id>{id}</id><version>{release}</version><authors>chaos</authors><description>a chaos package</description></metadata></package>"
    );
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut add = |name: &str, data: &[u8]| -> zip::result::ZipResult<()> {
        zip.start_file(name, options)?;
        zip.write_all(data)?;
        Ok(())
    };
    let built = add(&format!("{id}.nuspec"), nuspec.as_bytes())
        .and_then(|()| add("content/payload.bin", &content(seed, key, version)));
    match built.and_then(|()| zip.finish()) {
        Ok(cursor) => cursor.into_inner(),
        Err(_) => Vec::new(),
    }
}

/// The NuGet part of the workload ([`crate::packages`]).
pub struct Nuget;

impl PackageFormat for Nuget {
    fn spec(&self) -> Spec {
        Spec {
            format: "nuget",
            repo: NUGET_REPO,
            key_prefix: NUGET_KEY_PREFIX,
            mirror_probe_prefix: NUGET_MIRROR_PROBE_PREFIX,
            share: 12,
        }
    }

    fn key(&self, client: u32, release: u64) -> String {
        format!("{NUGET_KEY_PREFIX}{NUGET_REPO}/chaos-c{client}@1.0.{release}")
    }

    fn mirror_probe_key(&self, client: u32, probe: u64) -> String {
        format!("{NUGET_MIRROR_PROBE_PREFIX}c{client}@1.0.{probe}")
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
        let data = nupkg(seed, key, version);
        let request = http
            .put(format!("{url}/nuget/{NUGET_REPO}/api/v2/package/"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
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

/// Resolves `key` as a restore does: the flat container's versions (one it does not list reads
/// as absent), then the `.nupkg`.
async fn resolve(http: &reqwest::Client, url: &str, key: &str) -> Resolved {
    let Some((id, version)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not a nuget key".into());
    };
    let absent = (Outcome::Ok, Some(404), None, String::new());
    let versions = format!("{url}/nuget/{NUGET_REPO}/v3/package/{id}/index.json");
    let listed = match read_json(http.get(versions)).await {
        Ok(Some(index)) => index["versions"]
            .as_array()
            .is_some_and(|all| all.iter().any(|v| v == version)),
        Ok(None) => return absent,
        Err(failed) => return failed,
    };
    if !listed {
        return absent;
    }
    let file = format!("{url}{}", file_path(key).unwrap_or_default());
    match http.get(file).send().await {
        Ok(response) if response.status() == 200 => match response.bytes().await {
            Ok(body) => (
                Outcome::Ok,
                Some(200),
                Some(sha256_hex(&body)),
                String::new(),
            ),
            Err(error) => (Outcome::Failed, Some(200), None, error.to_string()),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            (Outcome::Failed, Some(status), None, detail(response).await)
        }
        Err(error) => (transport_outcome(&error), None, None, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_packages_are_a_function_of_seed_key_and_version() {
        let key = Nuget.key(3, 7);
        assert_eq!(parse_key(&key), Some(("chaos-c3", "1.0.7")));
        assert_eq!(
            file_path(&key).as_deref(),
            Some("/nuget/nu/v3/package/chaos-c3/1.0.7/chaos-c3.1.0.7.nupkg")
        );
        assert_eq!(nupkg(1, &key, 1), nupkg(1, &key, 1));
        assert_ne!(nupkg(1, &key, 1), nupkg(1, &key, 2));
        assert!(nupkg(1, &key, 1).starts_with(b"PK"));
    }
}
