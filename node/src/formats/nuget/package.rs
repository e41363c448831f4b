//! What a push is checked for: the `.nupkg` is a zip holding one `{id}.nuspec` at its root,
//! whose `<metadata>` names a valid id and version; ids are compared ignoring case and versions
//! normalized as NuGet does (`1.0` → `1.0.0`, a zero fourth part dropped, build metadata
//! stripped). A SemVer 2 version (a dotted prerelease label, or build metadata) is shown only
//! to clients that ask for `semVerLevel=2.0.0`.

use std::cmp::Ordering;
use std::io::Read;

use quick_xml::events::Event;
use serde_json::{json, Value};

/// Largest `.nuspec`, and the deepest it may nest.
pub const MAX_NUSPEC: u64 = 1 << 20;
const MAX_DEPTH: usize = 16;
/// Most dependencies a nuspec may list.
const MAX_DEPENDENCIES: usize = 2_000;
/// Longest id.
pub const MAX_ID: usize = 100;

/// Checks a package id: ASCII letters, digits, `.`, `-` and `_`, starting with a letter, digit
/// or `_`, at most [`MAX_ID`] characters, no `..`.
pub fn check_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID
        && id.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the package id {id:?} must be 1 to {MAX_ID} ASCII letters, digits, `.`, `-` and `_`"
        ))
    }
}

/// A version, normalized: `(normalized, semver2)`.
pub fn normalize(version: &str) -> Result<(String, bool), String> {
    let bad = || format!("{version:?} is not a NuGet version");
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (release, pre) = match rest.split_once('-') {
        Some((release, pre)) => (release, Some(pre)),
        None => (rest, None),
    };
    let mut parts: Vec<u64> = Vec::new();
    for part in release.split('.') {
        if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        parts.push(part.parse().map_err(|_| bad())?);
    }
    if parts.is_empty() || parts.len() > 4 {
        return Err(bad());
    }
    while parts.len() < 3 {
        parts.push(0);
    }
    if parts.len() == 4 && parts[3] == 0 {
        parts.pop();
    }
    let mut normalized = parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    if let Some(pre) = pre {
        let valid = !pre.is_empty()
            && pre.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(bad());
        }
        normalized.push('-');
        normalized.push_str(pre);
    }
    if build.is_some_and(|b| b.is_empty() || b.contains(char::is_whitespace)) {
        return Err(bad());
    }
    let semver2 = pre.is_some_and(|p| p.contains('.')) || build.is_some();
    Ok((normalized, semver2))
}

/// NuGet's order of normalized versions (prerelease labels compared ignoring case, numeric
/// labels numerically, a release above its prereleases).
pub fn compare(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (Vec<u64>, Option<String>) {
        let (release, pre) = match v.split_once('-') {
            Some((r, p)) => (r, Some(p.to_ascii_lowercase())),
            None => (v, None),
        };
        let mut parts: Vec<u64> = release.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        parts.resize(4, 0);
        (parts, pre)
    }
    let ((ra, pa), (rb, pb)) = (split(a), split(b));
    ra.cmp(&rb).then_with(|| match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(pa), Some(pb)) => {
            let (la, lb): (Vec<&str>, Vec<&str>) =
                (pa.split('.').collect(), pb.split('.').collect());
            for (x, y) in la.iter().zip(lb.iter()) {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
            la.len().cmp(&lb.len())
        }
    })
}

/// What a `.nupkg` says of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Nuspec {
    pub id: String,
    /// As the nuspec spells it.
    pub version: String,
    pub normalized: String,
    pub semver2: bool,
    pub authors: String,
    pub description: String,
    /// `[{"targetFramework", "dependencies": [{"id", "range"}]}]`.
    pub dependency_groups: Vec<Value>,
    pub license: Option<String>,
    /// The nuspec file itself.
    pub bytes: Vec<u8>,
}

