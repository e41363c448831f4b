//! Python packages in the workload: twine-style uploads of wheels to the `pypi` repository
//! [`PYPI_REPO`], overwrite attempts (which must be refused), uploads to a mirror (refused),
//! and resolves: the project page (PEP 691 JSON) is read on any node of any region and the
//! file is downloaded from the URL it lists, recorded in the [`History`] like file reads.
//!
//! A wheel file is a key, `pypi:py/<project>/<version>/<filename>`, written like a key of an
//! immutable repository: version `v` of the key is a wheel whose payload is a pure function of
//! `(seed, key, v)`; version 1 is the release, a later version the same file name with other
//! bytes, which the server must refuse. Client `c` owns project `chaos-c{c}`.

use std::io::Write;

use crate::content::{content, sha256_hex};
use crate::history::{History, Op, OpKind, Outcome};
use crate::workload::{classify_write, region_name, transport_outcome};

/// The `pypi` repository.
pub const PYPI_REPO: &str = "py";
/// Every PyPI key starts with this.
pub const PYPI_KEY_PREFIX: &str = "pypi:";
/// Keys uploaded to mirrors start with this (they must never exist anywhere).
pub const PYPI_MIRROR_PROBE_PREFIX: &str = "pypi:py/mirror-probe-";
/// What a refused upload to a mirror is recorded with (the body names the mirror).
pub const PYPI_MIRROR_REFUSAL: &str = "READ_ONLY_MIRROR";
const BOUNDARY: &str = "arcaChaosBoundary";

pub fn is_pypi_key(key: &str) -> bool {
    key.starts_with(PYPI_KEY_PREFIX)
}

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

/// A refusal's detail: `READ_ONLY_MIRROR` when the body says a mirror refused, else its start.
async fn detail(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    if text.contains("read-only mirror") {
        PYPI_MIRROR_REFUSAL.to_string()
    } else {
        text.chars().take(120).collect()
    }
}

/// Uploads version `version` of `key` as twine does and records it.
#[allow(clippy::too_many_arguments)]
pub async fn record_upload(
    http: &reqwest::Client,
    history: &History,
    seed: u64,
    client: u32,
    kind: OpKind,
    key: &str,
    version: u64,
    (region, node, url): (usize, u64, String),
) -> Outcome {
    let data = wheel(seed, key, version);
    let start_ms = history.now_ms();
    let result = http
        .post(format!("{url}/pypi/{PYPI_REPO}/"))
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(upload_body(key, &data))
        .send()
        .await;
    let (outcome, status, detail) = classify_write(result, detail).await;
    history.push(Op {
        id: 0,
        client,
        kind,
        key: key.to_string(),
        version: Some(version),
        sha256: Some(sha256_hex(&data)),
        region: region_name(region),
        node,
        start_ms,
        end_ms: history.now_ms(),
        outcome,
        status,
        detail,
        blob_mismatch: None,
    });
    outcome
}

/// Resolves `key` as pip does: the project page, then the file at the URL it lists. A project
/// or file the page does not list reads as absent; a listed hash that is not the downloaded
/// file's is recorded as the state `index-mismatch:<listed>` (never acceptable).
pub async fn record_resolve(
    http: &reqwest::Client,
    history: &History,
    client: u32,
    key: &str,
    (region, node, url): (usize, u64, String),
) {
    let start_ms = history.now_ms();
    let (outcome, status, sha, detail) = resolve(http, &url, key).await;
    history.push(Op {
        id: 0,
        client,
        kind: OpKind::Get,
        key: key.to_string(),
        version: None,
        sha256: sha,
        region: region_name(region),
        node,
        start_ms,
        end_ms: history.now_ms(),
        outcome,
        status,
        detail,
        blob_mismatch: None,
    });
}

