//! The workflows of the OCI distribution-spec conformance suite (pull, push, content discovery,
//! content management), replayed in Rust against a running node with the status codes, headers
//! and error codes the suite expects, plus the parts of the issue the suite does not cover
//! (Docker schema 2, content negotiation, immutability, dedup with generic files, metrics).

mod support;

use serde_json::{json, Value};
use support::oci::*;
use support::{bytes, must_wait_until, TestNode};

const NAME: &str = "containers/conformance/app";
const CROSSMOUNT: &str = "containers/conformance/crossmount";

async fn registry() -> TestNode {
    let node = TestNode::start().await;
    node.create_oci_repo("containers", false).await;
    node
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn location(response: &reqwest::Response) -> String {
    header(response, "location").expect("a Location header")
}

#[tokio::test]
async fn api_version_check() {
    let node = registry().await;
    for path in ["/v2/", "/v2"] {
        let response = node.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "docker-distribution-api-version").as_deref(),
            Some("registry/2.0")
        );
    }
    let (status, code) = oci_error(node.get("/v2/containers/app/nothing/here").await).await;
    assert_eq!((status, code.as_str()), (404, "UNSUPPORTED"));
}

#[tokio::test]
async fn pull() {
    let node = registry().await;
    let image = Image::new(1, &[120_000, 70_000]);
    image.push(&node, NAME, "tagged").await;

    for reference in ["tagged".to_string(), image.digest()] {
        let url = node.url(&format!("/v2/{NAME}/manifests/{reference}"));
        let got = node
            .http
            .get(&url)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("get");
        assert_eq!(got.status(), 200, "{reference}");
        assert_eq!(header(&got, "content-type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(header(&got, "docker-content-digest"), Some(image.digest()));
        assert_eq!(
            got.bytes().await.expect("body").as_ref(),
            image.manifest.as_slice()
        );

        let head = node.http.head(&url).send().await.expect("head");
        assert_eq!(head.status(), 200);
        assert_eq!(
            header(&head, "content-length"),
            Some(image.manifest.len().to_string())
        );
        assert_eq!(header(&head, "docker-content-digest"), Some(image.digest()));
    }

    let layer = &image.layers[0];
    let blob_url = node.url(&format!("/v2/{NAME}/blobs/{}", digest(layer)));
    let got = node.http.get(&blob_url).send().await.expect("get blob");
    assert_eq!(got.status(), 200);
    assert_eq!(header(&got, "docker-content-digest"), Some(digest(layer)));
    assert_eq!(got.bytes().await.expect("body").as_ref(), layer.as_slice());
    let head = node.http.head(&blob_url).send().await.expect("head blob");
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(layer.len().to_string())
    );
    let partial = node
        .http
        .get(&blob_url)
        .header("range", "bytes=1000-50999")
        .send()
        .await
        .expect("range");
    assert_eq!(partial.status(), 206);
    assert_eq!(
        header(&partial, "content-range").as_deref(),
        Some("bytes 1000-50999/120000")
    );
    assert_eq!(
        partial.bytes().await.expect("body").as_ref(),
        &layer[1000..51_000]
    );
    let beyond = node
        .http
        .get(&blob_url)
        .header("range", "bytes=120000-")
        .send()
        .await
        .expect("range");
    assert_eq!(
        header(&beyond, "content-range").as_deref(),
        Some("bytes */120000")
    );
    assert_eq!(oci_error(beyond).await.0, 416);

    let missing_blob = node
        .get(&format!("/v2/{NAME}/blobs/{}", digest(b"nothing")))
        .await;
    assert_eq!(oci_error(missing_blob).await, (404, "BLOB_UNKNOWN".into()));
    let missing_head = node
        .http
        .head(node.url(&format!("/v2/{NAME}/blobs/{}", digest(b"nothing"))))
        .send()
        .await
        .expect("head");
    assert_eq!(missing_head.status(), 404);
    for reference in ["nonexistent".to_string(), digest(b"nothing")] {
        let missing = node.get(&format!("/v2/{NAME}/manifests/{reference}")).await;
        assert_eq!(oci_error(missing).await, (404, "MANIFEST_UNKNOWN".into()));
    }
    let unknown_repo = node.get("/v2/nope/app/manifests/tagged").await;
    assert_eq!(oci_error(unknown_repo).await, (404, "NAME_UNKNOWN".into()));
}

#[tokio::test]
async fn push() {
    let node = registry().await;

    // Streamed: POST, PATCH with the whole blob and no Content-Range, PUT with the digest.
    let blob_a = bytes(90_000, 10);
    let post = node
        .http
        .post(node.url(&format!("/v2/{NAME}/blobs/uploads/")))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 202);
    let patch = node
        .http
        .patch(node.url(&location(&post)))
        .header("content-type", "application/octet-stream")
        .body(blob_a.clone())
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 202);
    assert_eq!(header(&patch, "range").as_deref(), Some("0-89999"));
    let put = node
        .http
        .put(node.url(&format!("{}?digest={}", location(&patch), digest(&blob_a))))
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
    assert_eq!(
        location(&put),
        format!("/v2/{NAME}/blobs/{}", digest(&blob_a))
    );

    // Monolithic: a single POST with the digest, then POST + PUT.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let missing = node
        .get(&format!("/v2/{NAME}/blobs/{}", digest(&config)))
        .await;
    assert_eq!(missing.status(), 404);
    push_blob(&node, NAME, &config).await;
    assert_eq!(
        node.get(&format!("/v2/{NAME}/blobs/{}", digest(&config)))
            .await
            .status(),
        200
    );
    let layer = bytes(50_000, 11);
    let post = node
        .http
        .post(node.url(&format!("/v2/{NAME}/blobs/uploads/")))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 202);
    let put = node
        .http
        .put(node.url(&format!("{}?digest={}", location(&post), digest(&layer))))
        .header("content-type", "application/octet-stream")
        .body(layer.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
    assert_eq!(header(&put, "docker-content-digest"), Some(digest(&layer)));
    assert_eq!(
        node.get(&format!("/v2/{NAME}/blobs/{}", digest(&layer)))
            .await
            .status(),
        200
    );

    // Chunked.
    let blob_b = bytes(60_000, 12);
    let (chunk1, chunk2) = blob_b.split_at(25_000);
    let start = || async {
        let post = node
            .http
            .post(node.url(&format!("/v2/{NAME}/blobs/uploads/")))
            .header("content-length", "0")
            .send()
            .await
            .expect("post");
        assert_eq!(post.status(), 202);
        location(&post)
    };
    let patch = |location: String, range: String, body: Vec<u8>| {
        let node = &node;
        async move {
            node.http
                .patch(node.url(&location))
                .header("content-type", "application/octet-stream")
                .header("content-range", range)
                .body(body)
                .send()
                .await
                .expect("patch")
        }
    };
    let out_of_order_session = start().await;
    let out_of_order = patch(
        out_of_order_session.clone(),
        "25000-59999".into(),
        chunk2.to_vec(),
    )
    .await;
    assert_eq!(out_of_order.status(), 416);
    assert_eq!(header(&out_of_order, "range").as_deref(), Some("0-0"));
    assert_eq!(location(&out_of_order), out_of_order_session);
    assert_eq!(
        oci_error(out_of_order).await,
        (416, "BLOB_UPLOAD_INVALID".into())
    );

    let first_session = start().await;
    let first = patch(first_session.clone(), "0-24999".into(), chunk1.to_vec()).await;
    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "range").as_deref(), Some("0-24999"));
    let retry = patch(first_session.clone(), "0-24999".into(), chunk1.to_vec()).await;
    assert_eq!(retry.status(), 416, "a chunk sent twice is out of order");
    let status = node.get(&first_session).await;
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range").as_deref(), Some("0-24999"));
    let resume = location(&status);
    let second = patch(resume, "25000-59999".into(), chunk2.to_vec()).await;
    assert_eq!(second.status(), 202);
    assert_eq!(header(&second, "range").as_deref(), Some("0-59999"));
    let close = node
        .http
        .put(node.url(&format!("{}?digest={}", location(&second), digest(&blob_b))))
        .header("content-length", "0")
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .expect("put");
    assert_eq!(close.status(), 201);
    let got = node
        .get(&format!("/v2/{NAME}/blobs/{}", digest(&blob_b)))
        .await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), blob_b.as_slice());
    // The final chunk may also come with the closing PUT.
    let blob_c = bytes(40_000, 13);
    let session = start().await;
    let first = patch(session, "0-19999".into(), blob_c[..20_000].to_vec()).await;
    let close = node
        .http
        .put(node.url(&format!("{}?digest={}", location(&first), digest(&blob_c))))
        .header("content-range", "20000-39999")
        .header("content-type", "application/octet-stream")
        .body(blob_c[20_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(close.status(), 201);

    // Cross-repository mount.
    let without_from = node
        .http
        .post(node.url(&format!(
            "/v2/{CROSSMOUNT}/blobs/uploads/?mount={}",
            digest(b"dummy")
        )))
        .send()
        .await
        .expect("post");
    assert_eq!(without_from.status(), 202);
    assert!(location(&without_from).starts_with(&format!("/v2/{CROSSMOUNT}/blobs/uploads/")));
    let mounted = node
        .http
        .post(node.url(&format!(
            "/v2/{CROSSMOUNT}/blobs/uploads/?mount={}&from={NAME}",
            digest(&blob_a)
        )))
        .send()
        .await
        .expect("mount");
    assert_eq!(mounted.status(), 201);
    assert_eq!(
        location(&mounted),
        format!("/v2/{CROSSMOUNT}/blobs/{}", digest(&blob_a))
    );
    let got = node.get(&location(&mounted)).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.expect("body").as_ref(), blob_a.as_slice());
    let not_there = node
        .http
        .post(node.url(&format!(
            "/v2/{CROSSMOUNT}/blobs/uploads/?mount={}&from={NAME}",
            digest(b"never pushed")
        )))
        .send()
        .await
        .expect("mount");
    assert_eq!(not_there.status(), 202, "falls back to an upload session");
    assert!(location(&not_there).starts_with(&format!("/v2/{CROSSMOUNT}/blobs/uploads/")));

    // Manifests.
    let missing = node.get(&format!("/v2/{NAME}/manifests/nonexistent")).await;
    assert_eq!(missing.status(), 404);
    let manifest = image_manifest(&config, &[&layer, &blob_b]);
    for i in 0..4 {
        let response =
            put_manifest(&node, NAME, &format!("test{i}"), OCI_MANIFEST, &manifest).await;
        assert_eq!(response.status(), 201);
        assert_eq!(
            location(&response),
            format!("/v2/{NAME}/manifests/{}", digest(&manifest))
        );
        assert_eq!(
            header(&response, "docker-content-digest"),
            Some(digest(&manifest))
        );
    }
    let no_layers = image_manifest(&config, &[]);
    assert_eq!(
        put_manifest(&node, NAME, "emptylayer", OCI_MANIFEST, &no_layers)
            .await
            .status(),
        201
    );
    let got = node
        .http
        .get(node.url(&format!("/v2/{NAME}/manifests/{}", digest(&manifest))))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);

    // OCI 1.1 artifacts: a custom config media type, an artifactType with the empty config.
    let empty = b"{}".to_vec();
    assert_eq!(
        digest(&empty),
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    push_blob(&node, NAME, &empty).await;
    let artifact_config =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.config.v1+json", &config),
        "layers": [descriptor("application/vnd.example.data", &layer)]}))
        .expect("json");
    let response = put_manifest(
        &node,
        NAME,
        &digest(&artifact_config),
        OCI_MANIFEST,
        &artifact_config,
    )
    .await;
    assert_eq!(response.status(), 201);
    let artifact_type = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing",
        "config": descriptor(EMPTY_JSON, &empty),
        "layers": [descriptor(EMPTY_JSON, &empty)]}))
    .expect("json");
    let response = put_manifest(
        &node,
        NAME,
        &digest(&artifact_type),
        OCI_MANIFEST,
        &artifact_type,
    )
    .await;
    assert_eq!(response.status(), 201);

    // An index of the manifest, and an index of that index.
    let index = serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.index",
        "manifests": [descriptor(OCI_MANIFEST, &manifest)],
        "annotations": {"org.example": "test index"}}))
    .expect("json");
    let response = put_manifest(&node, NAME, &digest(&index), OCI_INDEX, &index).await;
    assert_eq!(response.status(), 201);
    let nested = serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_INDEX, &index)]}))
    .expect("json");
    let response = put_manifest(&node, NAME, &digest(&nested), OCI_INDEX, &nested).await;
    assert_eq!(response.status(), 201);

    // A subject that does not exist is accepted, and acknowledged with OCI-Subject.
    let dangling_subject = digest(b"a manifest pushed later");
    let referrer = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": descriptor(EMPTY_JSON, &empty),
        "layers": [descriptor(EMPTY_JSON, &empty)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": dangling_subject, "size": 23}}))
    .expect("json");
    let response = put_manifest(&node, NAME, &digest(&referrer), OCI_MANIFEST, &referrer).await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "oci-subject"), Some(dangling_subject));
}

