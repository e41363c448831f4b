//! What `npm publish` and the metadata writes send: the document is checked here (names,
//! versions, the attachment's length and both digests, the tarball's own `package.json`)
//! before anything is stored.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha1::Digest as _;

use super::names::{check_tag, parse_version, PackageName};
use crate::error::Error;

/// Largest stored manifest (one version's `package.json`, as published).
pub const MAX_MANIFEST: usize = 1 << 20;
/// Longest readme kept for the packument (longer ones are cut, as the npm registry does).
pub const MAX_README: usize = 64 << 10;
/// Longest description or deprecation message.
pub const MAX_MESSAGE: usize = 4 << 10;
/// Most bytes unpacked while looking for the tarball's `package.json`.
const MAX_UNPACKED: u64 = 256 << 20;
/// Most tar entries looked at for it.
const MAX_ENTRIES: usize = 100_000;

/// The abbreviated manifest's fields (the npm registry's list).
const ABBREVIATED_FIELDS: &[&str] = &[
    "name",
    "version",
    "dependencies",
    "optionalDependencies",
    "devDependencies",
    "bundleDependencies",
    "bundledDependencies",
    "peerDependencies",
    "peerDependenciesMeta",
    "acceptDependencies",
    "bin",
    "directories",
    "engines",
    "os",
    "cpu",
    "libc",
    "funding",
    "_hasShrinkwrap",
];

/// Fields the server writes itself or keeps elsewhere.
const SERVER_FIELDS: &[&str] = &["dist", "deprecated", "readme", "readmeFilename"];

pub fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

/// A package document as a client PUTs it.
pub struct Document {
    pub name: String,
    pub versions: Map<String, Value>,
    pub dist_tags: BTreeMap<String, String>,
    pub attachments: Map<String, Value>,
    pub description: String,
    pub readme: String,
}

impl Document {
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let mut doc: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("the body is not a package document (JSON): {e}")))?;
        let name = match doc.remove("name") {
            Some(Value::String(name)) => name,
            _ => return Err(invalid("the document has no \"name\"")),
        };
        let object = |doc: &mut Map<String, Value>, key: &str| match doc.remove(key) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(invalid(format!("\"{key}\" is not an object"))),
        };
        let versions = object(&mut doc, "versions")?;
        let attachments = object(&mut doc, "_attachments")?;
        let mut dist_tags = BTreeMap::new();
        for (tag, version) in object(&mut doc, "dist-tags")? {
            let Value::String(version) = version else {
                return Err(invalid(format!("dist-tag {tag:?} is not a version string")));
            };
            dist_tags.insert(tag, version);
        }
        let text = |doc: &mut Map<String, Value>, key: &str| match doc.remove(key) {
            Some(Value::String(text)) => text,
            _ => String::new(),
        };
        Ok(Self {
            name,
            versions,
            dist_tags,
            attachments,
            description: bounded(text(&mut doc, "description"), MAX_MESSAGE),
            readme: bounded(text(&mut doc, "readme"), MAX_README),
        })
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// One version to publish, checked.
pub struct Publication {
    pub version: String,
    pub manifest: String,
    pub abbreviated: String,
    pub integrity: String,
    pub shasum: String,
    pub tarball: Vec<u8>,
    pub tags: Vec<String>,
}

