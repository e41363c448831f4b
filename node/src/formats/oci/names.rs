//! Names on the OCI API: the `<name>` of a request split into the Arca repository and the
//! image inside it, tags, digests, and the manifest `<reference>` that is one or the other.
//!
//! Each type can only hold a valid value (parse, don't validate), so the rest of the registry
//! never re-checks a name.

use std::fmt;

use crate::digest::Sha256;
use crate::formats::oci::error::OciError;
use crate::names::RepoName;

/// Longest `<name>` accepted, repository and image together. Many clients limit
/// `host[:port]/name` to 255 characters, so a longer name could not be pulled anyway.
pub const MAX_NAME_LEN: usize = 255;

/// Longest tag, per the distribution spec.
pub const MAX_TAG_LEN: usize = 128;

/// The image part of a `<name>`: one or more `/`-separated path components, each matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

impl ImageName {
    pub fn parse(image: &str) -> Result<Self, OciError> {
        if image.is_empty() {
            return Err(OciError::NameInvalid {
                name: image.into(),
                reason: "the image name is empty".into(),
            });
        }
        if image.len() > MAX_NAME_LEN {
            return Err(OciError::NameInvalid {
                name: truncate(image),
                reason: format!("it is longer than {MAX_NAME_LEN} characters"),
            });
        }
        for component in image.split('/') {
            if !is_path_component(component) {
                return Err(OciError::NameInvalid {
                    name: truncate(image),
                    reason: format!(
                        "path component {:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*",
                        truncate(component)
                    ),
                });
            }
        }
        Ok(Self(image.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses a repository name that `/v2/` could not address: an `oci` repository's name is the
/// first path component of every `<name>`, so it must follow the spec's component grammar,
/// which is stricter than Arca's (no `..`, `_-`, trailing separators).
pub fn check_repo_name(name: &RepoName) -> Result<(), crate::error::Error> {
    if is_path_component(name.as_str()) {
        return Ok(());
    }
    Err(crate::error::Error::InvalidRepoName {
        name: name.to_string(),
        reason: "an oci repository name must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*".into(),
    })
}

/// Whether `component` matches `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One or more alphanumerics.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator: ".", "_", "__" or one or more "-".
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A request's `<name>`: the first path component names the Arca repository (of format
/// `oci`), the rest names the image inside it. `containers/team/app` is image `team/app` in
/// repository `containers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciName {
    pub repo: RepoName,
    pub image: ImageName,
}

impl OciName {
    pub fn parse(name: &str) -> Result<Self, OciError> {
        if name.len() > MAX_NAME_LEN {
            return Err(OciError::NameInvalid {
                name: truncate(name),
                reason: format!("it is longer than {MAX_NAME_LEN} characters"),
            });
        }
        let Some((repo, image)) = name.split_once('/') else {
            return Err(OciError::NameInvalid {
                name: truncate(name),
                reason: "a name is <repository>/<image>: the first path component names the Arca \
                         repository, the rest the image in it"
                    .into(),
            });
        };
        if !is_path_component(repo) {
            return Err(OciError::NameInvalid {
                name: truncate(name),
                reason: format!(
                    "path component {:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*",
                    truncate(repo)
                ),
            });
        }
        let repo = RepoName::parse(repo).map_err(|e| OciError::NameInvalid {
            name: truncate(name),
            reason: e.to_string(),
        })?;
        Ok(Self {
            repo,
            image: ImageName::parse(image)?,
        })
    }
}

impl fmt::Display for OciName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.repo, self.image)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(tag: &str) -> Result<Self, OciError> {
        let bytes = tag.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b));
        if !first_ok || !rest_ok || bytes.len() > MAX_TAG_LEN {
            return Err(OciError::ManifestInvalid {
                reason: format!(
                    "{:?} is neither a digest nor a tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}})",
                    truncate(tag)
                ),
            });
        }
        Ok(Self(tag.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key tags sort by: the spec orders tags case-insensitively, ties broken by the tag
    /// itself so that every tag has one place.
    pub fn sort_key(&self) -> Vec<u8> {
        let mut key = self.0.to_ascii_lowercase().into_bytes();
        key.push(0);
        key.extend_from_slice(self.0.as_bytes());
        key
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestProblem {
    /// Not `algorithm:encoded` per the OCI grammar (or bad hex for a known algorithm).
    Malformed(String),
    /// Well formed, but Arca indexes content by sha256 only.
    Unsupported(String),
}

/// Parses an OCI digest string into the sha256 it names.
pub fn parse_digest(text: &str) -> Result<Sha256, DigestProblem> {
    let digest: oci_spec::image::Digest = text
        .parse()
        .map_err(|e: oci_spec::OciSpecError| DigestProblem::Malformed(e.to_string()))?;
    if *digest.algorithm() != oci_spec::image::DigestAlgorithm::Sha256 {
        return Err(DigestProblem::Unsupported(format!(
            "digest algorithm {} is not supported; Arca stores sha256 digests",
            digest.algorithm()
        )));
    }
    Sha256::from_hex(digest.digest())
        .ok_or_else(|| DigestProblem::Malformed("sha256 digests are 64 hex characters".into()))
}

/// `sha256:<hex>`, the way the OCI API writes a digest.
pub fn digest_string(sha: &Sha256) -> String {
    format!("sha256:{}", sha.to_hex())
}

/// The `<reference>` of a manifest request: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Sha256),
}

impl Reference {
    /// A reference with a `:` is a digest; anything else must be a tag.
    pub fn parse(reference: &str) -> Result<Self, OciError> {
        if reference.contains(':') {
            return match parse_digest(reference) {
                Ok(sha) => Ok(Reference::Digest(sha)),
                Err(DigestProblem::Malformed(reason)) | Err(DigestProblem::Unsupported(reason)) => {
                    Err(OciError::DigestInvalid { reason })
                }
            };
        }
        Ok(Reference::Tag(Tag::parse(reference)?))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag.as_str()),
            Reference::Digest(sha) => f.write_str(&digest_string(sha)),
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

use crate::names::serde_via_parse;
serde_via_parse!(ImageName);
serde_via_parse!(Tag);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_split_into_repository_and_image() {
        let name = OciName::parse("containers/team/app").expect("valid");
        assert_eq!(name.repo.as_str(), "containers");
        assert_eq!(name.image.as_str(), "team/app");
        assert_eq!(name.to_string(), "containers/team/app");
        for ok in [
            "a/b",
            "c/a.b_c__d---e/f",
            "c0/0",
            "docker.io/library/ubuntu",
        ] {
            assert!(OciName::parse(ok).is_ok(), "{ok}");
        }
        let long = format!("r/{}", "a".repeat(254));
        for bad in [
            "",
            "repo",
            "repo/",
            "/image",
            "Repo/app",
            "repo/App",
            "repo/a//b",
            "repo/a/",
            "repo/-a",
            "repo/a-",
            "repo/a..b",
            "repo/a___b",
            "repo/a_.b",
            "repo/a:b",
            "repo/ä",
            "-repo/a",
            long.as_str(),
        ] {
            assert!(OciName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(OciName::parse(&format!("r/{}", "a".repeat(253))).is_ok());
    }

    #[test]
    fn tags_and_references() {
        for ok in ["latest", "1.4", "_x", "V1.0-rc_2", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a b", "ä", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
        let sha = Sha256([0xab; 32]);
        assert_eq!(
            Reference::parse(&digest_string(&sha)).ok(),
            Some(Reference::Digest(sha))
        );
        assert!(matches!(
            Reference::parse("sha256:abc"),
            Err(OciError::DigestInvalid { .. })
        ));
        assert!(matches!(
            Reference::parse(&format!("sha512:{}", "a".repeat(128))),
            Err(OciError::DigestInvalid { .. })
        ));
        assert!(matches!(
            Reference::parse(&format!("sha256:{}", "A".repeat(64))),
            Err(OciError::DigestInvalid { .. })
        ));
    }

    #[test]
    fn digests_are_sha256_only() {
        assert!(matches!(
            parse_digest(&format!("sha512:{}", "a".repeat(128))),
            Err(DigestProblem::Unsupported(_))
        ));
        assert!(matches!(
            parse_digest("sha256"),
            Err(DigestProblem::Malformed(_))
        ));
        assert!(matches!(
            parse_digest("sha256:../../x"),
            Err(DigestProblem::Malformed(_))
        ));
    }

    #[test]
    fn tags_sort_case_insensitively() {
        let mut tags: Vec<Tag> = ["b", "A", "a", "B1", "a.b", "a-b"]
            .iter()
            .map(|t| Tag::parse(t).expect("tag"))
            .collect();
        tags.sort_by_key(Tag::sort_key);
        let sorted: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        assert_eq!(sorted, vec!["A", "a", "a-b", "a.b", "b", "B1"]);
    }

    proptest! {
        #[test]
        fn component_grammar_matches_the_spec_regex(component in "[a-z0-9._-]{1,12}") {
            // The spec's regex, by a different route: split on separator runs and check.
            let expected = {
                let bytes = component.as_bytes();
                let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
                let mut ok = alnum(&bytes[0]) && alnum(&bytes[bytes.len() - 1]);
                let mut run = String::new();
                for b in bytes {
                    if alnum(b) {
                        if !run.is_empty() {
                            ok &= run == "." || run == "_" || run == "__" || run.bytes().all(|c| c == b'-');
                            run.clear();
                        }
                    } else {
                        run.push(*b as char);
                    }
                }
                ok
            };
            prop_assert_eq!(is_path_component(&component), expected);
        }

        #[test]
        fn accepted_names_round_trip(repo in "[a-z0-9]{1,10}", image in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}") {
            let text = format!("{repo}/{image}");
            let name = OciName::parse(&text).expect("valid name");
            prop_assert_eq!(name.to_string(), text);
        }
    }
}
