//! HTTP pieces every format's routes share: `Range` and `If-None-Match`, the `{repo}` path
//! extractor, and the marker the read barrier leaves on reads it let through unconfirmed.

use std::ops::Range;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::{Error, Result};
use crate::names::RepoName;

/// Header naming how a read was served: `linearizable`; `immutable` (content by digest, or in
/// an immutable repository, served from this node without a barrier); or `local` when the
/// client sent it with the value `stale-ok` and the region could not confirm in time, so this
/// node's own, possibly stale, state was used.
pub const READ_CONSISTENCY: &str = "x-arca-read-consistency";

/// A read that may be answered from this node's state without a barrier when it finds what it
/// looks for (a miss runs the barrier and looks again).
#[derive(Debug, Clone, Copy)]
pub struct LocalFirst;

/// A `{repo}` path parameter, validated; a bad one is a JSON `INVALID_REPO_NAME`.
pub struct RepoParam(pub RepoName);

impl<S: Send + Sync> FromRequestParts<S> for RepoParam {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::InvalidRepoName {
                name: String::new(),
                reason: e.body_text(),
            })?;
        Ok(Self(RepoName::parse(&raw)?))
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, `*` matches anything).
pub fn etag_matches(candidates: &str, etag: &str) -> bool {
    candidates.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// Parses a single `bytes=` range against `size`. Returns `None` for headers a server may
/// ignore (other units, several ranges, malformed), and `RANGE_NOT_SATISFIABLE` for a range
/// that starts past the end.
pub fn parse_range(header: &str, size: u64) -> Result<Option<Range<u64>>> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = Error::RangeNotSatisfiable { size };
    let range = match (start.trim(), end.trim()) {
        ("", "") => return Ok(None),
        ("", suffix) => {
            let Ok(n) = suffix.parse::<u64>() else {
                return Ok(None);
            };
            if n == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            size.saturating_sub(n)..size
        }
        (start, end) => {
            let Ok(first) = start.parse::<u64>() else {
                return Ok(None);
            };
            let last = if end.is_empty() {
                u64::MAX
            } else {
                match end.parse::<u64>() {
                    Ok(last) if last >= first => last,
                    _ => return Ok(None),
                }
            };
            if first >= size {
                return Err(unsatisfiable);
            }
            first..last.saturating_add(1).min(size)
        }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).ok().flatten(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).ok().flatten(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).ok().flatten(), Some(90..100));
        assert_eq!(parse_range("bytes=-1000", 100).ok().flatten(), Some(0..100));
        assert_eq!(
            parse_range("bytes=95-200", 100).ok().flatten(),
            Some(95..100)
        );
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=-0", 100).is_err());
        assert!(parse_range("bytes=0-0", 0).is_err());
        assert_eq!(parse_range("bytes=5-2", 100).ok().flatten(), None);
        assert_eq!(parse_range("items=0-1", 100).ok().flatten(), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100).ok().flatten(), None);
        assert_eq!(parse_range("bytes=x-1", 100).ok().flatten(), None);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"def\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