/// Checks a publish document (one version and its tarball in `_attachments`) for `name`.
pub fn publication(name: &PackageName, doc: &mut Document) -> Result<Publication, Error> {
    if doc.attachments.len() != 1 {
        return Err(invalid(format!(
            "a publish carries one tarball in \"_attachments\", not {}",
            doc.attachments.len()
        )));
    }
    let Some((filename, attachment)) = doc.attachments.iter_mut().next() else {
        return Err(invalid("a publish carries its tarball in \"_attachments\""));
    };
    // npm names the attachment `@scope/name-1.0.0.tgz`; others leave the scope out.
    let version = doc
        .versions
        .keys()
        .find(|v| *filename == format!("{name}-{v}.tgz") || *filename == name.tarball(v.as_str()))
        .cloned()
        .ok_or_else(|| {
            invalid(format!(
                "the attachment {filename:?} is not the tarball of a version in \"versions\""
            ))
        })?;
    parse_version(&version).map_err(invalid)?;
    let Some(Value::Object(mut manifest)) = doc.versions.remove(&version) else {
        return Err(invalid(format!("version {version} is not an object")));
    };
    match (manifest.get("name"), manifest.get("version")) {
        (Some(Value::String(n)), Some(Value::String(v))) if n == name.as_str() && *v == version => {
        }
        _ => {
            return Err(invalid(format!(
                "versions[{version:?}] must have \"name\": {name:?} and \"version\": {version:?}"
            )))
        }
    }
    let dist = manifest
        .get("dist")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(format!("version {version} has no \"dist\"")))?;
    let field = |key: &str| dist.get(key).and_then(Value::as_str).map(str::to_string);
    let integrity = field("integrity")
        .ok_or_else(|| invalid(format!("version {version} has no dist.integrity")))?;
    let shasum =
        field("shasum").ok_or_else(|| invalid(format!("version {version} has no dist.shasum")))?;
    let data = match attachment.get_mut("data").map(Value::take) {
        Some(Value::String(data)) => data,
        _ => {
            return Err(invalid(format!(
                "the attachment {filename:?} has no \"data\""
            )))
        }
    };
    let tarball = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| invalid(format!("the attachment {filename:?} is not base64: {e}")))?;
    if let Some(length) = attachment.get("length").and_then(Value::as_u64) {
        if length != tarball.len() as u64 {
            return Err(invalid(format!(
                "the attachment {filename:?} says {length} bytes and holds {}",
                tarball.len()
            )));
        }
    }
    check_digests(&tarball, &integrity, &shasum)?;
    let mut tags = Vec::new();
    for (tag, tagged) in &doc.dist_tags {
        check_tag(tag).map_err(invalid)?;
        if *tagged == version {
            tags.push(tag.clone());
        }
    }
    let install_script = manifest
        .get("scripts")
        .and_then(Value::as_object)
        .is_some_and(|s| {
            ["preinstall", "install", "postinstall"]
                .iter()
                .any(|k| s.contains_key(*k))
        });
    if doc.readme.is_empty() {
        if let Some(Value::String(readme)) = manifest.get("readme") {
            doc.readme = bounded(readme.clone(), MAX_README);
        }
    }
    for key in SERVER_FIELDS {
        manifest.remove(*key);
    }
    let mut abbreviated: Map<String, Value> = ABBREVIATED_FIELDS
        .iter()
        .filter_map(|key| manifest.get(*key).map(|v| (key.to_string(), v.clone())))
        .collect();
    if install_script {
        abbreviated.insert("hasInstallScript".into(), Value::Bool(true));
    }
    let manifest = serde_json::to_string(&manifest).map_err(|e| Error::internal("encode", e))?;
    if manifest.len() > MAX_MANIFEST {
        return Err(invalid(format!(
            "the manifest of {version} is {} bytes; at most {MAX_MANIFEST} are kept",
            manifest.len()
        )));
    }
    let abbreviated =
        serde_json::to_string(&abbreviated).map_err(|e| Error::internal("encode", e))?;
    Ok(Publication {
        version,
        manifest,
        abbreviated,
        integrity,
        shasum: shasum.to_ascii_lowercase(),
        tarball,
        tags,
    })
}

