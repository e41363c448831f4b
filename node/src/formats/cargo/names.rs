//! Crate names, versions and index paths.
//!
//! A crate name is 1–64 ASCII letters, digits, `-` and `_`, starting with a letter, as
//! crates.io takes them. Two names that differ only in case or in `-` against `_` are the same
//! crate ([`normalized`]): a registry holds one of them, under the spelling first published.
//! The sparse index serves a crate's file at a path of its lowercased name.

/// The longest crate name.
pub const MAX_NAME: usize = 64;

/// Checks a crate name (the rules of the module documentation).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "the crate name {name:?} must be 1 to {MAX_NAME} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("the crate name {name:?} must start with a letter"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "the crate name {name:?} holds {bad:?}: only ASCII letters, digits, `-` and `_` are allowed"
        ));
    }
    Ok(())
}

/// The name crates are unique by: lowercased, `-` as `_`.
pub fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

/// The index path of a crate (`ar/ca/arca-hello`, `3/a/abc`, `2/ab`, `1/a`), lowercased.
pub fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.len() {
        1 => format!("1/{lower}"),
        2 => format!("2/{lower}"),
        3 => format!("3/{}/{lower}", &lower[..1]),
        _ => format!("{}/{}/{lower}", &lower[..2], &lower[2..4]),
    }
}

/// The crate name an index path names, when the path is the one [`index_path`] gives it.
pub fn name_of_index_path(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    (check_name(name).is_ok() && index_path(name) == path).then_some(name)
}

/// Checks a version: semver, without leading `v` or spaces; build metadata is allowed but not
/// significant (`1.0.0+a` and `1.0.0+b` are the same version to cargo).
pub fn check_version(vers: &str) -> Result<semver::Version, String> {
    semver::Version::parse(vers).map_err(|e| format!("{vers:?} is not a semver version: {e}"))
}

/// The version without build metadata: what cargo compares.
pub fn without_build(vers: &str) -> &str {
    vers.split_once('+').map_or(vers, |(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_normalized() {
        for good in ["a", "serde", "arca-hello_lib", "X9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "9lives",
            "-x",
            "with space",
            "ünï",
            "a/b",
            "..",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(normalized("Arca-Hello_lib"), "arca_hello_lib");
    }

    #[test]
    fn index_paths_follow_the_sparse_layout() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("Abc"), "3/a/abc");
        assert_eq!(index_path("arca-hello-lib"), "ar/ca/arca-hello-lib");
        assert_eq!(
            name_of_index_path("ar/ca/arca-hello-lib"),
            Some("arca-hello-lib")
        );
        assert_eq!(name_of_index_path("ar/cb/arca-hello-lib"), None);
        assert_eq!(name_of_index_path("../ca/arca"), None);
        assert_eq!(name_of_index_path("AR/CA/ARCA"), None);
    }

    #[test]
    fn versions_are_semver() {
        assert!(check_version("0.1.0").is_ok());
        assert!(check_version("1.0.0-beta.1+build.5").is_ok());
        assert!(check_version("v1.0.0").is_err());
        assert!(check_version("1.0").is_err());
        assert_eq!(without_build("1.0.0+abc"), "1.0.0");
    }
}
