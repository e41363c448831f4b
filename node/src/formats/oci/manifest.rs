//! Manifests: what a pushed manifest is (OCI image manifest or index, Docker schema 2 manifest
//! or manifest list), what it references, and which media types a client accepts.
//!
//! Parsing uses `oci-spec`'s types. Docker schema 2 documents have the same shape as their OCI
//! counterparts (only media types differ), so the same types read both.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;

use crate::digest::Sha256;
use crate::formats::oci::error::OciError;
use crate::formats::oci::names::{parse_digest, DigestProblem};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest media types the registry stores.
pub const SUPPORTED: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// An image manifest (config and layers) or an index (a list of manifests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

/// What a manifest says, as far as the registry cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// Blobs that must be in the image (config and layers, except foreign layers that live at
    /// their `urls`), each once, with the size the manifest claims.
    pub blobs: Vec<(Sha256, u64)>,
    /// Manifests that must be in the image (an index's entries), each once, with their size.
    pub manifests: Vec<(Sha256, u64)>,
    pub subject: Option<Sha256>,
    /// `artifactType`, else an image manifest's config media type (what referrers report).
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The bare media type of a `Content-Type` or `Accept` entry (parameters dropped).
pub fn bare_media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim()
}

fn invalid(reason: impl Into<String>) -> OciError {
    OciError::ManifestInvalid {
        reason: reason.into(),
    }
}

/// Parses and validates a pushed manifest. `content_type` is the request's `Content-Type`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, OciError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the manifest is not valid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(invalid("the manifest is not a JSON object"));
    };
    match object.get("schemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        Some(1) => {
            return Err(invalid(
                "Docker schema 1 manifests are not supported; push schema 2 or OCI",
            ))
        }
        _ => return Err(invalid("schemaVersion must be 2")),
    }
    let declared = match object.get("mediaType") {
        None => None,
        Some(Value::String(media_type)) => Some(media_type.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    let content_type = content_type
        .map(bare_media_type)
        .filter(|ct| SUPPORTED.contains(ct));
    let media_type = match (declared, content_type) {
        (Some(declared), Some(ct)) if declared != ct => {
            return Err(invalid(format!(
                "the Content-Type {ct} differs from the manifest's mediaType {declared}"
            )))
        }
        (Some(declared), _) => declared,
        (None, Some(ct)) => ct,
        // Neither says: an OCI document without mediaType is told apart by its fields.
        (None, None) if object.contains_key("manifests") => OCI_INDEX,
        (None, None) if object.contains_key("config") => OCI_MANIFEST,
        (None, None) => {
            return Err(invalid(
                "cannot tell the manifest's type: no mediaType, no known Content-Type",
            ))
        }
    };
    let kind = match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => ManifestKind::Image,
        OCI_INDEX | DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?} (supported: {})",
                SUPPORTED.join(", ")
            )))
        }
    };
    let mut parsed = ParsedManifest {
        media_type: media_type.to_string(),
        kind,
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    match kind {
        ManifestKind::Image => {
            let manifest: ImageManifest = serde_json::from_value(value)
                .map_err(|e| invalid(format!("not a valid image manifest: {e}")))?;
            add_unique(&mut parsed.blobs, manifest.config())?;
            for layer in manifest.layers() {
                if is_foreign(layer) {
                    continue;
                }
                add_unique(&mut parsed.blobs, layer)?;
            }
            parsed.subject = subject(manifest.subject().as_ref())?;
            parsed.artifact_type = manifest
                .artifact_type()
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| Some(manifest.config().media_type().to_string()));
            parsed.annotations = annotations(manifest.annotations().as_ref());
        }
        ManifestKind::Index => {
            let index: ImageIndex = serde_json::from_value(value)
                .map_err(|e| invalid(format!("not a valid image index: {e}")))?;
            for entry in index.manifests() {
                add_unique(&mut parsed.manifests, entry)?;
            }
            parsed.subject = subject(index.subject().as_ref())?;
            parsed.artifact_type = index.artifact_type().as_ref().map(ToString::to_string);
            parsed.annotations = annotations(index.annotations().as_ref());
        }
    }
    Ok(parsed)
}

