//! Project names (PEP 503 normalization, PEP 508 validity), versions (PEP 440) and
//! distribution file names (wheel and sdist), as the upload and the index use them.

use std::str::FromStr;

/// Longest project name accepted.
const MAX_NAME: usize = 200;
/// Longest distribution file name accepted.
const MAX_FILENAME: usize = 255;

/// The PEP 503 normal form: runs of `-`, `_` and `.` become one `-`, lowercased.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.extend(c.to_lowercase());
            in_separator = false;
        }
    }
    out
}

/// Checks a project name against PEP 508 (ASCII letters and digits, with `.`, `_` and `-`
/// inside).
pub fn check_project_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a project name has 1 to {MAX_NAME} characters"));
    }
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    if !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return Err("a project name starts and ends with a letter or digit".into());
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    {
        return Err("a project name has only ASCII letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}

/// A PEP 440 version, with its normal form.
pub fn parse_version(version: &str) -> Result<pep440_rs::Version, String> {
    if version.is_empty() || version.len() > 128 {
        return Err("a version has 1 to 128 characters".into());
    }
    pep440_rs::Version::from_str(version)
        .map_err(|e| format!("{version:?} is not a PEP 440 version: {e}"))
}

/// Whether two version strings name the same PEP 440 version (`1.0` and `1.0.0` do; a
/// string that does not parse only equals itself).
pub fn same_version(a: &str, b: &str) -> bool {
    match (
        pep440_rs::Version::from_str(a),
        pep440_rs::Version::from_str(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Orders version strings as PEP 440 does (unparsable ones first, by text).
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    version_key(a).cmp(&version_key(b))
}

/// The sort key of [`version_order`], to parse each version once when sorting many
/// (`sort_by_cached_key`).
pub fn version_key(version: &str) -> (Option<pep440_rs::Version>, String) {
    (
        pep440_rs::Version::from_str(version).ok(),
        version.to_string(),
    )
}

/// The kind of a distribution file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    /// `.whl` (a zip holding `<name>-<version>.dist-info/METADATA`).
    Wheel,
    /// `.tar.gz` (holding `<name>-<version>/PKG-INFO`).
    SdistTar,
    /// `.zip` (a legacy sdist).
    SdistZip,
}

impl DistKind {
    /// The `filetype` form field twine sends for it.
    pub fn filetype(self) -> &'static str {
        match self {
            DistKind::Wheel => "bdist_wheel",
            DistKind::SdistTar | DistKind::SdistZip => "sdist",
        }
    }
}

/// A parsed distribution file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFilename {
    pub kind: DistKind,
    /// The project name as the file spells it (wheels escape `-` as `_`).
    pub name: String,
    /// The version as the file spells it.
    pub version: String,
}

/// Parses a wheel (`name-ver(-build)?-py-abi-plat.whl`) or sdist (`name-ver.tar.gz`,
/// `name-ver.zip`) file name; refuses anything that could be a path.
pub fn parse_filename(filename: &str) -> Result<DistFilename, String> {
    if filename.is_empty() || filename.len() > MAX_FILENAME {
        return Err(format!("a file name has 1 to {MAX_FILENAME} characters"));
    }
    if filename.starts_with('.')
        || filename.contains("..")
        || !filename
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+!".contains(&b))
    {
        return Err(format!(
            "{filename:?} is not a distribution file name (letters, digits and '._-+!' only)"
        ));
    }
    if let Some(stem) = filename.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "{filename:?} is not a wheel name (name-version[-build]-python-abi-platform.whl)"
            ));
        }
        return Ok(DistFilename {
            kind: DistKind::Wheel,
            name: parts[0].to_string(),
            version: parts[1].replace('_', "-"),
        });
    }
    let (stem, kind) = if let Some(stem) = filename.strip_suffix(".tar.gz") {
        (stem, DistKind::SdistTar)
    } else if let Some(stem) = filename.strip_suffix(".zip") {
        (stem, DistKind::SdistZip)
    } else {
        return Err(format!(
            "{filename:?} is neither a wheel (.whl) nor an sdist (.tar.gz, .zip)"
        ));
    };
    match stem.rsplit_once('-') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok(DistFilename {
            kind,
            name: name.to_string(),
            version: version.to_string(),
        }),
        _ => Err(format!(
            "{filename:?} is not an sdist name (name-version.tar.gz)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_as_pep_503_does() {
        assert_eq!(normalize("Arca.Hello"), "arca-hello");
        assert_eq!(normalize("arca__hello--World"), "arca-hello-world");
        assert_eq!(normalize("A-_.b"), "a-b");
    }

    #[test]
    fn project_names() {
        check_project_name("Arca_Hello.2").expect("valid");
        for bad in ["", "-a", "a-", "a b", "a/b", "ä", &"a".repeat(201)] {
            assert!(check_project_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_compare_as_pep_440() {
        assert!(same_version("1.0", "1.0.0"));
        assert!(same_version("1.0rc1", "1.0.0-rc.1"));
        assert!(!same_version("1.0", "1.1"));
        let mut versions = vec!["1.10", "1.2", "1.0rc1", "1.0", "1.0.post1"];
        versions.sort_by(|a, b| version_order(a, b));
        assert_eq!(versions, ["1.0rc1", "1.0", "1.0.post1", "1.2", "1.10"]);
    }

    #[test]
    fn file_names() {
        let wheel = parse_filename("arca_hello-0.1.0-py3-none-any.whl").expect("wheel");
        assert_eq!(
            (wheel.kind, wheel.name.as_str(), wheel.version.as_str()),
            (DistKind::Wheel, "arca_hello", "0.1.0")
        );
        let built = parse_filename("numpy-2.0.0-1-cp312-cp312-manylinux_2_17_x86_64.whl");
        assert_eq!(built.expect("build tag").version, "2.0.0");
        let sdist = parse_filename("arca-hello-0.1.0.tar.gz").expect("sdist");
        assert_eq!(
            (sdist.name.as_str(), sdist.version.as_str()),
            ("arca-hello", "0.1.0")
        );
        for bad in [
            "../evil-1.0.tar.gz",
            "a/b-1.0.tar.gz",
            ".hidden-1.0.tar.gz",
            "x-1.0.exe",
            "x.whl",
            "x-1.0-py3-none.whl",
            "noversion.tar.gz",
            "a%2fb-1.0.tar.gz",
        ] {
            assert!(parse_filename(bad).is_err(), "{bad}");
        }
    }
}