impl Nuspec {
    /// The registration leaf's catalog entry fields (no URLs).
    pub fn entry(&self, published: &str) -> String {
        let mut entry = json!({
            "id": self.id,
            "version": self.normalized,
            "authors": self.authors,
            "description": self.description,
            "dependencyGroups": self.dependency_groups,
            "published": published,
            "requireLicenseAcceptance": false,
        });
        if let (Some(license), Some(map)) = (&self.license, entry.as_object_mut()) {
            map.insert("licenseExpression".into(), Value::String(license.clone()));
        }
        entry.to_string()
    }
}

/// Reads a `.nupkg`: its root `.nuspec`, parsed.
pub fn read_nupkg(nupkg: &[u8]) -> Result<Nuspec, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(nupkg))
        .map_err(|e| format!("the package is not a zip (.nupkg): {e}"))?;
    let name = zip
        .file_names()
        .find(|n| !n.contains('/') && n.to_ascii_lowercase().ends_with(".nuspec"))
        .map(str::to_string)
        .ok_or("the package has no .nuspec at its root")?;
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .map_err(|e| format!("reading {name}: {e}"))?
        .take(MAX_NUSPEC + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {name}: {e}"))?;
    if bytes.len() as u64 > MAX_NUSPEC {
        return Err(format!("its nuspec is over {MAX_NUSPEC} bytes"));
    }
    let nuspec = parse_nuspec(bytes)?;
    let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
    if !stem.eq_ignore_ascii_case(&nuspec.id) {
        return Err(format!(
            "the package's nuspec is {name}, its id {}: the file must be named after the id",
            nuspec.id
        ));
    }
    Ok(nuspec)
}

