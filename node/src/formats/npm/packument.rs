//! Packuments, rendered from the state machine on every request: the full document (`npm
//! view`, `?write=true`, publish pre-checks) and the abbreviated one npm install asks for
//! (`application/vnd.npm.install-v1+json`). Each version's stored manifest is spliced in as
//! stored text, with the `dist` object (its tarball URL built from the client-facing base)
//! and the deprecation inserted: nothing is parsed per request.

use std::fmt::Write as _;

use super::model::{PackageRecord, VersionRecord};
use super::names::sort_versions;
use crate::metadata::model::format_ms;

/// The abbreviated packument's media type.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";

/// Which packument a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Full,
    Abbreviated,
}

impl Form {
    /// The abbreviated document when the client lists its media type (npm install does),
    /// unless it asks to write (`?write=true`, which needs `_rev`).
    pub fn negotiate<'a>(accept: impl Iterator<Item = &'a str>, write: bool) -> Form {
        let wants_abbreviated = accept
            .flat_map(|value| value.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';');
                let media = parts.next()?.trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q > 0.0).then_some(media)
            })
            .any(|media| media.eq_ignore_ascii_case(ABBREVIATED));
        if wants_abbreviated && !write {
            Form::Abbreviated
        } else {
            Form::Full
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Form::Full => "application/json",
            Form::Abbreviated => ABBREVIATED,
        }
    }
}

/// `<rev>-<16 hex>`: the CouchDB-shaped revision npm sends back on unpublish.
pub fn rev_string(name: &str, rev: u64) -> String {
    let hash = blake3::hash(format!("{name}\0{rev}").as_bytes());
    format!("{rev}-{}", &hash.to_hex()[..16])
}

/// The revision number of a `_rev` string (`12-abc…` → 12).
pub fn parse_rev(text: &str) -> Option<u64> {
    text.split('-').next()?.parse().ok()
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// Renders a packument. `tarballs` is the URL tarballs are under
/// (`…/npm/<repo>/<name>/-/`); `versions` holds unpublished ones too (left out).
pub fn render(
    form: Form,
    record: &PackageRecord,
    mut versions: Vec<VersionRecord>,
    tarballs: &str,
    basename: &str,
) -> Vec<u8> {
    versions.retain(VersionRecord::live);
    sort_versions(&mut versions, |v| v.version.as_str());
    let per_version: usize = versions
        .iter()
        .map(|v| match form {
            Form::Full => v.manifest.len(),
            Form::Abbreviated => v.abbreviated.len(),
        })
        .sum();
    let mut out = String::with_capacity(per_version + versions.len() * 400 + 1024);
    let name = json_string(&record.name);
    out.push('{');
    if form == Form::Full {
        let _ = write!(
            out,
            "\"_id\":{name},\"_rev\":{},",
            json_string(&rev_string(&record.name, record.rev))
        );
    }
    let _ = write!(out, "\"name\":{name},");
    if form == Form::Abbreviated {
        let _ = write!(
            out,
            "\"modified\":{},",
            json_string(&format_ms(record.modified_at_ms))
        );
    }
    out.push_str("\"dist-tags\":{");
    for (i, (tag, version)) in record.dist_tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", json_string(tag), json_string(version));
    }
    out.push_str("},\"versions\":{");
    for (i, version) in versions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let manifest = match form {
            Form::Full => &version.manifest,
            Form::Abbreviated => &version.abbreviated,
        };
        let _ = write!(out, "{}:", json_string(&version.version));
        splice(&mut out, manifest, version, tarballs, basename);
    }
    out.push('}');
    if form == Form::Full {
        let _ = write!(
            out,
            ",\"time\":{{\"created\":{},\"modified\":{}",
            json_string(&format_ms(record.created_at_ms)),
            json_string(&format_ms(record.modified_at_ms))
        );
        for version in &versions {
            let _ = write!(
                out,
                ",{}:{}",
                json_string(&version.version),
                json_string(&format_ms(version.published_at_ms))
            );
        }
        out.push('}');
        if !record.description.is_empty() {
            let _ = write!(out, ",\"description\":{}", json_string(&record.description));
        }
        if !record.readme.is_empty() {
            let _ = write!(out, ",\"readme\":{}", json_string(&record.readme));
        }
        out.push_str(",\"maintainers\":[]");
    }
    out.push('}');
    out.into_bytes()
}