#[tokio::test]
async fn content_discovery() {
    let node = registry().await;
    let image = Image::new(2, &[30_000]);
    image.push(&node, NAME, "latest").await;
    let mut expected = vec!["latest".to_string()];
    for tag in ["B", "a", "1.0", "1.1", "_x", "b-2", "A-1"] {
        let response = put_manifest(&node, NAME, tag, OCI_MANIFEST, &image.manifest).await;
        assert_eq!(response.status(), 201);
        expected.push(tag.to_string());
    }
    expected.sort_by_key(|tag| (tag.to_lowercase(), tag.clone()));

    let all: Value = node.json(&format!("/v2/{NAME}/tags/list")).await;
    assert_eq!(all["name"], NAME);
    let tags: Vec<String> = serde_json::from_value(all["tags"].clone()).expect("tags");
    assert_eq!(tags, expected, "case-insensitive lexical order");

    // Pages of 3, following Link headers.
    let mut pages = Vec::new();
    let mut next = Some(format!("/v2/{NAME}/tags/list?n=3"));
    while let Some(url) = next {
        let response = node.get(&url).await;
        assert_eq!(response.status(), 200);
        next = header(&response, "link").map(|link| {
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .expect("url")
                .to_string()
        });
        let page: Value = response.json().await.expect("json");
        let page: Vec<String> = serde_json::from_value(page["tags"].clone()).expect("tags");
        assert!(
            page.len() == 3 || next.is_none(),
            "a short page only at the end"
        );
        pages.extend(page);
    }
    assert_eq!(pages, expected);
    let after: Value = node
        .json(&format!("/v2/{NAME}/tags/list?n=2&last={}", expected[2]))
        .await;
    assert_eq!(after["tags"], json!([expected[3], expected[4]]));
    let after_only: Value = node
        .json(&format!("/v2/{NAME}/tags/list?last={}", expected[6]))
        .await;
    assert_eq!(after_only["tags"], json!([expected[7]]));
    let zero = node.get(&format!("/v2/{NAME}/tags/list?n=0")).await;
    assert_eq!(zero.status(), 200);
    assert!(header(&zero, "link").is_none());
    assert_eq!(zero.json::<Value>().await.expect("json")["tags"], json!([]));
    let unknown = node.get("/v2/containers/nothing/tags/list").await;
    assert_eq!(oci_error(unknown).await, (404, "NAME_UNKNOWN".into()));
    let bad_n = node.get(&format!("/v2/{NAME}/tags/list?n=many")).await;
    assert_eq!(oci_error(bad_n).await.0, 400);

    // Referrers: two image manifests and an index with the image as subject.
    let subject =
        json!({"mediaType": OCI_MANIFEST, "digest": image.digest(), "size": image.manifest.len()});
    let empty = b"{}".to_vec();
    push_blob(&node, NAME, &empty).await;
    let sbom_data = b"{\"sbom\": true}".to_vec();
    push_blob(&node, NAME, &sbom_data).await;
    let sbom = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": descriptor(EMPTY_JSON, &empty),
        "layers": [descriptor("application/spdx+json", &sbom_data)],
        "subject": subject,
        "annotations": {"org.example.sbom.format": "json"}}))
    .expect("json");
    let signature = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.signature.config.v1", &empty),
        "layers": [descriptor(EMPTY_JSON, &empty)],
        "subject": subject}))
    .expect("json");
    let index_referrer = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &sbom)],
        "subject": subject,
        "annotations": {"org.example.kind": "bundle"}}))
    .expect("json");
    for (body, media_type) in [
        (&sbom, OCI_MANIFEST),
        (&signature, OCI_MANIFEST),
        (&index_referrer, OCI_INDEX),
    ] {
        let response = put_manifest(&node, NAME, &digest(body), media_type, body).await;
        assert_eq!(response.status(), 201);
        assert_eq!(header(&response, "oci-subject"), Some(image.digest()));
    }
    let referrers = node
        .get(&format!("/v2/{NAME}/referrers/{}", image.digest()))
        .await;
    assert_eq!(referrers.status(), 200);
    assert_eq!(
        header(&referrers, "content-type").as_deref(),
        Some(OCI_INDEX)
    );
    assert!(header(&referrers, "oci-filters-applied").is_none());
    let index: oci_spec::image::ImageIndex = referrers.json().await.expect("an OCI index");
    assert_eq!(index.manifests().len(), 3);
    let find = |body: &[u8]| {
        index
            .manifests()
            .iter()
            .find(|d| d.digest().to_string() == digest(body))
            .unwrap_or_else(|| panic!("referrer {} listed", digest(body)))
            .clone()
    };
    let listed = find(&sbom);
    assert_eq!(
        listed
            .artifact_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("application/vnd.example.sbom.v1")
    );
    assert_eq!(listed.size(), sbom.len() as u64);
    assert_eq!(
        listed
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.example.sbom.format"))
            .map(String::as_str),
        Some("json")
    );
    let listed = find(&signature);
    assert_eq!(
        listed
            .artifact_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("application/vnd.example.signature.config.v1"),
        "an image manifest without artifactType reports its config media type"
    );
    let listed = find(&index_referrer);
    assert!(
        listed.artifact_type().is_none(),
        "an index without artifactType has none"
    );
    assert_eq!(listed.media_type().to_string(), OCI_INDEX);

    let filtered = node
        .get(&format!(
            "/v2/{NAME}/referrers/{}?artifactType=application%2Fvnd.example.sbom.v1",
            image.digest()
        ))
        .await;
    assert_eq!(filtered.status(), 200);
    assert_eq!(
        header(&filtered, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    let filtered: oci_spec::image::ImageIndex = filtered.json().await.expect("index");
    assert_eq!(filtered.manifests().len(), 1);
    assert_eq!(filtered.manifests()[0].digest().to_string(), digest(&sbom));

    let none = node
        .get(&format!(
            "/v2/{NAME}/referrers/{}",
            digest(b"no such subject")
        ))
        .await;
    assert_eq!(
        none.status(),
        200,
        "unknown subjects have an empty list, never 404"
    );
    let none: oci_spec::image::ImageIndex = none.json().await.expect("index");
    assert!(none.manifests().is_empty());
    let bad = node.get(&format!("/v2/{NAME}/referrers/sha256:xyz")).await;
    assert_eq!(oci_error(bad).await, (400, "DIGEST_INVALID".into()));

    // The catalog lists every image as <repository>/<image>, with pagination.
    Image::new(3, &[1_000])
        .push(&node, "containers/zeta", "1")
        .await;
    node.create_oci_repo("alpha", false).await;
    Image::new(4, &[1_000])
        .push(&node, "alpha/tools/x", "1")
        .await;
    let catalog: Value = node.json("/v2/_catalog").await;
    assert_eq!(
        catalog["repositories"],
        json!(["alpha/tools/x", NAME, "containers/zeta"])
    );
    let first = node.get("/v2/_catalog?n=2").await;
    let link = header(&first, "link").expect("Link to the next page");
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["repositories"], json!(["alpha/tools/x", NAME]));
    let next_url = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("url")
        .to_string();
    let rest: Value = node.json(&next_url).await;
    assert_eq!(rest["repositories"], json!(["containers/zeta"]));
}

