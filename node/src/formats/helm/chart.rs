//! What a chart upload is checked for: the archive is a gzipped tar holding
//! `{dir}/Chart.yaml` at its top level; `Chart.yaml` is YAML (at most 1 MiB) with an
//! `apiVersion`, a valid `name` and a SemVer 2 `version`. Its fields become the chart's
//! `index.yaml` entry. Provenance files are clear-signed documents naming the archive and its
//! sha256 in their `files:` section.

use std::io::Read;

use serde_json::{Map, Value};

/// Largest `Chart.yaml`.
const MAX_CHART_YAML: u64 = 1 << 20;
/// Most bytes unpacked while looking for it, and most entries looked at.
const MAX_UNPACKED: u64 = 512 << 20;
const MAX_ENTRIES: usize = 100_000;
/// The longest chart name.
pub const MAX_NAME: usize = 250;

/// A chart's metadata, from its `Chart.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
    /// Every field of `Chart.yaml`, as JSON.
    pub fields: Map<String, Value>,
}

/// Checks a chart name: ASCII letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit, no `..`, at most [`MAX_NAME`] characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the chart name {name:?} must be 1 to {MAX_NAME} ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        ))
    }
}

/// The archive file name of a chart version.
pub fn archive_name(name: &str, version: &str) -> String {
    format!("{name}-{version}.tgz")
}

/// The `(name, version)` splits of an archive file name `{name}-{version}.tgz` whose version
/// is SemVer 2 (a name may hold `-`, so there can be several).
pub fn splits(file: &str) -> Vec<(&str, &str)> {
    let Some(stem) = file.strip_suffix(".tgz") else {
        return Vec::new();
    };
    stem.match_indices('-')
        .map(|(at, _)| (&stem[..at], &stem[at + 1..]))
        .filter(|(name, version)| {
            check_name(name).is_ok() && semver::Version::parse(version).is_ok()
        })
        .collect()
}

/// Reads and checks a chart archive.
pub fn read_chart(archive: &[u8]) -> Result<ChartMeta, String> {
    let gz = flate2::read::GzDecoder::new(archive).take(MAX_UNPACKED);
    let mut tar = tar::Archive::new(gz);
    let entries = tar
        .entries()
        .map_err(|e| format!("the chart is not a gzipped tar: {e}"))?;
    for entry in entries.take(MAX_ENTRIES) {
        let mut entry = entry.map_err(|e| format!("the chart is not a gzipped tar: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("a chart entry has a bad path: {e}"))?
            .into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || parts[1].as_os_str() != "Chart.yaml" {
            continue;
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_CHART_YAML + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading Chart.yaml: {e}"))?;
        if text.len() as u64 > MAX_CHART_YAML {
            return Err(format!("its Chart.yaml is over {MAX_CHART_YAML} bytes"));
        }
        return parse_chart_yaml(&text);
    }
    Err("the chart has no Chart.yaml in its top directory".into())
}

/// Parses `Chart.yaml`.
pub fn parse_chart_yaml(text: &str) -> Result<ChartMeta, String> {
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| format!("Chart.yaml is not valid YAML: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("Chart.yaml is not a mapping".into());
    };
    let field = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or_default();
    if field("apiVersion").is_empty() {
        return Err("Chart.yaml has no apiVersion".into());
    }
    let name = field("name").to_string();
    check_name(&name)?;
    let version = field("version").to_string();
    semver::Version::parse(&version)
        .map_err(|e| format!("the chart version {version:?} is not SemVer 2: {e}"))?;
    Ok(ChartMeta {
        name,
        version,
        fields,
    })
}

/// The sha256 a provenance file gives for `file` (`files:` → `file: sha256:<hex>`).
pub fn prov_digest<'a>(prov: &'a str, file: &str) -> Option<&'a str> {
    prov.lines()
        .filter_map(|line| line.trim().strip_prefix(file)?.strip_prefix(':'))
        .find_map(|rest| rest.trim().strip_prefix("sha256:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_yaml_is_parsed_and_checked() {
        let meta = parse_chart_yaml(
            "apiVersion: v2\nname: web\nversion: 1.2.3\nappVersion: \"4.5\"\ndescription: a chart\nkeywords: [a, b]\n",
        )
        .expect("valid");
        assert_eq!(
            (meta.name.as_str(), meta.version.as_str()),
            ("web", "1.2.3")
        );
        assert_eq!(meta.fields["appVersion"], "4.5");
        assert_eq!(meta.fields["keywords"][1], "b");
        for bad in [
            "name: web\nversion: 1.0.0\n",
            "apiVersion: v2\nname: ../x\nversion: 1.0.0\n",
            "apiVersion: v2\nname: web\nversion: one\n",
            "- a list\n",
            "apiVersion: v2\nname: [web\n",
        ] {
            assert!(parse_chart_yaml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_names_split_at_the_version() {
        assert_eq!(
            splits("my-chart-1.2.3-rc.1.tgz"),
            [("my-chart", "1.2.3-rc.1")]
        );
        assert_eq!(splits("web-0.1.0.tgz"), [("web", "0.1.0")]);
        assert!(splits("web.tgz").is_empty());
        assert!(splits("web-0.1.0.zip").is_empty());
    }

    #[test]
    fn provenance_names_the_archive_digest() {
        let prov = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\napiVersion: v2\nname: web\n\n...\nfiles:\n  web-0.1.0.tgz: sha256:abcd\n-----BEGIN PGP SIGNATURE-----\n";
        assert_eq!(prov_digest(prov, "web-0.1.0.tgz"), Some("abcd"));
        assert_eq!(prov_digest(prov, "web-0.2.0.tgz"), None);
    }
}