fn descriptor_digest(descriptor: &Descriptor) -> Result<Sha256, OciError> {
    parse_digest(descriptor.digest().as_ref()).map_err(|problem| match problem {
        DigestProblem::Malformed(reason) | DigestProblem::Unsupported(reason) => {
            invalid(format!("descriptor {}: {reason}", descriptor.digest()))
        }
    })
}

fn add_unique(list: &mut Vec<(Sha256, u64)>, descriptor: &Descriptor) -> Result<(), OciError> {
    let digest = descriptor_digest(descriptor)?;
    let size = descriptor.size();
    match list.iter().find(|(d, _)| *d == digest) {
        Some((_, seen)) if *seen != size => Err(invalid(format!(
            "{} is listed with sizes {seen} and {size}",
            descriptor.digest()
        ))),
        Some(_) => Ok(()),
        None => {
            list.push((digest, size));
            Ok(())
        }
    }
}

fn subject(descriptor: Option<&Descriptor>) -> Result<Option<Sha256>, OciError> {
    descriptor.map(descriptor_digest).transpose()
}

fn annotations(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> BTreeMap<String, String> {
    annotations
        .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A layer that is not pushed to registries: it lives at its `urls` (Windows base layers).
fn is_foreign(layer: &Descriptor) -> bool {
    let has_urls = layer.urls().as_ref().is_some_and(|urls| !urls.is_empty());
    let media_type = layer.media_type().to_string();
    has_urls && (media_type.contains(".foreign.") || media_type.contains(".nondistributable."))
}

/// Whether a request's `Accept` values allow `media_type`. No `Accept` at all, a wildcard, or
/// an `Accept` naming no manifest type (`application/json`, say) allows anything.
pub fn accepts<'a>(accept: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut named_a_manifest_type = false;
    for entry in accept.into_iter().flat_map(|value| value.split(',')) {
        let mut parts = entry.split(';');
        let candidate = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        if candidate.is_empty() || refused {
            continue;
        }
        if candidate == "*/*" || candidate.eq_ignore_ascii_case(media_type) {
            return true;
        }
        if let Some(kind) = candidate.strip_suffix("/*") {
            if media_type.split('/').next() == Some(kind) {
                return true;
            }
        }
        if SUPPORTED.contains(&candidate) {
            named_a_manifest_type = true;
        }
    }
    !named_a_manifest_type
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn digest(seed: u8) -> String {
        format!("sha256:{}", hex::encode([seed; 32]))
    }

    fn image(media_type: Option<&str>) -> Value {
        let mut manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(1), "size": 10},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(2), "size": 20},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(3), "size": 30},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(2), "size": 20},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": digest(9), "size": 5,
                 "urls": ["https://example.invalid/layer"]}
            ],
            "annotations": {"org.example": "yes"}
        });
        if let Some(media_type) = media_type {
            manifest["mediaType"] = json!(media_type);
        }
        manifest
    }

    fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).expect("json")
    }

    #[test]
    fn image_manifests_list_their_blobs_once() {
        let parsed = parse(&bytes(&image(Some(OCI_MANIFEST))), None).expect("valid");
        assert_eq!(parsed.kind, ManifestKind::Image);
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        let blobs: Vec<u64> = parsed.blobs.iter().map(|(_, size)| *size).collect();
        assert_eq!(
            blobs,
            vec![10, 20, 30],
            "config, then layers, each once, no foreign layer"
        );
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(parsed.annotations["org.example"], "yes");
        // No mediaType field: the Content-Type decides, else the fields do.
        let parsed = parse(
            &bytes(&image(None)),
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=x"),
        )
        .expect("valid");
        assert_eq!(parsed.media_type, DOCKER_MANIFEST);
        assert_eq!(
            parse(&bytes(&image(None)), None).expect("valid").media_type,
            OCI_MANIFEST
        );
    }

    #[test]
    fn indexes_list_their_manifests_and_subjects_are_read() {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": digest(4), "size": 40,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": DOCKER_MANIFEST, "digest": digest(5), "size": 50,
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
            ]
        });
        let parsed = parse(&bytes(&index), Some(DOCKER_MANIFEST_LIST)).expect("valid");
        assert_eq!(parsed.kind, ManifestKind::Index);
        assert_eq!(parsed.manifests.len(), 2);
        assert!(parsed.blobs.is_empty());
        assert_eq!(parsed.artifact_type, None);

        let mut signature = image(Some(OCI_MANIFEST));
        signature["artifactType"] = json!("application/vnd.example.sig");
        signature["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": digest(7), "size": 7});
        let parsed = parse(&bytes(&signature), Some(OCI_MANIFEST)).expect("valid");
        assert_eq!(parsed.subject, Some(Sha256([7; 32])));
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
    }

    #[test]
    fn malformed_manifests_are_invalid() {
        let mut wrong_size = image(Some(OCI_MANIFEST));
        wrong_size["layers"][2]["size"] = json!(21);
        let mut sha512 = image(Some(OCI_MANIFEST));
        sha512["config"]["digest"] = json!(format!("sha512:{}", "a".repeat(128)));
        let mut no_config = image(Some(OCI_MANIFEST));
        no_config.as_object_mut().expect("object").remove("config");
        let mut bad_digest = image(Some(OCI_MANIFEST));
        bad_digest["layers"][0]["digest"] = json!("sha256:xyz");
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (b"{not json".to_vec(), None),
            (b"[1,2]".to_vec(), None),
            (b"{\"schemaVersion\": 1}".to_vec(), None),
            (bytes(&json!({"schemaVersion": 2})), None),
            (bytes(&image(Some(OCI_MANIFEST))), Some(OCI_INDEX)),
            (
                bytes(&image(Some(
                    "application/vnd.oci.artifact.manifest.v1+json",
                ))),
                None,
            ),
            (bytes(&wrong_size), None),
            (bytes(&sha512), None),
            (bytes(&no_config), None),
            (bytes(&bad_digest), None),
            (bytes(&json!({"schemaVersion": 2, "mediaType": 7})), None),
        ];
        for (body, content_type) in cases {
            let result = parse(&body, content_type);
            assert!(
                matches!(result, Err(OciError::ManifestInvalid { .. })),
                "{}: {result:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse(&body, Some(OCI_MANIFEST));
            let _ = parse(&body, None);
        }

        #[test]
        fn mangled_manifests_are_refused_or_consistent(cut in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let mut body = bytes(&image(Some(OCI_MANIFEST)));
            let at = cut % body.len();
            body[at] = byte;
            // Never a panic; what still parses lists each blob once, by a digest in the body.
            if let Ok(parsed) = parse(&body, None) {
                let text = String::from_utf8_lossy(&body);
                let mut seen = std::collections::BTreeSet::new();
                for (digest, _) in &parsed.blobs {
                    proptest::prop_assert!(seen.insert(*digest), "listed twice");
                    proptest::prop_assert!(text.contains(&digest.to_hex()));
                }
            }
        }
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(Vec::<&str>::new(), OCI_MANIFEST));
        assert!(accepts(["*/*"], OCI_MANIFEST));
        assert!(accepts(["application/*"], OCI_INDEX));
        assert!(accepts(["application/json"], OCI_INDEX));
        assert!(accepts(
            [
                DOCKER_MANIFEST,
                "application/vnd.oci.image.manifest.v1+json; q=0.5"
            ],
            OCI_MANIFEST
        ));
        assert!(accepts(
            [&format!("{DOCKER_MANIFEST}, {OCI_INDEX}")[..]],
            OCI_INDEX
        ));
        assert!(!accepts([DOCKER_MANIFEST], OCI_MANIFEST));
        assert!(!accepts(
            [DOCKER_MANIFEST, &format!("{OCI_MANIFEST};q=0")[..]],
            OCI_MANIFEST
        ));
    }
}
