//! Python packages in the workload: twine-style uploads of wheels to the `pypi` repository
//! [`PYPI_REPO`], overwrite attempts (which must be refused), uploads to a mirror (refused),
//! and resolves: the project page (PEP 691 JSON) is read on any node of any region and the
//! file is downloaded from the URL it lists (the client loop is [`crate::packages`]).
//!
//! A wheel file is a key, `pypi:py/<project>/<version>/<filename>`, written like a key of an
//! immutable repository: version `v` of the key is a wheel whose payload is a pure function of
//! `(seed, key, v)`; version 1 is the release, a later version the same file name with other
//! bytes, which the server must refuse. Client `c` owns project `chaos-c{c}`.

use std::io::Write;

use futures::future::BoxFuture;

use crate::content::{content, sha256_hex};
use crate::history::Outcome;
use crate::packages::{fetch_listed, read_json, PackageFormat, Resolved, Spec};

/// The `pypi` repository.
pub const PYPI_REPO: &str = "py";
/// Every PyPI key starts with this.
pub const PYPI_KEY_PREFIX: &str = "pypi:";
/// Keys uploaded to mirrors start with this (they must never exist anywhere).
pub const PYPI_MIRROR_PROBE_PREFIX: &str = "pypi:py/mirror-probe-";
const BOUNDARY: &str = "arcaChaosBoundary";

/// The key of release `release` of `project`'s wheel.
pub fn key(project: &str, release: u64) -> String {
    let dist = project.replace('-', "_");
    format!("{PYPI_KEY_PREFIX}{PYPI_REPO}/{project}/1.0.{release}/{dist}-1.0.{release}-py3-none-any.whl")
}

/// `(project, version, filename)` of a PyPI key.
pub fn parse_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key
        .strip_prefix(PYPI_KEY_PREFIX)?
        .strip_prefix(PYPI_REPO)?
        .strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// The URL path of a key's file.
pub fn file_path(key: &str) -> Option<String> {
    let (project, version, filename) = parse_key(key)?;
    Some(format!(
        "/pypi/{PYPI_REPO}/files/{project}/{version}/{filename}"
    ))
}

/// The wheel uploaded as `version` of `key`: a zip (no timestamps: the same bytes every time)
/// with the payload and the METADATA naming the key's project and version.
pub fn wheel(seed: u64, key: &str, version: u64) -> Vec<u8> {
    let Some((project, release, _)) = parse_key(key) else {
        return Vec::new();
    };
    let dist = project.replace('-', "_");
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut add = |name: String, data: &[u8]| -> zip::result::ZipResult<()> {
        zip.start_file(name, stored)?;
        zip.write_all(data)?;
        Ok(())
    };
    let metadata = format!("Metadata-Version: 2.1\nName: {project}\nVersion: {release}\n\n");
    let built = add(format!("{dist}/payload.bin"), &content(seed, key, version)).and_then(|()| {
        add(
            format!("{dist}-{release}.dist-info/METADATA"),
            metadata.as_bytes(),
        )
    });
    match built.and_then(|()| zip.finish()) {
        Ok(cursor) => cursor.into_inner(),
        Err(_) => Vec::new(),
    }
}

fn upload_body(key: &str, data: &[u8]) -> Vec<u8> {
    match parse_key(key) {
        Some((project, version, filename)) => multipart_upload(project, version, filename, data),
        None => Vec::new(),
    }
}

/// The boundary of [`multipart_upload`] bodies.
pub const UPLOAD_BOUNDARY: &str = BOUNDARY;

/// A wheel upload as twine sends it (`Content-Type: multipart/form-data;
/// boundary=`[`UPLOAD_BOUNDARY`]): the form fields, then the file as `content`.
pub fn multipart_upload(project: &str, version: &str, filename: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 1024);
    for (name, value) in [
        (":action", "file_upload".to_string()),
        ("protocol_version", "1".into()),
        ("name", project.to_string()),
        ("version", version.to_string()),
        ("filetype", "bdist_wheel".into()),
        ("pyversion", "py3".into()),
        ("sha256_digest", sha256_hex(data)),
    ] {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The PyPI part of the workload ([`crate::packages`]).
pub struct Pypi;

impl PackageFormat for Pypi {
    fn spec(&self) -> Spec {
        Spec {
            format: "pypi",
            repo: PYPI_REPO,
            key_prefix: PYPI_KEY_PREFIX,
            mirror_probe_prefix: PYPI_MIRROR_PROBE_PREFIX,
            share: 12,
        }
    }

    fn key(&self, client: u32, release: u64) -> String {
        key(&format!("chaos-c{client}"), release)
    }

    fn mirror_probe_key(&self, client: u32, probe: u64) -> String {
        format!(
            "{PYPI_MIRROR_PROBE_PREFIX}c{client}/1.0.{probe}/mirror_probe_c{client}-1.0.{probe}-py3-none-any.whl"
        )
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
        let data = wheel(seed, key, version);
        let request = http
            .post(format!("{url}/pypi/{PYPI_REPO}/"))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(upload_body(key, &data));
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

/// Resolves `key` as pip does: the project page (PEP 691 JSON), then the file at the URL it
/// lists, checked against the sha256 the page lists.
async fn resolve(http: &reqwest::Client, url: &str, key: &str) -> Resolved {
    let Some((project, _, filename)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not a pypi key".into());
    };
    let request = http
        .get(format!("{url}/pypi/{PYPI_REPO}/simple/{project}/"))
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json",
        );
    let page = match read_json(request).await {
        Ok(Some(page)) => page,
        Ok(None) => return (Outcome::Ok, Some(404), None, String::new()),
        Err(failed) => return failed,
    };
    let Some(file) = page["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == filename)
    else {
        return (Outcome::Ok, Some(404), None, String::new());
    };
    let listed = file["hashes"]["sha256"].as_str().unwrap_or_default();
    let Some(file_url) = file["url"].as_str() else {
        return (
            Outcome::Failed,
            Some(200),
            None,
            "the page lists no url".into(),
        );
    };
    fetch_listed(http, file_url, listed, sha256_hex).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_wheels_are_a_function_of_seed_key_and_version() {
        let key = key("chaos-c3", 7);
        assert_eq!(
            parse_key(&key),
            Some(("chaos-c3", "1.0.7", "chaos_c3-1.0.7-py3-none-any.whl"))
        );
        assert_eq!(
            file_path(&key).as_deref(),
            Some("/pypi/py/files/chaos-c3/1.0.7/chaos_c3-1.0.7-py3-none-any.whl")
        );
        assert_eq!(wheel(1, &key, 1), wheel(1, &key, 1));
        assert_ne!(wheel(1, &key, 1), wheel(1, &key, 2));
        assert!(wheel(1, &key, 1).starts_with(b"PK"));
    }
}