#[tokio::test]
async fn content_management() {
    // Freed chunks are reclaimed once past the retention window: make it short here.
    let node = TestNode::start_with_env(&[
        ("GC__FREED_RETENTION_SECS", "0"),
        ("GC__RELEASE_INTERVAL_SECS", "1"),
        ("GC__RELEASE_START_DELAY_SECS", "0"),
    ])
    .await;
    node.create_oci_repo("containers", false).await;
    let image = Image::new(5, &[80_000, 40_000]);
    image.push(&node, NAME, "t1").await;
    assert_eq!(
        put_manifest(&node, NAME, "t2", OCI_MANIFEST, &image.manifest)
            .await
            .status(),
        201
    );
    let empty = b"{}".to_vec();
    push_blob(&node, NAME, &empty).await;
    let referrer = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": descriptor(EMPTY_JSON, &empty), "layers": [descriptor(EMPTY_JSON, &empty)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.digest(), "size": image.manifest.len()}}))
    .expect("json");
    assert_eq!(
        put_manifest(&node, NAME, &digest(&referrer), OCI_MANIFEST, &referrer)
            .await
            .status(),
        201
    );
    let before = node.json("/api/v1/repos/containers").await;
    assert_eq!(before["format"], "oci");
    assert_eq!(before["artifacts"], 2, "two manifests");

    let delete = |path: String| {
        let node = &node;
        async move {
            node.http
                .delete(node.url(&path))
                .send()
                .await
                .expect("delete")
        }
    };
    // Deleting a tag leaves the manifest and its other tags.
    assert_eq!(
        delete(format!("/v2/{NAME}/manifests/t1")).await.status(),
        202
    );
    assert_eq!(
        oci_error(node.get(&format!("/v2/{NAME}/manifests/t1")).await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        node.get(&format!("/v2/{NAME}/manifests/t2")).await.status(),
        200
    );
    assert_eq!(
        node.json(&format!("/v2/{NAME}/tags/list")).await["tags"],
        json!(["t2"])
    );

    // Deleting the referrer removes it from the referrers list.
    assert_eq!(
        delete(format!("/v2/{NAME}/manifests/{}", digest(&referrer)))
            .await
            .status(),
        202
    );
    let referrers: Value = node
        .json(&format!("/v2/{NAME}/referrers/{}", image.digest()))
        .await;
    assert_eq!(referrers["manifests"], json!([]));

    // Deleting a manifest by digest removes every tag pointing at it.
    assert_eq!(
        delete(format!("/v2/{NAME}/manifests/{}", image.digest()))
            .await
            .status(),
        202
    );
    for reference in [image.digest(), "t2".to_string()] {
        assert_eq!(
            oci_error(node.get(&format!("/v2/{NAME}/manifests/{reference}")).await).await,
            (404, "MANIFEST_UNKNOWN".into())
        );
    }
    assert_eq!(
        node.json(&format!("/v2/{NAME}/tags/list")).await["tags"],
        json!([])
    );
    assert_eq!(
        oci_error(delete(format!("/v2/{NAME}/manifests/{}", image.digest())).await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        oci_error(delete(format!("/v2/{NAME}/manifests/t2")).await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );

    // Blobs.
    let mut blobs = vec![image.config.clone(), empty.clone()];
    blobs.extend(image.layers.iter().cloned());
    for blob in &blobs {
        assert_eq!(
            delete(format!("/v2/{NAME}/blobs/{}", digest(blob)))
                .await
                .status(),
            202
        );
        assert_eq!(
            oci_error(
                node.get(&format!("/v2/{NAME}/blobs/{}", digest(blob)))
                    .await
            )
            .await,
            (404, "BLOB_UNKNOWN".into())
        );
    }
    assert_eq!(
        oci_error(delete(format!("/v2/{NAME}/blobs/{}", digest(&empty))).await).await,
        (404, "BLOB_UNKNOWN".into())
    );

    // Nothing is left: the image is gone from the catalog, counts are zero, chunks are freed.
    assert_eq!(node.json("/v2/_catalog").await["repositories"], json!([]));
    assert_eq!(
        oci_error(node.get(&format!("/v2/{NAME}/tags/list")).await).await,
        (404, "NAME_UNKNOWN".into())
    );
    let after = node.json("/api/v1/repos/containers").await;
    assert_eq!(
        (
            &after["artifacts"],
            &after["logical_bytes"],
            &after["physical_bytes"]
        ),
        (&json!(0), &json!(0), &json!(0))
    );
    let stats = node.node().service.catalog.global_stats().expect("stats");
    assert_eq!((stats.blobs, stats.chunks), (0, 0));
    must_wait_until(
        "the collector deletes the freed chunks",
        std::time::Duration::from_secs(10),
        || node.stored_chunks() == 0,
    )
    .await;
}

/// A manifest keeps its blobs' chunks alive even after the blobs are unlinked.
#[tokio::test]
async fn manifests_hold_references_on_their_blobs() {
    let node = registry().await;
    let image = Image::new(6, &[70_000]);
    image.push(&node, NAME, "v1").await;
    for blob in [&image.config, &image.layers[0]] {
        let response = node
            .http
            .delete(node.url(&format!("/v2/{NAME}/blobs/{}", digest(blob))))
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), 202);
    }
    let stats = node.json("/api/v1/repos/containers").await;
    assert!(
        stats["physical_bytes"].as_u64().expect("bytes") >= 70_000,
        "the manifest still references the layer: {stats}"
    );
    // Pushing the layer again stores no new chunk: they were never freed.
    let chunks = node.stored_chunks();
    push_blob(&node, NAME, &image.layers[0]).await;
    assert_eq!(node.stored_chunks(), chunks);
}

#[tokio::test]
async fn docker_schema2_manifest_lists_and_content_negotiation() {
    let node = registry().await;
    let mut children = Vec::new();
    for (seed, arch) in [(7u64, "amd64"), (8, "arm64")] {
        let config =
            serde_json::to_vec(&json!({"architecture": arch, "os": "linux"})).expect("json");
        let layer = bytes(20_000, seed);
        push_blob(&node, NAME, &config).await;
        push_blob(&node, NAME, &layer).await;
        let manifest =
            serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, &config),
            "layers": [descriptor(DOCKER_LAYER, &layer)]}))
            .expect("json");
        let response =
            put_manifest(&node, NAME, &digest(&manifest), DOCKER_MANIFEST, &manifest).await;
        assert_eq!(response.status(), 201);
        children.push((manifest, arch));
    }
    let list = serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": children.iter().map(|(m, arch)| {
            let mut d = descriptor(DOCKER_MANIFEST, m);
            d["platform"] = json!({"architecture": arch, "os": "linux"});
            d
        }).collect::<Vec<_>>()}))
    .expect("json");
    assert_eq!(
        put_manifest(&node, NAME, "multi", DOCKER_LIST, &list)
            .await
            .status(),
        201
    );

    let get = |accept: Option<&str>, reference: String| {
        let node = &node;
        let accept = accept.map(str::to_string);
        async move {
            let mut request = node
                .http
                .get(node.url(&format!("/v2/{NAME}/manifests/{reference}")));
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            request.send().await.expect("get")
        }
    };
    let docker_accept = format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}");
    for accept in [
        Some(docker_accept.as_str()),
        Some(DOCKER_LIST),
        Some("*/*"),
        None,
    ] {
        let response = get(accept, "multi".into()).await;
        assert_eq!(response.status(), 200, "{accept:?}");
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some(DOCKER_LIST)
        );
        assert_eq!(
            response.bytes().await.expect("body").as_ref(),
            list.as_slice()
        );
    }
    let refused = get(Some(DOCKER_MANIFEST), "multi".into()).await;
    assert_eq!(oci_error(refused).await, (404, "MANIFEST_UNKNOWN".into()));
    // By digest the client named the bytes: they are served whatever it accepts.
    let child = get(Some(OCI_MANIFEST), digest(&children[0].0)).await;
    assert_eq!(child.status(), 200);
    assert_eq!(
        header(&child, "content-type").as_deref(),
        Some(DOCKER_MANIFEST)
    );

    // An OCI index and a manifest naming content the image lacks are refused, one error per
    // missing digest.
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, b"missing one"), descriptor(DOCKER_MANIFEST, &children[1].0)]}))
    .expect("json");
    let (status, codes) =
        oci_errors(put_manifest(&node, NAME, "bad-index", OCI_INDEX, &index).await).await;
    assert_eq!(
        (status, codes),
        (400, vec!["MANIFEST_BLOB_UNKNOWN".to_string()])
    );
    let manifest = image_manifest(b"missing config", &[b"missing layer", &bytes(20_000, 7)]);
    let (status, codes) =
        oci_errors(put_manifest(&node, NAME, "bad-image", OCI_MANIFEST, &manifest).await).await;
    assert_eq!(status, 400);
    assert_eq!(codes, vec!["MANIFEST_BLOB_UNKNOWN"; 2]);
    for tag in ["bad-index", "bad-image"] {
        assert_eq!(get(None, tag.into()).await.status(), 404);
    }
}

