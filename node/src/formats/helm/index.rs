//! `index.yaml`, assembled from the per-chart fragments the apply loop keeps (a publish
//! re-renders its own chart's entries, never the whole index), and cached per repository until
//! the repository's generation moves. It is written as JSON, which is YAML and which helm
//! reads as such; entry URLs are relative (`charts/{name}-{version}.tgz`), which helm resolves
//! against the repository URL, so the document does not depend on the host a client used.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use super::chart::{archive_name, ChartMeta};
use super::model::{ChartRecord, Generation, VersionRecord};
use crate::names::RepoName;

/// Most repositories whose index a node keeps assembled.
const CACHED_REPOS: usize = 64;

/// Versions newest first, in semver order (unparseable versions last).
pub fn sort_newest_first(versions: &mut [VersionRecord]) {
    versions.sort_by(|a, b| {
        let (a, b) = (
            semver::Version::parse(&a.version).ok(),
            semver::Version::parse(&b.version).ok(),
        );
        b.cmp(&a)
    });
}

/// RFC 3339 with nanoseconds, as helm writes `created` and `generated`.
pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default()
}

/// A version's entry: every `Chart.yaml` field, `created`, `digest` (the archive's sha256)
/// and `urls`.
pub fn entry(meta: &ChartMeta, digest: &str, created_ms: i64) -> String {
    let mut fields = meta.fields.clone();
    fields.insert("created".into(), Value::String(timestamp(created_ms)));
    fields.insert("digest".into(), Value::String(digest.to_string()));
    fields.insert(
        "urls".into(),
        Value::Array(vec![Value::String(format!(
            "charts/{}",
            archive_name(&meta.name, &meta.version)
        ))]),
    );
    Value::Object(fields).to_string()
}

/// The whole document of `charts` (in name order) at `generation`.
pub fn assemble(charts: &[ChartRecord], generation: Option<Generation>) -> Vec<u8> {
    let size: usize = charts
        .iter()
        .map(|c| c.entries.len() + c.name.len() + 8)
        .sum();
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(b"{\"apiVersion\":\"v1\",\"entries\":{");
    let mut first = true;
    for chart in charts.iter().filter(|c| !c.entries.is_empty()) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(Value::String(chart.name.clone()).to_string().as_bytes());
        out.extend_from_slice(b":[");
        out.extend_from_slice(chart.entries.as_bytes());
        out.push(b']');
    }
    out.extend_from_slice(b"},\"generated\":\"");
    out.extend_from_slice(timestamp(generation.map_or(0, |g| g.at_ms)).as_bytes());
    out.extend_from_slice(b"\"}\n");
    out
}

/// An assembled index: the document and its gzip encoding (helm asks for gzip; a large index
/// is a tenth of its size so).
#[derive(Clone)]
pub struct Assembled {
    pub seq: u64,
    pub plain: Bytes,
    pub gzip: Bytes,
}

/// Assembled indexes by repository, each with the generation it was built at.
#[derive(Default)]
pub struct IndexCache {
    built: Mutex<HashMap<RepoName, Assembled>>,
}

impl IndexCache {
    /// The index of `repo` at generation `seq`, built with `build` when the cache has another.
    pub fn get_or_build(
        &self,
        repo: &RepoName,
        seq: u64,
        build: impl FnOnce() -> crate::error::Result<Vec<u8>>,
    ) -> crate::error::Result<Assembled> {
        if let Some(assembled) = self.built.lock().get(repo) {
            if assembled.seq == seq {
                return Ok(assembled.clone());
            }
        }
        let plain = build()?;
        let gzip = {
            use std::io::Write as _;
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(plain.len() / 8),
                flate2::Compression::fast(),
            );
            encoder
                .write_all(&plain)
                .and_then(|()| encoder.finish())
                .map_err(|e| crate::error::Error::internal("compress index.yaml", e))?
        };
        let assembled = Assembled {
            seq,
            plain: Bytes::from(plain),
            gzip: Bytes::from(gzip),
        };
        let mut built = self.built.lock();
        if built.len() >= CACHED_REPOS && !built.contains_key(repo) {
            // Any one goes: a repository read again is rebuilt from its fragments.
            if let Some(evicted) = built.keys().next().cloned() {
                built.remove(&evicted);
            }
        }
        built.insert(repo.clone(), assembled.clone());
        Ok(assembled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(name: &str, entries: &str) -> ChartRecord {
        ChartRecord {
            name: name.into(),
            versions: 1,
            entries: entries.into(),
            latest: String::new(),
            created_at_ms: 0,
            modified_at_ms: 0,
        }
    }

    #[test]
    fn the_index_is_json_helm_reads() {
        let body = assemble(
            &[
                chart("a", r#"{"version":"2.0.0"},{"version":"1.0.0"}"#),
                chart("b\"q", r#"{"version":"0.1.0"}"#),
            ],
            Some(Generation {
                seq: 3,
                at_ms: 1_700_000_000_000,
            }),
        );
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["entries"]["a"][0]["version"], "2.0.0");
        assert_eq!(doc["entries"]["b\"q"][0]["version"], "0.1.0");
        assert_eq!(doc["generated"], "2023-11-14T22:13:20.000000000Z");
        let empty: Value = serde_json::from_slice(&assemble(&[], None)).expect("json");
        assert_eq!(empty["entries"], serde_json::json!({}));
    }
}
