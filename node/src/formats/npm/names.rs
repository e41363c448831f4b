//! Package names (npm's rules for new packages), versions (strict semver), dist-tags and
//! tarball file names.

/// Longest package name, scope included (npm's limit).
pub const MAX_NAME: usize = 214;
/// Longest version string.
const MAX_VERSION: usize = 256;
/// Longest dist-tag.
const MAX_TAG: usize = 128;

/// A valid package name: `name` or `@scope/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName(String);

impl PackageName {
    /// Checks a name the way the npm registry does for new packages: lowercase, URL-safe,
    /// no leading `.` or `_`, at most 214 characters; a scope is `@scope/`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_NAME {
            return Err(format!("a package name has 1 to {MAX_NAME} characters"));
        }
        let (scope, name) = match raw.strip_prefix('@') {
            Some(rest) => match rest.split_once('/') {
                Some((scope, name)) => (Some(scope), name),
                None => return Err(format!("{raw:?}: a scoped name is @scope/name")),
            },
            None => (None, raw),
        };
        if let Some(scope) = scope {
            check_part(raw, scope, "scope")?;
        }
        check_part(raw, name, "name")?;
        if scope.is_none() && matches!(name, "node_modules" | "favicon.ico") {
            return Err(format!("{raw:?} is a reserved name"));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name without its scope: what a tarball file name starts with.
    pub fn basename(&self) -> &str {
        self.0
            .rsplit_once('/')
            .map_or(self.0.as_str(), |(_, name)| name)
    }

    /// `name-1.0.0.tgz`: a tarball's file name (it never carries the scope).
    pub fn tarball(&self, version: &str) -> String {
        format!("{}-{version}.tgz", self.basename())
    }

    /// The version a tarball file name of this package names, if it is one.
    pub fn version_of_tarball<'f>(&self, filename: &'f str) -> Option<&'f str> {
        filename
            .strip_prefix(self.basename())?
            .strip_prefix('-')?
            .strip_suffix(".tgz")
            .filter(|v| !v.is_empty())
    }

    /// The name as one path segment (`@scope%2fname`), the way npm writes it in URLs.
    pub fn encoded(&self) -> String {
        self.0.replace('/', "%2f")
    }
}

impl std::fmt::Display for PackageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_part(raw: &str, part: &str, what: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("{raw:?}: the {what} is empty"));
    }
    if part.starts_with('.') || part.starts_with('_') {
        return Err(format!("{raw:?}: a {what} cannot start with . or _"));
    }
    if let Some(bad) = part.chars().find(|c| {
        !(c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '-' | '.' | '_' | '~' | '!' | '(' | ')' | '*' | '\''))
    }) {
        return Err(format!(
            "{raw:?}: {bad:?} is not allowed in a {what} (lowercase letters, digits and -._~!()*' only)"
        ));
    }
    Ok(())
}

/// Parses a version as strict semver (what npm publishes); the answer is its canonical form,
/// which must equal the text (`v1.0.0` and `1.0` are refused).
pub fn parse_version(text: &str) -> Result<semver::Version, String> {
    if text.is_empty() || text.len() > MAX_VERSION {
        return Err(format!("a version has 1 to {MAX_VERSION} characters"));
    }
    let version = semver::Version::parse(text)
        .map_err(|e| format!("{text:?} is not a semver version: {e}"))?;
    if version.to_string() != text {
        return Err(format!("{text:?} is not in canonical form ({version})"));
    }
    Ok(version)
}

/// Sorts versions by semver precedence (unparsable ones first, by text).
pub fn sort_versions<T>(items: &mut [T], version: impl Fn(&T) -> &str) {
    items.sort_by_cached_key(|item| {
        let text = version(item);
        (semver::Version::parse(text).ok(), text.to_string())
    });
}

/// Checks a dist-tag: not empty, URL-safe, and not itself a version or range (npm refuses
/// tags that parse as one, or `npm install pkg@tag` would be ambiguous).
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > MAX_TAG {
        return Err(format!("a dist-tag has 1 to {MAX_TAG} characters"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "dist-tag {tag:?}: letters, digits, '-', '.' and '_' only"
        ));
    }
    if semver::VersionReq::parse(tag).is_ok() {
        return Err(format!("dist-tag {tag:?} looks like a version range"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_registry_rules() {
        for good in ["hello", "@acme/hello", "a.b-c_d", "@a/b", "x~y"] {
            assert!(PackageName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Hello",
            ".hidden",
            "_x",
            "@acme",
            "@acme/",
            "@/x",
            "a b",
            "a/b",
            "@acme/x/y",
            "../x",
            "node_modules",
            &"a".repeat(215),
        ] {
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
        let scoped = PackageName::parse("@acme/hello").expect("test value");
        assert_eq!(scoped.basename(), "hello");
        assert_eq!(scoped.tarball("1.0.0"), "hello-1.0.0.tgz");
        assert_eq!(scoped.version_of_tarball("hello-1.0.0.tgz"), Some("1.0.0"));
        assert_eq!(
            scoped.version_of_tarball("hello-1.0.0-rc.1.tgz"),
            Some("1.0.0-rc.1")
        );
        assert_eq!(scoped.version_of_tarball("other-1.0.0.tgz"), None);
        assert_eq!(scoped.encoded(), "@acme%2fhello");
    }

    #[test]
    fn versions_are_canonical_semver_and_tags_are_not_versions() {
        assert!(parse_version("1.0.0").is_ok());
        assert!(parse_version("1.0.0-beta.1+build.5").is_ok());
        for bad in ["", "v1.0.0", "1.0", "01.0.0", "1.0.0 ", "latest"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
        let mut versions = vec!["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.0"];
        sort_versions(&mut versions, |v| v);
        assert_eq!(versions, ["0.9.0", "1.2.0-rc.1", "1.2.0", "1.10.0"]);
        assert!(check_tag("beta").is_ok());
        assert!(check_tag("next-2").is_ok());
        for bad in ["", "1.0.0", "^1", "a b", "x/y"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
