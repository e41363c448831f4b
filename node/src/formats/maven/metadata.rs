//! `maven-metadata.xml`: rendered from the replicated state on every read (artifact level:
//! versions, latest, release, lastUpdated; SNAPSHOT version level: the newest build and a
//! snapshotVersion per classifier and extension; group level: plugin prefixes), and read from
//! what a client PUTs (only a group's plugin prefixes are kept from it).
//!
//! The documents hold no URLs.

use quick_xml::events::Event;

use super::coords::check_artifact;
use super::model::{ArtifactRecord, MavenFile, PluginRecord, VersionRecord};
use super::versions;

/// Largest metadata document a client may PUT.
pub const MAX_DOCUMENT: usize = 1 << 20;
/// Longest plugin name kept.
const MAX_PLUGIN_NAME: usize = 1024;
/// Deepest element nesting read from a client's document.
const MAX_DEPTH: usize = 16;

/// `yyyyMMddHHmmss`, UTC (Maven's `lastUpdated`).
pub fn last_updated(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y%m%d%H%M%S").to_string())
        .unwrap_or_default()
}

fn text(out: &mut String, indent: usize, tag: &str, value: &str) {
    let escaped = quick_xml::escape::escape(value);
    out.push_str(&format!(
        "{:indent$}<{tag}>{escaped}</{tag}>\n",
        "",
        indent = indent
    ));
}

fn plugins_element(out: &mut String, plugins: &[PluginRecord]) {
    out.push_str("  <plugins>\n");
    for plugin in plugins {
        out.push_str("    <plugin>\n");
        text(out, 6, "name", &plugin.name);
        text(out, 6, "prefix", &plugin.prefix);
        text(out, 6, "artifactId", &plugin.artifact);
        out.push_str("    </plugin>\n");
    }
    out.push_str("  </plugins>\n");
}

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// The artifact-level document (with the group's plugins when the same directory is a
/// group that has some), or the group-level one alone.
pub fn artifact_level(
    artifact: Option<(&ArtifactRecord, &[VersionRecord])>,
    plugins: &[PluginRecord],
) -> Vec<u8> {
    let mut out = format!("{HEAD}<metadata>\n");
    if let Some((record, versions)) = artifact {
        let mut listed: Vec<&VersionRecord> = versions.iter().filter(|v| v.files > 0).collect();
        versions::sort(&mut listed, |v| v.version.as_str());
        text(&mut out, 2, "groupId", &record.group);
        text(&mut out, 2, "artifactId", &record.artifact);
        out.push_str("  <versioning>\n");
        if let Some(latest) = listed.last() {
            text(&mut out, 4, "latest", &latest.version);
        }
        if let Some(release) = listed
            .iter()
            .rev()
            .find(|v| !super::coords::is_snapshot(&v.version))
        {
            text(&mut out, 4, "release", &release.version);
        }
        out.push_str("    <versions>\n");
        for version in &listed {
            text(&mut out, 6, "version", &version.version);
        }
        out.push_str("    </versions>\n");
        text(
            &mut out,
            4,
            "lastUpdated",
            &last_updated(record.updated_at_ms),
        );
        out.push_str("  </versioning>\n");
    }
    if !plugins.is_empty() {
        plugins_element(&mut out, plugins);
    }
    out.push_str("</metadata>\n");
    out.into_bytes()
}

