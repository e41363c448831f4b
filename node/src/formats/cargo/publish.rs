//! What `cargo publish` sends (`PUT /api/v1/crates/new`): a frame of `u32` little-endian
//! length, the JSON metadata, `u32` little-endian length, the `.crate` (a gzipped tar). It is
//! checked here (the name, the version, every dependency, the features, the lengths, and that
//! the `.crate` holds `{name}-{vers}/Cargo.toml` naming the same crate and version) before
//! anything is stored, and turned into the crate's index line.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use serde_json::{json, Value};

use super::names::{check_name, check_version};
use crate::error::Error;

/// Largest metadata JSON of a publish.
pub const MAX_METADATA: usize = 1 << 20;
/// Longest description kept (for search).
pub const MAX_DESCRIPTION: usize = 4 << 10;
/// Most dependencies and features of one version.
const MAX_DEPS: usize = 1_000;
const MAX_FEATURES: usize = 1_000;
/// Most bytes unpacked while checking a `.crate`, and most entries looked at.
const MAX_UNPACKED: u64 = 512 << 20;
const MAX_ENTRIES: usize = 100_000;
/// Largest `Cargo.toml` read from a `.crate`.
const MAX_MANIFEST: u64 = 1 << 20;

pub fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest {
        message: message.into(),
    }
}

/// A dependency as `cargo publish` describes it.
#[derive(Debug, Deserialize)]
struct Dependency {
    name: String,
    version_req: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default = "yes")]
    default_features: bool,
    #[serde(default)]
    target: Option<String>,
    #[serde(default = "normal")]
    kind: String,
    #[serde(default)]
    registry: Option<String>,
    #[serde(default)]
    explicit_name_in_toml: Option<String>,
}

fn yes() -> bool {
    true
}

fn normal() -> String {
    "normal".into()
}

/// The metadata part of the frame (fields the index does not carry are ignored).
#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
    vers: String,
    #[serde(default)]
    deps: Vec<Dependency>,
    #[serde(default)]
    features: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    links: Option<String>,
    #[serde(default)]
    rust_version: Option<String>,
}

/// A checked publish: what the index and the store get.
#[derive(Debug)]
pub struct Publication {
    pub name: String,
    pub vers: String,
    pub description: String,
    /// The index line without `yanked` (and without `cksum`, added once the file is stored).
    pub line: serde_json::Map<String, Value>,
    pub file: bytes::Bytes,
}

fn u32_at(body: &[u8], at: usize, what: &str) -> Result<usize, Error> {
    body.get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| u32::from_le_bytes(b) as usize)
        .ok_or_else(|| invalid(format!("the publish body ends before the {what} length")))
}

/// Parses and checks a publish body (`max_file`: the largest `.crate`).
pub fn parse(body: bytes::Bytes, max_file: u64) -> Result<Publication, Error> {
    let json_len = u32_at(&body, 0, "metadata")?;
    if json_len > MAX_METADATA {
        return Err(Error::TooLarge {
            limit: MAX_METADATA as u64,
        });
    }
    let json_end = 4 + json_len;
    let metadata = body
        .get(4..json_end)
        .ok_or_else(|| invalid("the publish body is shorter than its metadata length"))?;
    let metadata: Metadata = serde_json::from_slice(metadata)
        .map_err(|e| invalid(format!("the publish metadata is not valid: {e}")))?;
    let file_len = u32_at(&body, json_end, ".crate")?;
    if file_len as u64 > max_file {
        return Err(Error::TooLarge { limit: max_file });
    }
    let file_start = json_end + 4;
    if body.len() != file_start + file_len {
        return Err(invalid(format!(
            "the publish body is {} bytes, its lengths say {}",
            body.len(),
            file_start + file_len
        )));
    }
    let line = index_line(&metadata)?;
    let description = metadata
        .description
        .unwrap_or_default()
        .chars()
        .take(MAX_DESCRIPTION)
        .collect();
    Ok(Publication {
        name: metadata.name,
        vers: metadata.vers,
        description,
        line,
        file: body.slice(file_start..),
    })
}

/// Whether a feature value needs the `features2` field (`dep:x`, `x?/feature`).
fn is_new_syntax(value: &str) -> bool {
    value.starts_with("dep:") || value.contains("?/")
}

