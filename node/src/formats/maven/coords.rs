//! The Maven repository layout, parsed: what a path under `/maven/{repo}/` names (a file of a
//! version, the metadata of an artifact, a group or a SNAPSHOT version, or a checksum of one of
//! them), with every segment checked before anything is read or stored.
//!
//! Segments are strict: groupId directories are `[A-Za-z0-9_-]` (the dots of a groupId are
//! the slashes of its path), artifactIds `[A-Za-z0-9._-]`, versions and file names also allow
//! `+` (build metadata, `1.0.0+7`). No segment is empty, starts with `.` or holds `..`; a
//! percent-encoded segment is decoded first (so `%2e%2e` is `..` and `%2f` a `/`, both
//! refused). One empty segment right after the repository (a repository URL configured with a
//! trailing slash) is tolerated.

/// The metadata document's file name.
pub const METADATA: &str = "maven-metadata.xml";
/// Longest directory segment.
const MAX_SEGMENT: usize = 128;
/// Longest file name.
const MAX_FILENAME: usize = 255;
/// Most directory levels (a groupId of 28 parts, the artifact, the version, the file).
const MAX_SEGMENTS: usize = 32;

/// A checksum sibling (`hello-1.0.0.jar.sha1`), served computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Sha1,
    Md5,
    Sha256,
    Sha512,
}

impl Checksum {
    pub const ALL: [Checksum; 4] = [
        Checksum::Sha1,
        Checksum::Md5,
        Checksum::Sha256,
        Checksum::Sha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Checksum::Sha1 => "sha1",
            Checksum::Md5 => "md5",
            Checksum::Sha256 => "sha256",
            Checksum::Sha512 => "sha512",
        }
    }

    /// Hex characters of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Checksum::Sha1 => 40,
            Checksum::Md5 => 32,
            Checksum::Sha256 => 64,
            Checksum::Sha512 => 128,
        }
    }

    /// Splits `name.sha1` into `name` and the algorithm.
    fn strip(file: &str) -> Option<(&str, Checksum)> {
        Checksum::ALL.into_iter().find_map(|algo| {
            file.strip_suffix(algo.name())
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|rest| !rest.is_empty())
                .map(|rest| (rest, algo))
        })
    }
}

/// A timestamped SNAPSHOT build (`1.1.0-20261201.101010-3`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Build {
    /// `yyyyMMdd.HHmmss`, UTC, as the deploying client chose it.
    pub timestamp: String,
    pub number: u32,
}

impl Build {
    /// The version a file of this build spells (`1.1.0-20261201.101010-3`).
    pub fn value(&self, base_version: &str) -> String {
        let release = base_version
            .strip_suffix("-SNAPSHOT")
            .unwrap_or(base_version);
        format!("{release}-{}-{}", self.timestamp, self.number)
    }
}

/// A file of a version: `{group path}/{artifactId}/{version}/{artifactId}-{v}[-{classifier}].{ext}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoords {
    pub group: String,
    pub artifact: String,
    /// The version directory (`1.0.0`, `1.1.0-SNAPSHOT`).
    pub version: String,
    pub filename: String,
    pub classifier: Option<String>,
    /// `jar`, `pom`, `tar.gz`, `jar.asc`.
    pub extension: String,
    /// The build, for a timestamped SNAPSHOT file.
    pub build: Option<Build>,
}

impl FileCoords {
    /// Whether a later deploy may replace the file: a plain `-SNAPSHOT` file
    /// (`hello-1.1.0-SNAPSHOT.jar`). Releases and timestamped builds never change.
    pub fn replaceable(&self) -> bool {
        is_snapshot(&self.version) && self.build.is_none()
    }
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(FileCoords),
    /// `{dirs}/maven-metadata.xml`: the artifact level (groupId the dirs but the last,
    /// artifactId the last) and the group level (groupId all the dirs), served as one
    /// document.
    Metadata {
        artifact: Option<(String, String)>,
        group: Option<String>,
    },
    /// `{group}/{artifact}/{x}-SNAPSHOT/maven-metadata.xml`.
    SnapshotMetadata {
        group: String,
        artifact: String,
        version: String,
    },
}

/// A parsed path: its target and, for `….sha1` and the like, the checksum asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MavenPath {
    pub target: Target,
    pub checksum: Option<Checksum>,
}

pub fn is_snapshot(version: &str) -> bool {
    version
        .strip_suffix("-SNAPSHOT")
        .is_some_and(|base| !base.is_empty())
}

fn decode(raw: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{raw:?} is not valid UTF-8 once decoded"))
}

/// Checks one segment: `extra` are the characters allowed besides ASCII letters and digits.
fn check(segment: &str, what: &str, extra: &[u8], max: usize) -> Result<(), String> {
    if segment.is_empty() {
        return Err(format!("the path has an empty {what}"));
    }
    if segment.len() > max {
        return Err(format!("a {what} has at most {max} characters"));
    }
    if segment.starts_with('.') || segment.contains("..") {
        return Err(format!(
            "{segment:?}: a {what} neither starts with '.' nor holds '..'"
        ));
    }
    if let Some(bad) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || (c.is_ascii() && extra.contains(&(*c as u8)))))
    {
        let allowed: String = extra.iter().map(|&b| b as char).collect();
        return Err(format!(
            "{segment:?}: a {what} has only ASCII letters, digits and {allowed:?}, not {bad:?}"
        ));
    }
    Ok(())
}

