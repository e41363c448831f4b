//! `GET /v2/`, `/v2/_catalog`, `/v2/<name>/tags/list` and `/v2/<name>/referrers/<digest>`.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use oci_spec::distribution::{RepositoryListBuilder, TagListBuilder};
use oci_spec::image::{Descriptor, Digest, ImageIndexBuilder, MediaType};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::error::Error;
use crate::formats::oci::api::{set, OCI_FILTERS_APPLIED};
use crate::formats::oci::error::{OciError, OciResult};
use crate::formats::oci::manifest::OCI_INDEX;
use crate::formats::oci::names::{digest_string, parse_digest, DigestProblem, OciName, Tag};
use crate::formats::oci::registry::Registry;

fn spec_error(context: &str, e: oci_spec::OciSpecError) -> OciError {
    OciError::Node(Error::internal(context, e))
}

/// `GET /v2/`: the registry speaks the v2 API (the version header is added to every answer).
pub fn base() -> Response {
    (StatusCode::OK, Json(serde_json::json!({}))).into_response()
}

/// A request's query parameters. (Not the whole request: its body cannot be shared across an
/// await.)
type Query = HashMap<String, String>;

fn param<'q>(query: &'q Query, key: &str) -> Option<&'q str> {
    query.get(key).map(String::as_str)
}

/// The page size a request asks for with `n`: absent means "as many as allowed".
fn page_size(query: &Query, max: usize) -> OciResult<usize> {
    match param(query, "n") {
        None => Ok(max),
        Some(n) => n
            .parse::<usize>()
            .map(|n| n.min(max))
            .map_err(|_| OciError::Unsupported {
                reason: format!("n={n:?} is not a non-negative integer"),
            }),
    }
}

/// `Link: <next page>; rel="next"` (RFC 5988).
fn link_next(headers: &mut HeaderMap, url: &str) {
    set(headers, header::LINK, &format!("<{url}>; rel=\"next\""));
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// `GET /v2/_catalog?n=&last=`: every image of every `oci` repository, as
/// `<repository>/<image>`.
pub fn catalog(registry: &Registry, query: &Query) -> OciResult<Response> {
    let n = page_size(query, registry.max_page())?;
    let (names, more) = if n == 0 {
        (Vec::new(), false)
    } else {
        registry
            .service
            .catalog
            .oci_images(param(query, "last"), n)?
    };
    let mut headers = HeaderMap::new();
    if more {
        if let Some(last) = names.last() {
            link_next(
                &mut headers,
                &format!("/v2/_catalog?n={n}&last={}", encode(last)),
            );
        }
    }
    let list = RepositoryListBuilder::default()
        .repositories(names)
        .build()
        .map_err(|e| spec_error("build repository list", e))?;
    Ok((StatusCode::OK, headers, Json(list)).into_response())
}

/// `GET /v2/<name>/tags/list?n=&last=`: tags in case-insensitive lexical order, with a `Link`
/// to the next page when there is one.
pub async fn tags(registry: &Registry, name: &str, query: &Query) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    let n = page_size(query, registry.max_page())?;
    let (tags, more) = if n == 0 {
        // The spec: an empty list and no Link, but still 404 for an unknown image.
        registry.tags(&name, None, 1).await?;
        (Vec::new(), false)
    } else {
        registry.tags(&name, param(query, "last"), n).await?
    };
    let mut headers = HeaderMap::new();
    if more {
        if let Some(last) = tags.last() {
            link_next(
                &mut headers,
                &format!("/v2/{name}/tags/list?n={n}&last={}", encode(last.as_str())),
            );
        }
    }
    let list = TagListBuilder::default()
        .name(name.to_string())
        .tags(tags.iter().map(Tag::to_string).collect::<Vec<_>>())
        .build()
        .map_err(|e| spec_error("build tag list", e))?;
    Ok((StatusCode::OK, headers, Json(list)).into_response())
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: an image index of the manifests whose
/// subject is `digest` (empty, never 404, when there are none).
pub async fn referrers(
    registry: &Registry,
    name: &str,
    digest: &str,
    query: &Query,
) -> OciResult<Response> {
    let name = OciName::parse(name)?;
    registry.repo(&name).await?;
    let artifact_type = param(query, "artifactType").filter(|t| !t.is_empty());
    let last = match param(query, "last") {
        Some(last) => Some(crate::formats::oci::api::upload_digest(last)?),
        None => None,
    };
    let (referrers, more) = match parse_digest(digest) {
        Ok(subject) => registry.service.catalog.oci_referrers(
            &name.repo,
            &name.image,
            &subject,
            last.as_ref(),
            registry.max_page(),
        )?,
        Err(DigestProblem::Malformed(reason)) => return Err(OciError::DigestInvalid { reason }),
        // Nothing stored can name a subject by another algorithm.
        Err(DigestProblem::Unsupported(_)) => (Vec::new(), false),
    };
    let mut descriptors = Vec::new();
    for (referrer, record) in &referrers {
        if artifact_type.is_some() && record.artifact_type.as_deref() != artifact_type {
            continue;
        }
        let digest: Digest = digest_string(referrer)
            .parse()
            .map_err(|e| spec_error("digest of a referrer", e))?;
        let mut descriptor = Descriptor::new(
            MediaType::from(record.media_type.as_str()),
            record.size,
            digest,
        );
        descriptor.set_artifact_type(record.artifact_type.as_deref().map(MediaType::from));
        if !record.annotations.is_empty() {
            let annotations: HashMap<String, String> = record
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            descriptor.set_annotations(Some(annotations));
        }
        descriptors.push(descriptor);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descriptors)
        .build()
        .map_err(|e| spec_error("build referrers index", e))?;
    let mut headers = HeaderMap::new();
    set(&mut headers, header::CONTENT_TYPE, OCI_INDEX);
    if artifact_type.is_some() {
        set(&mut headers, OCI_FILTERS_APPLIED, "artifactType");
    }
    if let (true, Some((last, _))) = (more, referrers.last()) {
        let mut next = format!(
            "/v2/{name}/referrers/{digest}?last={}",
            encode(&digest_string(last))
        );
        if let Some(artifact_type) = artifact_type {
            next.push_str(&format!("&artifactType={}", encode(artifact_type)));
        }
        link_next(&mut headers, &next);
    }
    let body = serde_json::to_vec(&index)
        .map_err(|e| OciError::Node(Error::internal("encode referrers index", e)))?;
    Ok((StatusCode::OK, headers, body).into_response())
}