/// The index line of a publish: dependencies as the index names them (`req`, a renamed
/// dependency's `package`), features split into `features` and `features2` (`v: 2`).
fn index_line(metadata: &Metadata) -> Result<serde_json::Map<String, Value>, Error> {
    check_name(&metadata.name).map_err(invalid)?;
    check_version(&metadata.vers).map_err(invalid)?;
    if metadata.deps.len() > MAX_DEPS || metadata.features.len() > MAX_FEATURES {
        return Err(invalid(format!(
            "a version may have at most {MAX_DEPS} dependencies and {MAX_FEATURES} features"
        )));
    }
    let mut deps = Vec::with_capacity(metadata.deps.len());
    for dep in &metadata.deps {
        check_name(&dep.name).map_err(|e| invalid(format!("dependency: {e}")))?;
        semver::VersionReq::parse(&dep.version_req).map_err(|e| {
            invalid(format!(
                "dependency {}: {:?} is not a version requirement: {e}",
                dep.name, dep.version_req
            ))
        })?;
        if !matches!(dep.kind.as_str(), "normal" | "dev" | "build") {
            return Err(invalid(format!(
                "dependency {}: kind {:?} is not normal, dev or build",
                dep.name, dep.kind
            )));
        }
        let (name, package) = match &dep.explicit_name_in_toml {
            Some(renamed) => {
                check_name(renamed).map_err(|e| invalid(format!("dependency: {e}")))?;
                (renamed.clone(), Some(dep.name.clone()))
            }
            None => (dep.name.clone(), None),
        };
        let mut entry = json!({
            "name": name,
            "req": dep.version_req,
            "features": dep.features,
            "optional": dep.optional,
            "default_features": dep.default_features,
            "target": dep.target,
            "kind": dep.kind,
            "registry": dep.registry,
        });
        if let (Some(package), Some(map)) = (package, entry.as_object_mut()) {
            map.insert("package".into(), Value::String(package));
        }
        deps.push(entry);
    }
    let (features2, features): (BTreeMap<_, _>, BTreeMap<_, _>) = metadata
        .features
        .iter()
        .partition(|(_, values)| values.iter().any(|v| is_new_syntax(v)));
    let mut line = serde_json::Map::new();
    line.insert("name".into(), json!(metadata.name));
    line.insert("vers".into(), json!(metadata.vers));
    line.insert("deps".into(), Value::Array(deps));
    line.insert("features".into(), json!(features));
    if !features2.is_empty() {
        line.insert("features2".into(), json!(features2));
    }
    line.insert("links".into(), json!(metadata.links));
    if let Some(rust_version) = &metadata.rust_version {
        line.insert("rust_version".into(), json!(rust_version));
    }
    line.insert("v".into(), json!(if features2.is_empty() { 1 } else { 2 }));
    Ok(line)
}