async fn resolve(
    http: &reqwest::Client,
    url: &str,
    key: &str,
) -> (Outcome, Option<u16>, Option<String>, String) {
    let Some((project, _, filename)) = parse_key(key) else {
        return (Outcome::Failed, None, None, "not a pypi key".into());
    };
    let page = http
        .get(format!("{url}/pypi/{PYPI_REPO}/simple/{project}/"))
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json",
        )
        .send()
        .await;
    let page = match page {
        Ok(response) if response.status() == 404 => {
            return (Outcome::Ok, Some(404), None, String::new())
        }
        Ok(response) if response.status() == 200 => {
            match response.json::<serde_json::Value>().await {
                Ok(page) => page,
                Err(error) => return (Outcome::Failed, Some(200), None, error.to_string()),
            }
        }
        Ok(response) => {
            let status = response.status().as_u16();
            return (Outcome::Failed, Some(status), None, detail(response).await);
        }
        Err(error) => return (transport_outcome(&error), None, None, error.to_string()),
    };
    let Some(file) = page["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == filename)
    else {
        return (Outcome::Ok, Some(404), None, String::new());
    };
    let listed = file["hashes"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(file_url) = file["url"].as_str() else {
        return (
            Outcome::Failed,
            Some(200),
            None,
            "the page lists no url".into(),
        );
    };
    match http.get(file_url).send().await {
        Ok(response) if response.status() == 200 => match response.bytes().await {
            Ok(body) => {
                let sha = sha256_hex(&body);
                if sha == listed {
                    (Outcome::Ok, Some(200), Some(sha), String::new())
                } else {
                    let state = format!("index-mismatch:{listed}");
                    (
                        Outcome::Ok,
                        Some(200),
                        Some(state),
                        format!("file is {sha}"),
                    )
                }
            }
            Err(error) => (Outcome::Failed, Some(200), None, error.to_string()),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            (Outcome::Failed, Some(status), None, detail(response).await)
        }
        Err(error) => (transport_outcome(&error), None, None, error.to_string()),
    }
}

/// The PyPI part of the workload: uploads (new releases, retries, overwrite attempts), an
/// upload to a mirror now and then, resolves.
#[derive(Default)]
pub struct PackagesPart {
    keys: crate::workload::KeyRegistry,
}

impl crate::workload::WorkloadPart for PackagesPart {
    fn format(&self) -> &'static str {
        "pypi"
    }

    fn share(&self) -> u32 {
        12
    }

    fn client(&self, client: u32) -> Box<dyn crate::workload::ClientPart> {
        Box::new(PackagesClient {
            keys: self.keys.clone(),
            project: format!("chaos-c{client}"),
            releases: Vec::new(),
            probes: 0,
        })
    }
}

struct PackagesClient {
    keys: crate::workload::KeyRegistry,
    project: String,
    /// The next content version of each release's key (1 is the release itself).
    releases: Vec<u64>,
    probes: u64,
}

impl crate::workload::ClientPart for PackagesClient {
    fn step<'a>(
        &'a mut self,
        step: &'a crate::workload::Step<'a>,
        roll: u32,
        rng: &'a mut rand::rngs::StdRng,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.run(step, roll, rng))
    }
}

impl PackagesClient {
    async fn run(
        &mut self,
        step: &crate::workload::Step<'_>,
        roll: u32,
        rng: &mut rand::rngs::StdRng,
    ) {
        use crate::workload::{pick_mirror_node, pick_node, pick_primary_node};
        use rand::Rng;
        let (http, history, endpoints) = (step.http, step.history, step.endpoints);
        let has_mirror = !endpoints.mirrors().is_empty();
        match roll {
            0..5 => {
                // A new release most of the time; otherwise a retry or an overwrite attempt
                // of an earlier one (its next content version).
                let reuse = !self.releases.is_empty() && rng.random_range(0..3u32) == 0;
                let release = if reuse {
                    rng.random_range(0..self.releases.len())
                } else {
                    self.releases.push(1);
                    self.releases.len() - 1
                };
                let key = key(&self.project, release as u64);
                self.keys.add(&key);
                // A retry resends version 1 until it was acknowledged once; after that a
                // reuse is an overwrite attempt with the next version.
                let version = self.releases[release];
                let outcome = record_upload(
                    http,
                    history,
                    step.seed,
                    step.client,
                    OpKind::PutImmutable,
                    &key,
                    version,
                    pick_primary_node(endpoints, rng),
                )
                .await;
                if outcome == Outcome::Ok {
                    self.releases[release] += 1;
                }
            }
            5..6 if has_mirror => {
                self.probes += 1;
                let key = format!(
                    "{PYPI_MIRROR_PROBE_PREFIX}c{}/1.0.{}/mirror_probe_c{}-1.0.{}-py3-none-any.whl",
                    step.client, self.probes, step.client, self.probes
                );
                record_upload(
                    http,
                    history,
                    step.seed,
                    step.client,
                    OpKind::MirrorWrite,
                    &key,
                    1,
                    pick_mirror_node(endpoints, rng),
                )
                .await;
            }
            _ => {
                let up = endpoints.up();
                if let (Some(key), false) = (self.keys.pick(rng), up.is_empty()) {
                    let region = up[rng.random_range(0..up.len())];
                    let (node, url) = pick_node(endpoints, region, rng);
                    record_resolve(http, history, step.client, &key, (region, node, url)).await;
                }
            }
        }
    }
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