#[tokio::test]
async fn immutable_repositories_pin_tags() {
    let node = TestNode::start().await;
    node.create_oci_repo("releases", true).await;
    let name = "releases/app";
    let first = Image::new(9, &[10_000]);
    first.push(&node, name, "1.0").await;
    let again = put_manifest(&node, name, "1.0", OCI_MANIFEST, &first.manifest).await;
    assert_eq!(
        again.status(),
        201,
        "the identical manifest may be pushed again"
    );
    let second = Image::new(10, &[10_000]);
    push_blob(&node, name, &second.config).await;
    push_blob(&node, name, &second.layers[0]).await;
    let moved = put_manifest(&node, name, "1.0", OCI_MANIFEST, &second.manifest).await;
    assert_eq!(oci_error(moved).await, (403, "DENIED".into()));
    let got = node.get(&format!("/v2/{name}/manifests/1.0")).await;
    assert_eq!(header(&got, "docker-content-digest"), Some(first.digest()));
    assert_eq!(
        put_manifest(&node, name, "1.1", OCI_MANIFEST, &second.manifest)
            .await
            .status(),
        201
    );
    for path in [
        format!("/v2/{name}/manifests/1.0"),
        format!("/v2/{name}/manifests/{}", first.digest()),
        format!("/v2/{name}/blobs/{}", digest(&first.config)),
    ] {
        let response = node
            .http
            .delete(node.url(&path))
            .send()
            .await
            .expect("delete");
        assert_eq!(oci_error(response).await, (403, "DENIED".into()), "{path}");
    }
    assert_eq!(
        node.json(&format!("/v2/{name}/tags/list")).await["tags"],
        json!(["1.0", "1.1"])
    );
}

