//! Bad input on `/v2/`: truncated and oversized bodies, wrong digests, malformed manifests
//! and JSON, invalid names, unknown uploads, out-of-order chunks. Each gets the spec's status
//! and error code, and leaves nothing behind: no blob, no manifest, no chunk, no session bytes.

mod support;

use std::time::Duration;

use serde_json::json;
use support::oci::*;
use support::{bytes, must_wait_until, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "containers/app";

async fn registry() -> TestNode {
    let node = TestNode::start_with(|config| {
        config.limits.max_upload_bytes = 200_000;
        config.oci.max_manifest_bytes = 2_000;
    })
    .await;
    node.create_oci_repo("containers", false).await;
    node
}

/// Sends a request head promising more body than it sends, then closes the connection.
async fn send_truncated(node: &TestNode, head: &str, body: &[u8]) {
    let mut stream = tokio::net::TcpStream::connect(node.node().http_addr)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    stream.shutdown().await.expect("shutdown");
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}

/// Nothing of the repository's content is stored: no manifest, no linked blob, no chunk.
async fn must_be_empty(node: &TestNode) {
    must_wait_until(
        "every chunk of refused uploads is deleted",
        Duration::from_secs(10),
        || node.stored_chunks() == 0,
    )
    .await;
    let repo = node.json("/api/v1/repos/containers").await;
    assert_eq!(
        (
            &repo["artifacts"],
            &repo["logical_bytes"],
            &repo["physical_bytes"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{repo}"
    );
    assert_eq!(node.json("/v2/_catalog").await["repositories"], json!([]));
}

async fn start_session(node: &TestNode, name: &str) -> String {
    let post = node
        .http
        .post(node.url(&format!("/v2/{name}/blobs/uploads/")))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 202);
    post.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string()
}

async fn range_of(node: &TestNode, location: &str) -> String {
    let status = node.get(location).await;
    assert_eq!(status.status(), 204);
    status.headers()["range"]
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn truncated_bodies_store_nothing() {
    let node = registry().await;
    let blob = bytes(50_000, 1);

    // A monolithic upload cut off mid-body.
    let head = format!(
        "POST /v2/{NAME}/blobs/uploads/?digest={} HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n",
        digest(&blob)
    );
    send_truncated(&node, &head, &blob[..20_000]).await;
    // A chunk cut off mid-body: the session keeps only what it had acknowledged.
    let session = start_session(&node, NAME).await;
    let patch = node
        .http
        .patch(node.url(&session))
        .body(blob[..10_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 202);
    let head = format!(
        "PATCH {session} HTTP/1.1\r\nHost: x\r\nContent-Range: 10000-49999\r\nContent-Length: 40000\r\n\r\n"
    );
    send_truncated(&node, &head, &blob[10_000..30_000]).await;
    // A closing PUT cut off mid-body.
    let head = format!(
        "PUT {session}?digest={} HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n",
        digest(&blob)
    );
    send_truncated(&node, &head, &blob[10_000..20_000]).await;
    // A manifest cut off mid-body.
    let head = format!(
        "PUT /v2/{NAME}/manifests/latest HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: 900\r\n\r\n"
    );
    send_truncated(&node, &head, b"{\"schemaVersion\": 2,").await;

    must_be_empty(&node).await;
    assert_eq!(
        oci_error(
            node.get(&format!("/v2/{NAME}/blobs/{}", digest(&blob)))
                .await
        )
        .await,
        (404, "BLOB_UNKNOWN".into())
    );
    assert_eq!(
        oci_error(node.get(&format!("/v2/{NAME}/manifests/latest")).await).await,
        (404, "MANIFEST_UNKNOWN".into())
    );
    // The session survived its broken requests with exactly the acknowledged bytes (each
    // broken request was answered, so it is over), and can be finished.
    assert_eq!(range_of(&node, &session).await, "0-9999");
    let close = node
        .http
        .put(node.url(&format!("{session}?digest={}", digest(&blob))))
        .header("content-range", "10000-49999")
        .body(blob[10_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(close.status(), 201);
    let got = node
        .get(&format!("/v2/{NAME}/blobs/{}", digest(&blob)))
        .await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), blob.as_slice());
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let node = registry().await;
    let big = bytes(250_000, 2);
    let post = node
        .http
        .post(node.url(&format!(
            "/v2/{NAME}/blobs/uploads/?digest={}",
            digest(&big)
        )))
        .body(big.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(oci_error(post).await, (413, "SIZE_INVALID".into()));

    let session = start_session(&node, NAME).await;
    let first = node
        .http
        .patch(node.url(&session))
        .body(big[..150_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(first.status(), 202);
    let over = node
        .http
        .patch(node.url(&session))
        .body(big[150_000..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(oci_error(over).await, (413, "SIZE_INVALID".into()));
    assert_eq!(
        range_of(&node, &session).await,
        "0-149999",
        "the refused chunk is cut back"
    );
    let close = node
        .http
        .put(node.url(&format!("{session}?digest={}", digest(&big))))
        .body(big[150_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(oci_error(close).await, (413, "SIZE_INVALID".into()));
    assert_eq!(
        oci_error(node.get(&session).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into()),
        "an upload refused for its size is over"
    );

    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, b"{}"), "layers": [],
        "annotations": {"padding": "x".repeat(3_000)}}))
    .expect("json");
    let response = put_manifest(&node, NAME, "big", OCI_MANIFEST, &manifest).await;
    assert_eq!(oci_error(response).await, (413, "SIZE_INVALID".into()));
    must_be_empty(&node).await;
}

#[tokio::test]
async fn wrong_and_malformed_digests_store_nothing() {
    let node = registry().await;
    let blob = bytes(80_000, 3);
    let wrong = digest(b"something else");
    let post = node
        .http
        .post(node.url(&format!("/v2/{NAME}/blobs/uploads/?digest={wrong}")))
        .body(blob.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(oci_error(post).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(
        node.stored_chunks(),
        0,
        "the refused blob's chunks were deleted at once"
    );

    for bad in [
        "sha256:xyz",
        "sha256",
        "md5:abc",
        &format!("sha512:{}", "ab".repeat(64)),
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        let post = node
            .http
            .post(node.url(&format!("/v2/{NAME}/blobs/uploads/?digest={bad}")))
            .body(blob.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(
            oci_error(post).await,
            (400, "DIGEST_INVALID".into()),
            "{bad}"
        );
        let get = node.get(&format!("/v2/{NAME}/blobs/{bad}")).await;
        assert!(
            [400, 404].contains(&get.status().as_u16()),
            "GET blob {bad}: {}",
            get.status()
        );
    }

    // A session closed with the wrong digest stores nothing and ends.
    let session = start_session(&node, NAME).await;
    let patch = node
        .http
        .patch(node.url(&session))
        .body(blob.clone())
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 202);
    let no_digest = node.http.put(node.url(&session)).send().await.expect("put");
    assert_eq!(oci_error(no_digest).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(
        range_of(&node, &session).await,
        "0-79999",
        "a missing digest ends nothing"
    );
    let close = node
        .http
        .put(node.url(&format!("{session}?digest={wrong}")))
        .send()
        .await
        .expect("put");
    assert_eq!(oci_error(close).await, (400, "DIGEST_INVALID".into()));
    assert_eq!(
        oci_error(node.get(&session).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );

    // A manifest pushed under a digest that is not its own.
    let config = br#"{"os":"linux"}"#.to_vec();
    let manifest = image_manifest(&config, &[]);
    let response = put_manifest(&node, NAME, &wrong, OCI_MANIFEST, &manifest).await;
    assert_eq!(oci_error(response).await, (400, "DIGEST_INVALID".into()));
    must_be_empty(&node).await;
    let uploads = node.config.data_dir.join("uploads");
    assert_eq!(std::fs::read_dir(uploads).expect("uploads dir").count(), 0);
}

#[tokio::test]
async fn malformed_manifests_are_refused_and_leave_nothing() {
    let node = registry().await;
    let config = br#"{"os":"linux"}"#.to_vec();
    let layer = bytes(30_000, 4);
    let valid = image_manifest(&config, &[&layer]);
    let mut wrong_size: serde_json::Value = serde_json::from_slice(&valid).expect("json");
    wrong_size["layers"][0]["size"] = json!(29_999);
    let wrong_size = serde_json::to_vec(&wrong_size).expect("json");
    push_blob(&node, NAME, &config).await;
    push_blob(&node, NAME, &layer).await;
    let chunks = node.stored_chunks();

    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("not JSON", b"{not json".to_vec(), OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        ("JSON array", b"[]".to_vec(), OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        ("empty", Vec::new(), OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        (
            "schema 1",
            br#"{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}"#.to_vec(),
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            400,
            "MANIFEST_INVALID",
        ),
        (
            "no config",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})).expect("json"),
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        (
            "Content-Type differs from mediaType",
            valid.clone(),
            OCI_INDEX,
            400,
            "MANIFEST_INVALID",
        ),
        ("wrong descriptor size", wrong_size, OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        (
            "digest of the wrong form",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:zz", "size": 1}, "layers": []})).expect("json"),
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        (
            "missing blobs",
            image_manifest(&config, &[b"never pushed"]),
            OCI_MANIFEST,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
    ];
    for (what, body, content_type, status, code) in cases {
        let response = put_manifest(&node, NAME, "latest", content_type, &body).await;
        assert_eq!(
            oci_error(response).await,
            (status, code.to_string()),
            "{what}"
        );
    }
    for bad_tag in ["-leading-dash", ".dot", &"t".repeat(129)] {
        let response = put_manifest(&node, NAME, bad_tag, OCI_MANIFEST, &valid).await;
        assert_eq!(
            oci_error(response).await,
            (400, "MANIFEST_INVALID".into()),
            "{bad_tag}"
        );
    }
    assert_eq!(
        node.stored_chunks(),
        chunks,
        "refused manifests left no chunk"
    );
    let repo = node.json("/api/v1/repos/containers").await;
    assert_eq!(repo["artifacts"], 0);
    assert_eq!(
        node.json(&format!("/v2/{NAME}/tags/list")).await["tags"],
        json!([])
    );
    // The valid one still goes in.
    assert_eq!(
        put_manifest(&node, NAME, "latest", OCI_MANIFEST, &valid)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn invalid_names_are_refused() {
    let node = registry().await;
    let long = format!("containers/{}", "a".repeat(250));
    for name in [
        "Containers/app",
        "containers/App",
        "containers/a..b",
        "containers/a__-b",
        "containers/-a",
        "containers/a/",
        long.as_str(),
    ] {
        for path in [
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/blobs/{}", digest(b"x")),
        ] {
            let response = node.get(&path).await;
            assert_eq!(
                oci_error(response).await,
                (400, "NAME_INVALID".into()),
                "{path}"
            );
        }
        let post = node
            .http
            .post(node.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .expect("post");
        assert_eq!(
            oci_error(post).await,
            (400, "NAME_INVALID".into()),
            "{name}"
        );
    }
    // An oci repository's name must be addressable as the first component of a name.
    for (name, format, status) in [
        ("a..b", "oci", 400),
        ("a-_b", "oci", 400),
        ("a..b", "generic", 201),
    ] {
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&json!({"name": name, "format": format}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), status, "{format} repository {name}");
    }
    // A name needs an image after the repository.
    let response = node.get("/v2/containers/manifests/latest").await;
    assert_eq!(oci_error(response).await, (400, "NAME_INVALID".into()));
    let wrong_method = node
        .http
        .post(node.url(&format!("/v2/{NAME}/manifests/latest")))
        .send()
        .await
        .expect("post");
    assert_eq!(oci_error(wrong_method).await, (405, "UNSUPPORTED".into()));
    must_be_empty(&node).await;
}

#[tokio::test]
async fn unknown_uploads_are_blob_upload_unknown() {
    let node = registry().await;
    let random = "/v2/containers/app/blobs/uploads/4b0f8e0c-1f4a-4a43-9a43-3c1c4e1f2b7d";
    let not_uuid = "/v2/containers/app/blobs/uploads/not-a-session";
    for path in [random, not_uuid] {
        let requests = [
            node.http.get(node.url(path)),
            node.http.patch(node.url(path)).body("abc"),
            node.http
                .put(node.url(&format!("{path}?digest={}", digest(b"abc"))))
                .body("abc"),
            node.http.delete(node.url(path)),
        ];
        for request in requests {
            let response = request.send().await.expect("send");
            assert_eq!(
                oci_error(response).await,
                (404, "BLOB_UPLOAD_UNKNOWN".into()),
                "{path}"
            );
        }
    }
    // A session belongs to the image it was started for.
    let session = start_session(&node, NAME).await;
    let id = session.rsplit('/').next().expect("id");
    let elsewhere = node
        .get(&format!("/v2/containers/other/blobs/uploads/{id}"))
        .await;
    assert_eq!(
        oci_error(elsewhere).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
    // A cancelled session is gone, with its bytes.
    let patch = node
        .http
        .patch(node.url(&session))
        .body(bytes(1_000, 5))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 202);
    let cancel = node
        .http
        .delete(node.url(&session))
        .send()
        .await
        .expect("delete");
    assert_eq!(cancel.status(), 204);
    assert_eq!(
        oci_error(node.get(&session).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
    let uploads = node.config.data_dir.join("uploads");
    assert_eq!(std::fs::read_dir(uploads).expect("uploads dir").count(), 0);
    must_be_empty(&node).await;
}

#[tokio::test]
async fn out_of_order_chunks_get_416() {
    let node = registry().await;
    let blob = bytes(30_000, 6);
    let session = start_session(&node, NAME).await;
    let patch = |range: &str, body: &[u8]| {
        node.http
            .patch(node.url(&session))
            .header("content-range", range)
            .body(body.to_vec())
            .send()
    };
    let first = patch("0-9999", &blob[..10_000]).await.expect("patch");
    assert_eq!(first.status(), 202);
    for (range, body) in [
        ("20000-29999", &blob[20_000..]),
        ("5000-14999", &blob[5_000..15_000]),
        ("0-9999", &blob[..10_000]),
    ] {
        let response = patch(range, body).await.expect("patch");
        assert_eq!(response.headers()["range"], "0-9999", "{range}");
        assert_eq!(response.headers()["location"], session.as_str());
        assert_eq!(
            oci_error(response).await,
            (416, "BLOB_UPLOAD_INVALID".into()),
            "{range}"
        );
    }
    let malformed = patch("10000", &blob[10_000..20_000]).await.expect("patch");
    assert_eq!(
        oci_error(malformed).await,
        (400, "BLOB_UPLOAD_INVALID".into())
    );
    let wrong_length = patch("10000-10099", &blob[10_000..20_000])
        .await
        .expect("patch");
    assert_eq!(oci_error(wrong_length).await, (400, "SIZE_INVALID".into()));
    let put = node
        .http
        .put(node.url(&format!("{session}?digest={}", digest(&blob))))
        .header("content-range", "15000-29999")
        .body(blob[15_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(oci_error(put).await, (416, "BLOB_UPLOAD_INVALID".into()));
    assert_eq!(range_of(&node, &session).await, "0-9999");
    let second = patch("10000-19999", &blob[10_000..20_000])
        .await
        .expect("patch");
    assert_eq!(second.status(), 202);
    let put = node
        .http
        .put(node.url(&format!("{session}?digest={}", digest(&blob))))
        .header("content-range", "20000-29999")
        .body(blob[20_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
}

#[tokio::test]
async fn a_read_of_a_reference_that_is_neither_a_tag_nor_a_digest_is_manifest_unknown() {
    // distribution answers 404 MANIFEST_UNKNOWN for a manifest reference its router cannot
    // match (the conformance suite pulls `.INVALID_MANIFEST_NAME` and expects 404); a write to
    // one stays a 400 that names the problem.
    let node = registry().await;
    for reference in [".INVALID_MANIFEST_NAME", "-leading-dash", "sha256:abc"] {
        let path = format!("/v2/{NAME}/manifests/{reference}");
        assert_eq!(
            oci_error(node.get(&path).await).await,
            (404, "MANIFEST_UNKNOWN".into()),
            "GET {reference}"
        );
        let head = node.http.head(node.url(&path)).send().await.expect("head");
        assert_eq!(head.status(), 404, "HEAD {reference}");
    }
    let put = node
        .http
        .put(node.url(&format!("/v2/{NAME}/manifests/.INVALID_MANIFEST_NAME")))
        .header("content-type", OCI_MANIFEST)
        .body("{}")
        .send()
        .await
        .expect("put");
    assert_eq!(oci_error(put).await, (400, "MANIFEST_INVALID".into()));
    must_be_empty(&node).await;
}

#[tokio::test]
async fn a_write_that_meets_a_demoted_region_is_refused_the_same_for_files_and_images() {
    // Architecture review: a write the state machine refused because the region had become a
    // mirror while it was in flight got 307 READ_ONLY_MIRROR (naming the primary) for a file,
    // and 503 NO_QUORUM text for an image. Both must name the primary.
    use arca_node::error::Error;
    use arca_node::formats::oci::error::OciError;
    let node = registry().await;
    node.create_repo("files", false).await;
    assert_eq!(
        node.put("files", "a.bin", bytes(1000, 1)).await.status(),
        201
    );
    let blob = push_blob(&node, NAME, &bytes(2000, 2)).await;
    let service = node.node().service.clone();
    let uploads_dir = tempfile::tempdir().expect("tempdir");
    let uploads = arca_node::formats::oci::uploads::UploadStore::open(
        uploads_dir.path().to_path_buf(),
        Duration::from_secs(60),
    )
    .expect("uploads");
    let (audit, _queue) = arca_node::auth::audit::AuditSink::new("local".into(), 1);
    let auth = arca_node::auth::Auth::new(service.catalog.clone(), Default::default(), audit);
    let registry = arca_node::formats::oci::registry::Registry::new(service.clone(), uploads, auth);
    // The region becomes a mirror of "us" after the writes passed the front door.
    let role = arca_node::metadata::model::Command::SetRole {
        role: arca_node::metadata::model::RegionRole::Mirror {
            primary: "us".into(),
            replication_addrs: Vec::new(),
            http_addrs: vec!["127.0.0.1:9".into()],
        },
    };
    service
        .region
        .raft
        .write(arca_node::metadata::codec::encode(&role).expect("encode"))
        .await
        .expect("commit");
    let files = arca_node::formats::generic::files::Files {
        service: service.clone(),
    };
    let file = files
        .delete_file(
            &arca_node::names::RepoName::parse("files").expect("repo"),
            &arca_node::names::ArtifactPath::parse("a.bin").expect("path"),
        )
        .await
        .expect_err("refused on a mirror");
    assert!(matches!(file, Error::ReadOnlyMirror { .. }), "{file:?}");
    let image = registry
        .delete_blob(
            &arca_node::formats::oci::names::OciName::parse(NAME).expect("name"),
            &arca_node::digest::Sha256::from_hex(blob.trim_start_matches("sha256:"))
                .expect("digest"),
        )
        .await
        .expect_err("refused on a mirror");
    assert!(
        matches!(&image, OciError::Node(Error::ReadOnlyMirror { primary, .. }) if primary == "us"),
        "{image:?}"
    );
}