/// Writes `manifest` (a JSON object) with `dist` and `deprecated` added before its `}`.
fn splice(
    out: &mut String,
    manifest: &str,
    version: &VersionRecord,
    tarballs: &str,
    basename: &str,
) {
    let body = manifest.trim();
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .unwrap_or_default()
        .trim();
    out.push('{');
    if !inner.is_empty() {
        out.push_str(inner);
        out.push(',');
    }
    let tarball = format!("{tarballs}{basename}-{}.tgz", version.version);
    let _ = write!(
        out,
        "\"dist\":{{\"integrity\":{},\"shasum\":{},\"tarball\":{}}}",
        json_string(&version.integrity),
        json_string(&version.shasum),
        json_string(&tarball)
    );
    if let Some(message) = &version.deprecated {
        let _ = write!(out, ",\"deprecated\":{}", json_string(message));
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::digest::{Blake3, Sha256};

    fn version(v: &str, deprecated: Option<&str>) -> VersionRecord {
        VersionRecord {
            version: v.into(),
            manifest: format!(r#"{{"name":"@a/b","version":"{v}"}}"#),
            abbreviated: format!(r#"{{"name":"@a/b","version":"{v}"}}"#),
            blob: Blake3::of(v.as_bytes()),
            sha256: Sha256([0; 32]),
            integrity: "sha512-x".into(),
            shasum: "00".into(),
            size: 1,
            published_at_ms: 0,
            deprecated: deprecated.map(str::to_string),
            unpublished_at_ms: None,
        }
    }

    #[test]
    fn packuments_are_valid_json_with_the_server_dist() {
        let record = PackageRecord {
            name: "@a/b".into(),
            dist_tags: BTreeMap::from([("latest".into(), "1.10.0".into())]),
            description: "d \"quoted\"".into(),
            readme: String::new(),
            versions: 3,
            rev: 4,
            created_at_ms: 0,
            modified_at_ms: 1,
        };
        let mut gone = version("0.1.0", None);
        gone.unpublished_at_ms = Some(1);
        let versions = vec![
            version("1.10.0", None),
            version("1.2.0", Some("use 1.10")),
            gone,
        ];
        for form in [Form::Full, Form::Abbreviated] {
            let body = render(
                form,
                &record,
                versions.clone(),
                "http://h/npm/r/@a/b/-/",
                "b",
            );
            let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let listed: Vec<&String> = doc["versions"]
                .as_object()
                .expect("test value")
                .keys()
                .collect();
            assert_eq!(listed, ["1.10.0", "1.2.0"], "{form:?}");
            assert_eq!(
                doc["versions"]["1.2.0"]["dist"]["tarball"],
                "http://h/npm/r/@a/b/-/b-1.2.0.tgz"
            );
            assert_eq!(doc["versions"]["1.2.0"]["deprecated"], "use 1.10");
            assert_eq!(doc["dist-tags"]["latest"], "1.10.0");
            assert_eq!(doc.get("_rev").is_some(), form == Form::Full);
        }
        assert_eq!(parse_rev(&rev_string("@a/b", 4)), Some(4));
    }

    #[test]
    fn install_gets_the_abbreviated_form_and_writers_the_full_one() {
        let npm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
        assert_eq!(Form::negotiate([npm].into_iter(), false), Form::Abbreviated);
        assert_eq!(Form::negotiate([npm].into_iter(), true), Form::Full);
        assert_eq!(
            Form::negotiate(["application/json"].into_iter(), false),
            Form::Full
        );
        assert_eq!(
            Form::negotiate(
                ["application/vnd.npm.install-v1+json;q=0"].into_iter(),
                false
            ),
            Form::Full
        );
    }
}