#[tokio::test]
async fn image_layers_and_generic_files_share_chunks() {
    let node = registry().await;
    node.create_repo("files", false).await;
    let layer = bytes(600_000, 20);
    assert_eq!(
        node.put("files", "layer.tar.gz", layer.clone())
            .await
            .status(),
        201
    );
    let chunks = node.stored_chunks();
    let physical = node
        .node()
        .service
        .catalog
        .global_stats()
        .expect("stats")
        .physical_bytes;
    push_blob(&node, NAME, &layer).await;
    assert_eq!(node.stored_chunks(), chunks, "no chunk written twice");
    let stats = node.node().service.catalog.global_stats().expect("stats");
    assert_eq!(stats.physical_bytes, physical);
    assert_eq!(
        stats.blobs, 1,
        "one blob, referenced by a file and a blob link"
    );
    let oci = node.json("/api/v1/repos/containers").await;
    assert_eq!(oci["physical_bytes"], 600_000);
    // Removing the file leaves the layer intact, and the other way round.
    let deleted = node
        .http
        .delete(node.url("/files/files/layer.tar.gz"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    let got = node
        .get(&format!("/v2/{NAME}/blobs/{}", digest(&layer)))
        .await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), layer.as_slice());
}

#[tokio::test]
async fn blobs_mount_across_arca_repositories() {
    let node = registry().await;
    node.create_oci_repo("mirror", false).await;
    let layer = bytes(90_000, 21);
    push_blob(&node, NAME, &layer).await;
    let mounted = node
        .http
        .post(node.url(&format!(
            "/v2/mirror/app/blobs/uploads/?mount={}&from={NAME}",
            digest(&layer)
        )))
        .send()
        .await
        .expect("mount");
    assert_eq!(mounted.status(), 201);
    assert_eq!(
        node.json("/api/v1/repos/mirror").await["physical_bytes"],
        90_000
    );
    // Unlinking from the source leaves the mounted copy.
    let response = node
        .http
        .delete(node.url(&format!("/v2/{NAME}/blobs/{}", digest(&layer))))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 202);
    let got = node
        .get(&format!("/v2/mirror/app/blobs/{}", digest(&layer)))
        .await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), layer.as_slice());
}