/// The tarball's SHA-512 must be the `sha512-` entry of `integrity` and its SHA-1 `shasum`.
fn check_digests(tarball: &[u8], integrity: &str, shasum: &str) -> Result<(), Error> {
    let declared = integrity
        .split_whitespace()
        .find_map(|entry| entry.strip_prefix("sha512-"))
        .ok_or_else(|| Error::InvalidDigest {
            header: "dist.integrity",
            reason: "expected a sha512-<base64> entry".into(),
        })?;
    let actual = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(tarball));
    if declared != actual {
        return Err(Error::DigestMismatch {
            expected: format!("sha512-{declared}"),
            actual: format!("sha512-{actual}"),
        });
    }
    let actual = hex::encode(sha1::Sha1::digest(tarball));
    if !shasum.eq_ignore_ascii_case(&actual) {
        return Err(Error::DigestMismatch {
            expected: shasum.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Finds the tarball's `package.json` (`package/package.json`) and checks that it names this
/// package and version.
pub fn check_tarball(tarball: &[u8], name: &str, version: &str) -> Result<(), String> {
    let gz = flate2::read::GzDecoder::new(tarball).take(MAX_UNPACKED);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| format!("the tarball is not a gzipped tar: {e}"))?;
    for entry in entries.take(MAX_ENTRIES) {
        let entry = entry.map_err(|e| format!("the tarball is not a gzipped tar: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("a tarball entry has a bad path: {e}"))?
            .into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || path.file_name().is_none_or(|f| f != "package.json") {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(MAX_MANIFEST as u64 + 1)
            .read_to_end(&mut text)
            .map_err(|e| format!("reading package.json: {e}"))?;
        if text.len() > MAX_MANIFEST {
            return Err(format!(
                "its package.json is larger than {MAX_MANIFEST} bytes"
            ));
        }
        let doc: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("its package.json is not JSON: {e}"))?;
        let (found_name, found_version) = (
            doc.get("name").and_then(Value::as_str).unwrap_or_default(),
            doc.get("version")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if found_name != name || found_version != version {
            return Err(format!(
                "the tarball is {found_name}@{found_version}, not {name}@{version}"
            ));
        }
        return Ok(());
    }
    Err("the tarball has no package/package.json".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A gzipped tarball holding `package/package.json` for `name@version`.
    pub fn tarball(name: &str, version: &str, filler: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let json = format!(r#"{{"name":"{name}","version":"{version}"}}"#);
        for (path, data) in [
            ("package/package.json", json.as_bytes()),
            ("package/index.js", filler),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, data)
                .expect("test value");
        }
        builder
            .into_inner()
            .expect("test value")
            .finish()
            .expect("test value")
    }

    fn document(name: &str, version: &str, bytes: &[u8]) -> Vec<u8> {
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
        );
        let shasum = hex::encode(sha1::Sha1::digest(bytes));
        serde_json::to_vec(&serde_json::json!({
            "_id": name, "name": name, "dist-tags": {"latest": version},
            "versions": {version: {"name": name, "version": version, "readme": "r",
                "scripts": {"postinstall": "x"}, "dependencies": {"a": "^1"},
                "dist": {"integrity": integrity, "shasum": shasum, "tarball": "http://x/y.tgz"}}},
            "_attachments": {format!("{name}-{version}.tgz"): {
                "content_type": "application/octet-stream",
                "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                "length": bytes.len()}}
        }))
        .expect("test value")
    }

    #[test]
    fn a_publish_is_checked_and_its_manifest_kept_without_server_fields() {
        let name = PackageName::parse("@acme/hello").expect("test value");
        let bytes = tarball("@acme/hello", "1.0.0", b"x");
        let mut doc =
            Document::parse(&document("@acme/hello", "1.0.0", &bytes)).expect("test value");
        let publication = publication(&name, &mut doc).expect("test value");
        assert_eq!(publication.version, "1.0.0");
        assert_eq!(publication.tags, ["latest"]);
        assert_eq!(publication.tarball, bytes);
        let manifest: Value = serde_json::from_str(&publication.manifest).expect("test value");
        assert!(manifest.get("dist").is_none() && manifest.get("readme").is_none());
        let abbreviated: Value =
            serde_json::from_str(&publication.abbreviated).expect("test value");
        assert_eq!(abbreviated["hasInstallScript"], true);
        assert_eq!(abbreviated["dependencies"]["a"], "^1");
        assert!(abbreviated.get("scripts").is_none());
        check_tarball(&bytes, "@acme/hello", "1.0.0").expect("test value");
        assert!(check_tarball(&bytes, "@acme/other", "1.0.0").is_err());
        assert!(check_tarball(b"not gzip", "@acme/hello", "1.0.0").is_err());
    }

    #[test]
    fn a_publish_whose_digests_or_length_lie_is_refused() {
        let name = PackageName::parse("hello").expect("test value");
        let bytes = tarball("hello", "1.0.0", b"x");
        let good = document("hello", "1.0.0", &bytes);
        let corrupt = |edit: &dyn Fn(&mut Value)| {
            let mut value: Value = serde_json::from_slice(&good).expect("test value");
            edit(&mut value);
            let mut doc = Document::parse(&serde_json::to_vec(&value).expect("test value"))
                .expect("test value");
            publication(&name, &mut doc).err().map(|e| e.to_string())
        };
        assert!(corrupt(&|_| {}).is_none());
        let cases: [&dyn Fn(&mut Value); 5] = [
            &|v| v["versions"]["1.0.0"]["dist"]["integrity"] = "sha512-AAAA".into(),
            &|v| v["versions"]["1.0.0"]["dist"]["shasum"] = "00".into(),
            &|v| v["_attachments"]["hello-1.0.0.tgz"]["length"] = 1.into(),
            &|v| v["versions"]["1.0.0"]["name"] = "other".into(),
            &|v| v["_attachments"]["hello-1.0.0.tgz"]["data"] = "!!!".into(),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(corrupt(*case).is_some(), "case {i}");
        }
    }
}