fn check_group_dir(segment: &str) -> Result<(), String> {
    check(segment, "groupId directory", b"_-", MAX_SEGMENT)
}

pub fn check_artifact(segment: &str) -> Result<(), String> {
    check(segment, "artifactId", b"._-", MAX_SEGMENT)
}

fn check_version(segment: &str) -> Result<(), String> {
    check(segment, "version", b"._+-", MAX_SEGMENT)
}

/// Parses the raw (still percent-encoded) path below `/maven/{repo}/`.
pub fn parse(raw: &str) -> Result<MavenPath, String> {
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    if raw.contains('\\') {
        return Err("the path holds a backslash".into());
    }
    let raw_segments: Vec<&str> = raw.split('/').collect();
    if raw_segments.len() > MAX_SEGMENTS {
        return Err(format!("a path has at most {MAX_SEGMENTS} segments"));
    }
    let mut segments = Vec::with_capacity(raw_segments.len());
    for segment in raw_segments {
        let decoded = decode(segment)?;
        if decoded.contains(['/', '\\']) {
            return Err(format!("{segment:?} encodes a path separator"));
        }
        segments.push(decoded);
    }
    let Some((file, dirs)) = segments.split_last() else {
        return Err("the path names no file".into());
    };
    if file.is_empty() {
        return Err("the path names a directory, not a file".into());
    }
    check(file, "file name", b"._+-", MAX_FILENAME)?;
    let (name, checksum) = match Checksum::strip(file) {
        Some((name, algo)) => (name, Some(algo)),
        None => (file.as_str(), None),
    };
    let target = if name == METADATA {
        metadata_target(dirs)?
    } else {
        Target::File(file_target(dirs, name)?)
    };
    Ok(MavenPath { target, checksum })
}

fn metadata_target(dirs: &[String]) -> Result<Target, String> {
    let Some((last, group_dirs)) = dirs.split_last() else {
        return Err("maven-metadata.xml lives in a group, artifact or version directory".into());
    };
    if is_snapshot(last) && group_dirs.len() >= 2 {
        check_version(last)?;
        let (artifact, group) = artifact_and_group(group_dirs)?;
        return Ok(Target::SnapshotMetadata {
            group,
            artifact,
            version: last.clone(),
        });
    }
    check_artifact(last)?;
    let artifact = if group_dirs.is_empty() {
        None
    } else {
        for dir in group_dirs {
            check_group_dir(dir)?;
        }
        Some((group_dirs.join("."), last.clone()))
    };
    // Every directory is a groupId part too, unless the last holds a dot.
    let group = check_group_dir(last).ok().map(|()| dirs.join("."));
    Ok(Target::Metadata { artifact, group })
}

/// `[group dirs…, artifact]` into the artifactId and the groupId.
fn artifact_and_group(dirs: &[String]) -> Result<(String, String), String> {
    let Some((artifact, group_dirs)) = dirs.split_last().filter(|(_, g)| !g.is_empty()) else {
        return Err("a file lives at {groupId path}/{artifactId}/{version}/".into());
    };
    check_artifact(artifact)?;
    for dir in group_dirs {
        check_group_dir(dir)?;
    }
    Ok((artifact.clone(), group_dirs.join(".")))
}

fn file_target(dirs: &[String], filename: &str) -> Result<FileCoords, String> {
    let Some((version, rest)) = dirs.split_last() else {
        return Err("a file lives at {groupId path}/{artifactId}/{version}/".into());
    };
    check_version(version)?;
    let (artifact, group) = artifact_and_group(rest)?;
    let shape = || {
        format!(
            "{filename:?} is not a file of {group}:{artifact}:{version} ({artifact}-{version}[-classifier].extension)"
        )
    };
    let after_artifact = filename
        .strip_prefix(artifact.as_str())
        .and_then(|r| r.strip_prefix('-'))
        .ok_or_else(shape)?;
    let (build, tail) = match after_artifact.strip_prefix(version.as_str()) {
        Some(tail) => (None, tail),
        None if is_snapshot(version) => {
            let release = version.strip_suffix("-SNAPSHOT").unwrap_or(version);
            let stamped = after_artifact
                .strip_prefix(release)
                .and_then(|r| r.strip_prefix('-'))
                .ok_or_else(shape)?;
            let (build, tail) = parse_build(stamped).ok_or_else(shape)?;
            (Some(build), tail)
        }
        None => return Err(shape()),
    };
    let (classifier, extension) = match tail.strip_prefix('-') {
        Some(classified) => {
            let (classifier, extension) = classified.split_once('.').ok_or_else(shape)?;
            if classifier.is_empty() || classifier.contains('+') {
                return Err(shape());
            }
            (Some(classifier.to_string()), extension)
        }
        None => (None, tail.strip_prefix('.').ok_or_else(shape)?),
    };
    let extension_ok = !extension.is_empty()
        && !extension
            .split('.')
            .next()
            .is_some_and(|first| first.bytes().all(|b| b.is_ascii_digit()))
        && extension
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !extension_ok {
        return Err(shape());
    }
    Ok(FileCoords {
        group,
        artifact,
        version: version.clone(),
        filename: filename.to_string(),
        classifier,
        extension: extension.to_string(),
        build,
    })
}