#[tokio::test]
async fn formats_are_kept_apart() {
    let node = registry().await;
    node.create_repo("files", false).await;
    let (status, body) = node
        .raw(b"PUT /files/containers/x.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("WRONG_FORMAT"), "{body}");
    for path in [
        "/files/containers/x.bin",
        "/api/v1/repos/containers/files",
        "/api/v1/repos/containers/files/x.bin",
    ] {
        assert_eq!(
            support::error_code(node.get(path).await).await,
            (400, "WRONG_FORMAT".into()),
            "{path}"
        );
    }
    let delete = node
        .http
        .delete(node.url("/files/containers/x.bin"))
        .send()
        .await
        .expect("delete");
    assert_eq!(
        support::error_code(delete).await,
        (400, "WRONG_FORMAT".into())
    );

    let (status, code) = oci_error(node.get("/v2/files/app/manifests/latest").await).await;
    assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"));
    let post = node
        .http
        .post(node.url("/v2/files/app/blobs/uploads/"))
        .send()
        .await
        .expect("post");
    assert_eq!(oci_error(post).await, (404, "NAME_UNKNOWN".into()));
}

#[tokio::test]
async fn registry_metrics_are_exported() {
    let node = registry().await;
    Image::new(11, &[5_000]).push(&node, NAME, "m").await;
    let _ = node.get(&format!("/v2/{NAME}/manifests/m")).await;
    let _ = node.get(&format!("/v2/{NAME}/manifests/nope")).await;
    let _ = node
        .http
        .post(node.url(&format!("/v2/{NAME}/blobs/uploads/")))
        .send()
        .await;
    let metrics = node.get("/metrics").await.text().await.expect("metrics");
    for needle in [
        "arca_oci_requests_total{operation=\"manifest_put\",status=\"201\"}",
        "arca_oci_requests_total{operation=\"upload_monolithic\",status=\"201\"}",
        "arca_oci_requests_total{operation=\"manifest_get\",status=\"200\"}",
        "arca_oci_requests_total{operation=\"manifest_get\",status=\"404\"}",
        "arca_oci_requests_total{operation=\"upload_start\",status=\"202\"}",
        "arca_oci_request_duration_seconds_bucket{operation=\"manifest_put\",status=\"201\",le=",
        "arca_oci_upload_sessions ",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }
}