/// The SNAPSHOT version-level document: the newest timestamped build, and the newest file
/// of every classifier and extension.
pub fn snapshot_level(
    group: &str,
    artifact: &str,
    version: &VersionRecord,
    files: &[MavenFile],
) -> Vec<u8> {
    let mut builds: Vec<&MavenFile> = files.iter().filter(|f| f.build.is_some()).collect();
    builds.sort_by(|a, b| {
        let key = |f: &MavenFile| {
            f.build
                .as_ref()
                .map(|b| (b.number, b.timestamp.clone()))
                .unwrap_or_default()
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| a.filename.cmp(&b.filename))
    });
    let mut out = format!("{HEAD}<metadata modelVersion=\"1.1.0\">\n");
    text(&mut out, 2, "groupId", group);
    text(&mut out, 2, "artifactId", artifact);
    text(&mut out, 2, "version", &version.version);
    out.push_str("  <versioning>\n");
    if let Some(newest) = builds.last().and_then(|f| f.build.as_ref()) {
        out.push_str("    <snapshot>\n");
        text(&mut out, 6, "timestamp", &newest.timestamp);
        text(&mut out, 6, "buildNumber", &newest.number.to_string());
        out.push_str("    </snapshot>\n");
    }
    text(
        &mut out,
        4,
        "lastUpdated",
        &last_updated(version.updated_at_ms),
    );
    if !builds.is_empty() {
        // The newest build of each (classifier, extension), in that order.
        let mut newest: std::collections::BTreeMap<(String, String), &MavenFile> =
            std::collections::BTreeMap::new();
        for file in &builds {
            let key = (
                file.classifier.clone().unwrap_or_default(),
                file.extension.clone(),
            );
            newest.insert(key, *file);
        }
        out.push_str("    <snapshotVersions>\n");
        for ((classifier, extension), file) in newest {
            let Some(build) = &file.build else { continue };
            out.push_str("      <snapshotVersion>\n");
            if !classifier.is_empty() {
                text(&mut out, 8, "classifier", &classifier);
            }
            text(&mut out, 8, "extension", &extension);
            text(&mut out, 8, "value", &build.value(&version.version));
            text(&mut out, 8, "updated", &build.timestamp.replace('.', ""));
            out.push_str("      </snapshotVersion>\n");
        }
        out.push_str("    </snapshotVersions>\n");
    }
    out.push_str("  </versioning>\n</metadata>\n");
    out.into_bytes()
}

/// What a client's `maven-metadata.xml` says that matters here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub group: Option<String>,
    pub artifact: Option<String>,
    pub version: Option<String>,
    pub plugins: Vec<PluginRecord>,
}

/// Reads a client's document: well-formed XML whose root is `<metadata>`, no DOCTYPE, at
/// most [`MAX_DEPTH`] deep; plugin prefixes checked as coordinates are.
pub fn parse(body: &[u8], max_plugins: usize) -> Result<Uploaded, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    let mut uploaded = Uploaded::default();
    let mut plugin: Option<PluginRecord> = None;
    let mut root = false;
    let mut buf = Vec::new();
    let malformed =
        |e: &dyn std::fmt::Display| format!("maven-metadata.xml is not well-formed XML: {e}");
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(&e))?;
        match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if stack.is_empty() {
                    if name != "metadata" || root {
                        return Err(format!("the root element is <{name}>, not one <metadata>"));
                    }
                    root = true;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("maven-metadata.xml nests deeper than {MAX_DEPTH}"));
                }
                if stack.len() == 2 && name == "plugin" && stack[1] == "plugins" {
                    if uploaded.plugins.len() >= max_plugins {
                        return Err(format!("a group holds at most {max_plugins} plugins"));
                    }
                    plugin = Some(PluginRecord {
                        prefix: String::new(),
                        artifact: String::new(),
                        name: String::new(),
                    });
                }
                stack.push(name);
            }
            Event::Empty(start) if stack.is_empty() => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if name != "metadata" || root {
                    return Err(format!("the root element is <{name}/>, not one <metadata>"));
                }
                root = true;
            }
            Event::End(_) => {
                let closed = stack.pop().unwrap_or_default();
                if closed == "plugin" && stack.len() == 2 {
                    if let Some(done) = plugin.take() {
                        uploaded.plugins.push(check_plugin(done)?);
                    }
                }
            }
            Event::Text(value) => {
                let unescaped = value.unescape().map_err(|e| malformed(&e))?;
                let value = unescaped.trim();
                let path: Vec<&str> = stack.iter().map(String::as_str).collect();
                match path.as_slice() {
                    ["metadata", "groupId"] => uploaded.group = Some(value.to_string()),
                    ["metadata", "artifactId"] => uploaded.artifact = Some(value.to_string()),
                    ["metadata", "version"] => uploaded.version = Some(value.to_string()),
                    ["metadata", "plugins", "plugin", field] => {
                        if let Some(plugin) = plugin.as_mut() {
                            match *field {
                                "prefix" => plugin.prefix = value.to_string(),
                                "artifactId" => plugin.artifact = value.to_string(),
                                "name" => {
                                    plugin.name = value.chars().take(MAX_PLUGIN_NAME).collect()
                                }
                                _ => {}
                            }
                        }
                    }
                    [] if !value.is_empty() => {
                        return Err("maven-metadata.xml has text outside <metadata>".into())
                    }
                    _ => {}
                }
            }
            Event::DocType(_) => return Err("maven-metadata.xml may not have a DOCTYPE".into()),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(malformed(&"it ends inside an element"));
    }
    if !root {
        return Err("maven-metadata.xml has no <metadata> element".into());
    }
    Ok(uploaded)
}