/// `20261201.101010-3` and what follows it.
fn parse_build(text: &str) -> Option<(Build, &str)> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..8)
        && bytes.get(8) == Some(&b'.')
        && digits(9..15)
        && bytes.get(15) == Some(&b'-'))
    {
        return None;
    }
    let after = &text[16..];
    let len = after.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 || len > 9 {
        return None;
    }
    let number: u32 = after[..len].parse().ok().filter(|n| *n > 0)?;
    Some((
        Build {
            timestamp: text[..15].to_string(),
            number,
        },
        &after[len..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> FileCoords {
        match parse(path).expect(path).target {
            Target::File(coords) => coords,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn files_of_releases_and_snapshots() {
        let jar = file("com/acme/hello/1.0.0/hello-1.0.0.jar");
        assert_eq!(
            (
                jar.group.as_str(),
                jar.artifact.as_str(),
                jar.extension.as_str()
            ),
            ("com.acme", "hello", "jar")
        );
        assert!(!jar.replaceable());
        let sources = file("com/acme/hello/1.0.0/hello-1.0.0-jar-with-deps.tar.gz");
        assert_eq!(sources.classifier.as_deref(), Some("jar-with-deps"));
        assert_eq!(sources.extension, "tar.gz");
        let stamped = file("com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-20261201.101010-3.pom");
        assert_eq!(
            stamped.build,
            Some(Build {
                timestamp: "20261201.101010".into(),
                number: 3
            })
        );
        assert!(!stamped.replaceable());
        assert_eq!(
            stamped
                .build
                .as_ref()
                .map(|b| b.value(&stamped.version))
                .as_deref(),
            Some("1.1.0-20261201.101010-3")
        );
        let plain = file("com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-SNAPSHOT-sources.jar");
        assert!(plain.replaceable());
        assert_eq!(plain.classifier.as_deref(), Some("sources"));
        let checked = parse("com/acme/hello/1.0.0/hello-1.0.0.jar.sha1").expect("sha1");
        assert_eq!(checked.checksum, Some(Checksum::Sha1));
        assert_eq!(
            parse("/com/acme/hello/1.0.0/hello-1.0.0.jar")
                .expect("one leading slash")
                .checksum,
            None
        );
        let build = file("com/acme/hello/1.0.0+7/hello-1.0.0+7.jar");
        assert_eq!(build.version, "1.0.0+7");
    }

    #[test]
    fn metadata_at_every_level() {
        assert_eq!(
            parse("com/acme/hello/maven-metadata.xml.md5")
                .expect("md")
                .target,
            Target::Metadata {
                artifact: Some(("com.acme".into(), "hello".into())),
                group: Some("com.acme.hello".into()),
            }
        );
        assert_eq!(
            parse("org/eclipse/org.eclipse.jdt/maven-metadata.xml")
                .expect("md")
                .target,
            Target::Metadata {
                artifact: Some(("org.eclipse".into(), "org.eclipse.jdt".into())),
                group: None,
            }
        );
        assert_eq!(
            parse("com/maven-metadata.xml").expect("md").target,
            Target::Metadata {
                artifact: None,
                group: Some("com".into()),
            }
        );
        assert_eq!(
            parse("com/acme/hello/1.1.0-SNAPSHOT/maven-metadata.xml")
                .expect("md")
                .target,
            Target::SnapshotMetadata {
                group: "com.acme".into(),
                artifact: "hello".into(),
                version: "1.1.0-SNAPSHOT".into(),
            }
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "",
            "com/acme/hello/1.0.0/",
            "com/../hello/1.0.0/hello-1.0.0.jar",
            "com/%2e%2e/hello/1.0.0/hello-1.0.0.jar",
            "com/acme%2fevil/hello/1.0.0/hello-1.0.0.jar",
            "com\\acme/hello/1.0.0/hello-1.0.0.jar",
            "com//hello/1.0.0/hello-1.0.0.jar",
            "com/acme/hello/1.0.0/other-1.0.0.jar",
            "com/acme/hello/1.0.0/hello-1.0.1.jar",
            "com/acme/hello/1.0.0/hello-1.0.0",
            "com/acme/hello/1.0.0/hello-1.0.0-.jar",
            "com/acme/hello/1.0.0/hello-1.0.0.1.jar",
            "com/acme/hel lo/1.0.0/hel lo-1.0.0.jar",
            "com/ac.me/hello/1.0.0/hello-1.0.0.jar",
            "hello/1.0.0/hello-1.0.0.jar",
            "com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-2026.1-1.jar",
            "com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-20261201.101010-0.jar",
            "com/acme/hello/.hidden/hello-.hidden.jar",
            "maven-metadata.xml",
            "com/acme/hello/1.0.0/hello-1.0.0.jar%00",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