/// Parses a nuspec: `<package><metadata>` with `id`, `version`, `authors`, `description`,
/// `license` and `dependencies` (grouped by target framework, or flat).
pub fn parse_nuspec(bytes: Vec<u8>) -> Result<Nuspec, String> {
    let mut reader = quick_xml::Reader::from_reader(bytes.as_slice());
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    let (mut id, mut version, mut authors, mut description, mut license) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        None,
    );
    let mut groups: Vec<(Option<String>, Vec<Value>)> = Vec::new();
    let mut count = 0;
    let mut buf = Vec::new();
    let malformed = |e: &dyn std::fmt::Display| format!("the nuspec is not well-formed XML: {e}");
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(&e))?;
        let (start, empty) = match &event {
            Event::Start(start) => (Some(start.clone()), false),
            Event::Empty(start) => (Some(start.clone()), true),
            _ => (None, false),
        };
        if let Some(start) = start {
            let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
            if stack.is_empty() && name != "package" {
                return Err(format!("the nuspec's root is <{name}>, not <package>"));
            }
            if stack.len() >= MAX_DEPTH {
                return Err(format!("the nuspec nests deeper than {MAX_DEPTH}"));
            }
            let attribute = |key: &str| {
                start
                    .attributes()
                    .flatten()
                    .find(|a| a.key.local_name().as_ref() == key.as_bytes())
                    .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
            };
            let path: Vec<&str> = stack.iter().map(String::as_str).collect();
            match (path.as_slice(), name.as_str()) {
                (["package", "metadata", "dependencies"], "group") => {
                    groups.push((attribute("targetFramework"), Vec::new()));
                }
                (["package", "metadata", "dependencies", ..], "dependency") => {
                    count += 1;
                    if count > MAX_DEPENDENCIES {
                        return Err(format!(
                            "a nuspec lists at most {MAX_DEPENDENCIES} dependencies"
                        ));
                    }
                    let dependency = json!({
                        "id": attribute("id").unwrap_or_default(),
                        "range": attribute("version").unwrap_or_else(|| "(, )".into()),
                    });
                    if path.len() == 3 {
                        // Flat: the group without a framework.
                        if !groups.first().is_some_and(|(f, _)| f.is_none()) {
                            groups.insert(0, (None, Vec::new()));
                        }
                        groups[0].1.push(dependency);
                    } else if let Some(group) = groups.last_mut() {
                        group.1.push(dependency);
                    }
                }
                _ => {}
            }
            if !empty {
                stack.push(name);
            }
            continue;
        }
        match event {
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(text) => {
                let value = text
                    .unescape()
                    .map_err(|e| malformed(&e))?
                    .trim()
                    .to_string();
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                match path.as_slice() {
                    ["package", "metadata", "id"] => id = value,
                    ["package", "metadata", "version"] => version = value,
                    ["package", "metadata", "authors"] => authors = value,
                    ["package", "metadata", "description"] => {
                        description = value.chars().take(4096).collect()
                    }
                    ["package", "metadata", "license"] => license = Some(value),
                    _ => {}
                }
            }
            Event::DocType(_) => return Err("a nuspec may not have a DOCTYPE".into()),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    check_id(&id)?;
    let (normalized, semver2) = normalize(&version)?;
    let dependency_groups = groups
        .into_iter()
        .map(|(framework, dependencies)| {
            let mut group = json!({ "dependencies": dependencies });
            if let (Some(framework), Some(map)) = (framework, group.as_object_mut()) {
                map.insert("targetFramework".into(), Value::String(framework));
            }
            group
        })
        .collect();
    Ok(Nuspec {
        id,
        version,
        normalized,
        semver2,
        authors,
        description,
        dependency_groups,
        license,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_normalized_and_ordered() {
        assert_eq!(normalize("1.0").expect("v").0, "1.0.0");
        assert_eq!(normalize("1.0.0.0").expect("v").0, "1.0.0");
        assert_eq!(normalize("1.0.0.1").expect("v").0, "1.0.0.1");
        assert_eq!(normalize("01.2.3").expect("v").0, "1.2.3");
        assert_eq!(normalize("1.0.0+abc").expect("v"), ("1.0.0".into(), true));
        assert_eq!(
            normalize("1.0.0-beta").expect("v"),
            ("1.0.0-beta".into(), false)
        );
        assert_eq!(
            normalize("1.0.0-beta.1").expect("v"),
            ("1.0.0-beta.1".into(), true)
        );
        for bad in ["", "v1", "1..0", "1.0.0.0.0", "1.0-", "1.0-a..b", "1.0+"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        let mut versions = vec![
            "1.0.0",
            "1.0.0-beta.10",
            "1.0.0-beta.2",
            "0.9.0",
            "1.0.0.1",
            "1.0.0-Alpha",
        ];
        versions.sort_by(|a, b| compare(a, b));
        assert_eq!(
            versions,
            [
                "0.9.0",
                "1.0.0-Alpha",
                "1.0.0-beta.2",
                "1.0.0-beta.10",
                "1.0.0",
                "1.0.0.1"
            ]
        );
    }

    #[test]
    fn nuspecs_are_parsed_and_checked() {
        let nuspec = br#"<?xml version="1.0"?>
<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">
  <metadata>
    <id>Acme.Hello</id><version>1.0</version><authors>acme</authors>
    <description>Says hello &amp; more</description>
    <dependencies>
      <group targetFramework="net6.0"><dependency id="Newtonsoft.Json" version="[13.0.1, )" /></group>
      <group targetFramework="netstandard2.0" />
    </dependencies>
  </metadata>
</package>"#;
        let parsed = parse_nuspec(nuspec.to_vec()).expect("valid");
        assert_eq!(
            (parsed.id.as_str(), parsed.normalized.as_str()),
            ("Acme.Hello", "1.0.0")
        );
        assert_eq!(parsed.description, "Says hello & more");
        assert_eq!(parsed.dependency_groups[0]["targetFramework"], "net6.0");
        assert_eq!(
            parsed.dependency_groups[0]["dependencies"][0]["id"],
            "Newtonsoft.Json"
        );
        assert_eq!(parsed.dependency_groups[1]["dependencies"], json!([]));
        for bad in [
            "<package><metadata><id>..x</id><version>1.0</version></metadata></package>",
            "<package><metadata><id>x</id><version>one</version></metadata></package>",
            "<other/>",
            "<package><metadata><id>x</id>",
            "<!DOCTYPE x><package/>",
        ] {
            assert!(parse_nuspec(bad.as_bytes().to_vec()).is_err(), "{bad}");
        }
    }
}
