//! Validated names: a [`RepoName`] or [`ArtifactPath`] that exists is a valid one.

use std::fmt;

use crate::error::Error;

/// Longest artifact path, in bytes of UTF-8.
pub const MAX_PATH_BYTES: usize = 1024;

/// A repository name: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::InvalidRepoName {
            name: name.chars().take(80).collect(),
            reason: why.to_string(),
        };
        let bytes = name.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(invalid("it is empty"));
        };
        if bytes.len() > 64 {
            return Err(invalid("it is longer than 64 characters"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(invalid("it must start with a lowercase letter or a digit"));
        }
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b);
        if !bytes.iter().all(allowed) {
            return Err(invalid(
                "only lowercase letters, digits, '.', '_' and '-' are allowed",
            ));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path inside a repository: non-empty UTF-8, at most [`MAX_PATH_BYTES`] bytes, `/`-separated
/// segments none of which is empty, `.` or `..`, and no control characters (NUL included).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactPath(String);

impl ArtifactPath {
    pub fn parse(path: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::InvalidPath {
            reason: why.to_string(),
        };
        if path.is_empty() {
            return Err(invalid("the path is empty"));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(invalid("the path is longer than 1024 bytes"));
        }
        if path.chars().any(char::is_control) {
            return Err(invalid("the path contains a NUL or control character"));
        }
        for segment in path.split('/') {
            match segment {
                "" => {
                    return Err(invalid(
                        "the path has an empty segment ('//', or a leading or trailing '/')",
                    ))
                }
                "." | ".." => return Err(invalid("the path has a '.' or '..' segment")),
                _ => {}
            }
        }
        Ok(Self(path.to_string()))
    }

    /// Parses a percent-encoded path as it appears in a URL, refusing bytes that are not UTF-8.
    pub fn from_url_encoded(raw: &str) -> Result<Self, Error> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Error::InvalidPath {
                reason: "the path is not valid UTF-8".into(),
            })?;
        Self::parse(&decoded)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ArtifactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes a name type as its string and deserializes it through its `parse`, so a stored
/// or received name is always a valid one (used by every format's name types too).
macro_rules! serde_via_parse {
    ($ty:ident) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <String as ::serde::Deserialize>::deserialize(d)?;
                $ty::parse(&raw).map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_parse;
serde_via_parse!(RepoName);
serde_via_parse!(ArtifactPath);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repo_names() {
        for ok in ["a", "0", "libs-release", "a.b_c-d", &"x".repeat(64)] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn artifact_paths() {
        for ok in [
            "a",
            "a/b/c.tar.gz",
            "v1.0/..hidden",
            "a/.../b",
            "ünïcode/файл",
            "a b",
        ] {
            assert!(ArtifactPath::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(1025);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "./a",
            "a/.",
            "a\0b",
            "a\nb",
            long.as_str(),
        ] {
            assert!(ArtifactPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ArtifactPath::parse(&"a".repeat(1024)).is_ok());
    }

    #[test]
    fn url_encoded_paths() {
        assert_eq!(
            ArtifactPath::from_url_encoded("dir/a%20b.txt")
                .map(|p| p.0)
                .ok(),
            Some("dir/a b.txt".to_string())
        );
        assert!(ArtifactPath::from_url_encoded("a/%2e%2e/b").is_err());
        assert!(ArtifactPath::from_url_encoded("a%00b").is_err());
        assert!(ArtifactPath::from_url_encoded("bad%ff%fe").is_err());
    }

    proptest! {
        #[test]
        fn valid_repo_names_match_the_grammar(name in "[a-z0-9][a-z0-9._-]{0,63}") {
            prop_assert!(RepoName::parse(&name).is_ok());
        }

        #[test]
        fn repo_parse_never_accepts_outside_the_grammar(name in "\\PC{0,70}") {
            let re_ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            prop_assert_eq!(RepoName::parse(&name).is_ok(), re_ok);
        }

        #[test]
        fn accepted_paths_have_no_traversal(path in "[a-z./]{1,40}") {
            if let Ok(p) = ArtifactPath::parse(&path) {
                prop_assert!(p.as_str().split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            }
        }
    }
}