fn check_plugin(plugin: PluginRecord) -> Result<PluginRecord, String> {
    check_artifact(&plugin.artifact).map_err(|e| format!("a plugin's artifactId: {e}"))?;
    check_artifact(&plugin.prefix).map_err(|e| format!("a plugin's prefix: {e}"))?;
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::maven::coords::Build;

    fn version(v: &str) -> VersionRecord {
        VersionRecord {
            version: v.into(),
            files: 1,
            created_at_ms: 0,
            updated_at_ms: 1_764_700_000_000,
        }
    }

    fn file(name: &str, classifier: Option<&str>, extension: &str, number: u32) -> MavenFile {
        MavenFile {
            filename: name.into(),
            classifier: classifier.map(str::to_string),
            extension: extension.into(),
            build: Some(Build {
                timestamp: format!("20261201.10101{number}"),
                number,
            }),
            blob: crate::digest::Blake3::from_hex(&"0".repeat(64)).expect("hex"),
            sha256: crate::digest::Sha256::from_hex(&"0".repeat(64)).expect("hex"),
            sha1: String::new(),
            md5: String::new(),
            sha512: String::new(),
            size: 1,
            uploaded_at_ms: 0,
        }
    }

    #[test]
    fn renders_latest_release_and_versions_in_maven_order() {
        let record = ArtifactRecord {
            group: "com.acme".into(),
            artifact: "hello".into(),
            versions: 3,
            created_at_ms: 0,
            updated_at_ms: 1_764_700_000_000,
        };
        let versions = [
            version("1.10.0"),
            version("1.2.0"),
            version("2.0.0-SNAPSHOT"),
        ];
        let doc = String::from_utf8(artifact_level(Some((&record, &versions)), &[])).expect("utf8");
        assert!(doc.contains("<latest>2.0.0-SNAPSHOT</latest>"), "{doc}");
        assert!(doc.contains("<release>1.10.0</release>"), "{doc}");
        let first = doc.find("1.2.0").expect("1.2.0");
        assert!(
            first < doc.find("1.10.0</version>").expect("1.10.0"),
            "{doc}"
        );
        assert!(doc.contains("<lastUpdated>20251202"), "{doc}");
    }

    #[test]
    fn renders_the_newest_build_per_classifier_and_extension() {
        let files = [
            file("hello-1.1.0-20261201.101011-1.jar", None, "jar", 1),
            file("hello-1.1.0-20261201.101012-2.jar", None, "jar", 2),
            file("hello-1.1.0-20261201.101012-2.pom", None, "pom", 2),
            file(
                "hello-1.1.0-20261201.101011-1-sources.jar",
                Some("sources"),
                "jar",
                1,
            ),
        ];
        let doc = String::from_utf8(snapshot_level(
            "com.acme",
            "hello",
            &version("1.1.0-SNAPSHOT"),
            &files,
        ))
        .expect("utf8");
        assert!(doc.contains("<buildNumber>2</buildNumber>"), "{doc}");
        assert!(
            doc.contains("<value>1.1.0-20261201.101012-2</value>"),
            "{doc}"
        );
        assert!(doc.contains("<classifier>sources</classifier>"), "{doc}");
        assert_eq!(doc.matches("<snapshotVersion>").count(), 3, "{doc}");
        let parsed = parse(doc.as_bytes(), 10).expect("our own document parses");
        assert_eq!(parsed.version.as_deref(), Some("1.1.0-SNAPSHOT"));
    }

    #[test]
    fn reads_plugins_and_refuses_what_is_not_metadata() {
        let doc = b"<?xml version=\"1.0\"?><metadata><plugins><plugin><name>Hello &amp; co</name><prefix>hello</prefix><artifactId>hello-maven-plugin</artifactId></plugin></plugins></metadata>";
        let parsed = parse(doc, 10).expect("plugins");
        assert_eq!(parsed.plugins[0].name, "Hello & co");
        assert_eq!(parsed.plugins[0].prefix, "hello");
        for bad in [
            &b"<metadata><groupId>x</metadata>"[..],
            b"<project/>",
            b"not xml at all",
            b"<!DOCTYPE x [<!ENTITY a 'b'>]><metadata/>",
            b"<metadata><plugins><plugin><prefix>../x</prefix><artifactId>a</artifactId></plugin></plugins></metadata>",
            b"<metadata>",
        ] {
            assert!(parse(bad, 10).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(doc, 0).is_err(), "over the plugin limit");
    }
}