/// Checks that a `.crate` is a gzipped tar of `{name}-{vers}/…` whose `Cargo.toml` names
/// `name` and `vers` (what cargo itself packs).
pub fn check_crate_file(file: &[u8], name: &str, vers: &str) -> Result<(), String> {
    let root = format!("{name}-{vers}");
    let gz = flate2::read::GzDecoder::new(file).take(MAX_UNPACKED);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| format!("the .crate is not a gzipped tar: {e}"))?;
    let mut manifest = None;
    for entry in entries.take(MAX_ENTRIES) {
        let mut entry = entry.map_err(|e| format!("the .crate is not a gzipped tar: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("a .crate entry has a bad path: {e}"))?
            .into_owned();
        let mut parts = path.components();
        let top = parts.next().and_then(|c| c.as_os_str().to_str());
        if top != Some(root.as_str()) {
            return Err(format!(
                "the .crate holds {}, outside {root}/",
                path.display()
            ));
        }
        let rest: Vec<_> = parts.collect();
        if rest.len() == 1 && rest[0].as_os_str() == "Cargo.toml" {
            let mut text = String::new();
            (&mut entry)
                .take(MAX_MANIFEST + 1)
                .read_to_string(&mut text)
                .map_err(|e| format!("reading {root}/Cargo.toml: {e}"))?;
            if text.len() as u64 > MAX_MANIFEST {
                return Err(format!("its Cargo.toml is over {MAX_MANIFEST} bytes"));
            }
            manifest = Some(text);
        }
    }
    let manifest = manifest.ok_or_else(|| format!("the .crate has no {root}/Cargo.toml"))?;
    let manifest: toml::Table = manifest
        .parse()
        .map_err(|e| format!("{root}/Cargo.toml is not TOML: {e}"))?;
    let package = manifest.get("package").and_then(toml::Value::as_table);
    let field = |key: &str| {
        package
            .and_then(|p| p.get(key))
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (found_name, found_vers) = (field("name"), field("version"));
    if found_name != name || found_vers != vers {
        return Err(format!(
            "the .crate is {found_name} {found_vers}, the metadata says {name} {vers}"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.crate` of `name` `vers` (`Cargo.toml` and `src/lib.rs`), under `root`.
    pub fn crate_file(root: &str, name: &str, vers: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let manifest = format!("[package]\nname = \"{name}\"\nversion = \"{vers}\"\n");
        for (path, data) in [
            (format!("{root}/Cargo.toml"), manifest.as_bytes()),
            (format!("{root}/src/lib.rs"), b"pub fn hi() {}\n".as_slice()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, data).expect("tar");
        }
        builder.into_inner().expect("tar").finish().expect("gzip")
    }

    /// A publish frame of `metadata` and `file`.
    pub fn frame(metadata: &Value, file: &[u8]) -> Vec<u8> {
        let json = metadata.to_string();
        let mut body = (json.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(json.as_bytes());
        body.extend_from_slice(&(file.len() as u32).to_le_bytes());
        body.extend_from_slice(file);
        body
    }

    #[test]
    fn a_frame_becomes_an_index_line() {
        let metadata = json!({
            "name": "hello", "vers": "0.1.0", "description": "hi",
            "deps": [
                {"name": "serde", "version_req": "^1", "features": ["derive"], "optional": true,
                 "default_features": false, "target": null, "kind": "normal",
                 "registry": "https://github.com/rust-lang/crates.io-index"},
                {"name": "real-name", "version_req": "=0.2.0", "kind": "dev",
                 "explicit_name_in_toml": "alias"}
            ],
            "features": {"default": ["std"], "std": [], "json": ["dep:serde", "serde?/std"]},
            "rust_version": "1.70"
        });
        let file = crate_file("hello-0.1.0", "hello", "0.1.0");
        let publication =
            parse(bytes::Bytes::from(frame(&metadata, &file)), 1 << 20).expect("parse");
        assert_eq!(publication.file.as_ref(), file.as_slice());
        let line = Value::Object(publication.line);
        assert_eq!(line["deps"][0]["req"], "^1");
        assert_eq!(line["deps"][0]["optional"], true);
        assert_eq!(line["deps"][1]["name"], "alias");
        assert_eq!(line["deps"][1]["package"], "real-name");
        assert_eq!(line["features"], json!({"default": ["std"], "std": []}));
        assert_eq!(
            line["features2"],
            json!({"json": ["dep:serde", "serde?/std"]})
        );
        assert_eq!(line["v"], 2);
        assert_eq!(line["rust_version"], "1.70");
        assert!(check_crate_file(&file, "hello", "0.1.0").is_ok());
    }

    #[test]
    fn bad_frames_and_crate_files_are_refused() {
        let good = json!({"name": "hello", "vers": "0.1.0"});
        let file = crate_file("hello-0.1.0", "hello", "0.1.0");
        let mut truncated = frame(&good, &file);
        truncated.pop();
        let bad_dep = json!({"name": "hello", "vers": "0.1.0",
            "deps": [{"name": "x", "version_req": "not a req"}]});
        let bad_kind = json!({"name": "hello", "vers": "0.1.0",
            "deps": [{"name": "x", "version_req": "1", "kind": "weird"}]});
        for body in [
            vec![1, 0],
            truncated,
            frame(&json!({"name": "9bad", "vers": "0.1.0"}), &file),
            frame(&json!({"name": "hello", "vers": "v1"}), &file),
            frame(&bad_dep, &file),
            frame(&bad_kind, &file),
            b"\xff\xff\xff\x7f{}".to_vec(),
        ] {
            assert!(parse(bytes::Bytes::from(body), 1 << 20).is_err());
        }
        assert!(matches!(
            parse(bytes::Bytes::from(frame(&good, &file)), 10),
            Err(Error::TooLarge { limit: 10 })
        ));
        assert!(check_crate_file(b"not gzip", "hello", "0.1.0").is_err());
        let other = crate_file("hello-0.1.0", "other", "0.1.0");
        assert!(check_crate_file(&other, "hello", "0.1.0").is_err());
        let outside = crate_file("elsewhere", "hello", "0.1.0");
        assert!(check_crate_file(&outside, "hello", "0.1.0").is_err());
        let wrong_version = crate_file("hello-0.1.0", "hello", "0.2.0");
        assert!(check_crate_file(&wrong_version, "hello", "0.1.0").is_err());
    }
}
