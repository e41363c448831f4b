//! The HTTP contract of a single node, driven over real sockets.

mod support;

use support::{bytes, error_code, sha256_hex, TestNode};

#[tokio::test]
async fn repositories_are_created_listed_and_validated() {
    let node = TestNode::start().await;
    let created = node
        .http
        .post(node.url("/api/v1/repos"))
        .json(&serde_json::json!({"name": "libs-release", "format": "generic", "immutable": true}))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/api/v1/repos/libs-release");
    let body: serde_json::Value = created.json().await.expect("json");
    assert_eq!(body["name"], "libs-release");
    assert_eq!(body["immutable"], true);

    let again = node
        .http
        .post(node.url("/api/v1/repos"))
        .json(&serde_json::json!({"name": "libs-release"}))
        .send()
        .await
        .expect("post");
    assert_eq!(error_code(again).await, (409, "REPO_EXISTS".into()));

    for (body, code) in [
        (serde_json::json!({"name": "Bad"}), "INVALID_REPO_NAME"),
        (serde_json::json!({"name": "-x"}), "INVALID_REPO_NAME"),
        (
            serde_json::json!({"name": "x".repeat(65)}),
            "INVALID_REPO_NAME",
        ),
        (
            serde_json::json!({"name": "ok", "format": "cobol"}),
            "UNSUPPORTED_FORMAT",
        ),
        (
            serde_json::json!({"name": "ok", "colour": "red"}),
            "INVALID_REQUEST",
        ),
        (serde_json::json!({"format": "generic"}), "INVALID_REQUEST"),
    ] {
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(
            error_code(response).await,
            (400, code.to_string()),
            "{body}"
        );
    }
    let garbage = node
        .http
        .post(node.url("/api/v1/repos"))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(error_code(garbage).await, (400, "INVALID_REQUEST".into()));

    node.create_repo("snapshots", false).await;
    let list = node.json("/api/v1/repos").await;
    let names: Vec<&str> = list["repositories"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["libs-release", "snapshots"]);

    let missing = node.get("/api/v1/repos/nope").await;
    assert_eq!(error_code(missing).await, (404, "REPO_NOT_FOUND".into()));
    let bad = node.get("/api/v1/repos/NOPE").await;
    assert_eq!(error_code(bad).await, (400, "INVALID_REPO_NAME".into()));
}

#[tokio::test]
async fn files_round_trip_with_digests_ranges_and_conditional_gets() {
    let node = TestNode::start().await;
    node.create_repo("generic", false).await;
    let data = bytes(300_000, 1);
    let response = node
        .put("generic", "dir/app%20v1.tar.gz", data.clone())
        .await;
    assert_eq!(response.status(), 201);
    let put: serde_json::Value = response.json().await.expect("json");
    assert_eq!(put["repo"], "generic");
    assert_eq!(put["path"], "dir/app v1.tar.gz");
    assert_eq!(put["size"], 300_000);
    assert_eq!(put["sha256"], sha256_hex(&data));
    assert_eq!(put["blake3"], blake3::hash(&data).to_hex().as_str());
    let chunks = put["chunks"].as_u64().expect("chunks");
    assert!(chunks > 2, "{chunks} chunks");
    assert_eq!(put["new_chunks"], chunks);

    let path = "/files/generic/dir/app%20v1.tar.gz";
    let got = node.get(path).await;
    assert_eq!(got.status(), 200);
    let etag = format!("\"{}\"", sha256_hex(&data));
    assert_eq!(got.headers()["etag"], etag.as_str());
    assert_eq!(
        got.headers()["x-checksum-sha256"],
        sha256_hex(&data).as_str()
    );
    assert_eq!(
        got.headers()["x-checksum-blake3"],
        blake3::hash(&data).to_hex().as_str()
    );
    assert_eq!(got.headers()["content-length"], "300000");
    assert_eq!(got.headers()["cache-control"], "no-cache");
    assert_eq!(got.bytes().await.expect("body").as_ref(), data.as_slice());

    let head = node.http.head(node.url(path)).send().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "300000");
    assert_eq!(head.headers()["etag"], etag.as_str());
    assert!(head.bytes().await.expect("body").is_empty());

    // A range across chunk boundaries, an open range, a suffix range.
    for (range, expected) in [
        ("bytes=1000-99999", &data[1000..100_000]),
        ("bytes=299990-", &data[299_990..]),
        ("bytes=-5", &data[299_995..]),
    ] {
        let partial = node
            .http
            .get(node.url(path))
            .header("range", range)
            .send()
            .await
            .expect("get");
        assert_eq!(partial.status(), 206, "{range}");
        let content_range = partial.headers()["content-range"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(content_range.ends_with("/300000"), "{content_range}");
        assert_eq!(
            partial.bytes().await.expect("body").as_ref(),
            expected,
            "{range}"
        );
    }
    let unsatisfiable = node
        .http
        .get(node.url(path))
        .header("range", "bytes=300000-")
        .send()
        .await
        .expect("get");
    assert_eq!(unsatisfiable.headers()["content-range"], "bytes */300000");
    assert_eq!(
        error_code(unsatisfiable).await,
        (416, "RANGE_NOT_SATISFIABLE".into())
    );

    let cached = node
        .http
        .get(node.url(path))
        .header("if-none-match", etag.as_str())
        .send()
        .await
        .expect("get");
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    let stale = node
        .http
        .get(node.url(path))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .expect("get");
    assert_eq!(stale.status(), 200);

    let info = node
        .json("/api/v1/repos/generic/files/dir/app%20v1.tar.gz")
        .await;
    assert_eq!(info["size"], 300_000);
    assert_eq!(info["sha256"], sha256_hex(&data));

    let empty = node.put("generic", "empty.txt", Vec::new()).await;
    assert_eq!(empty.status(), 201);
    let empty_get = node.get("/files/generic/empty.txt").await;
    assert_eq!(empty_get.headers()["content-length"], "0");
    assert!(empty_get.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn checksum_header_is_enforced_and_a_mismatch_stores_nothing() {
    let node = TestNode::start().await;
    node.create_repo("generic", false).await;
    let data = bytes(200_000, 2);
    let wrong = node
        .http
        .put(node.url("/files/generic/a.bin"))
        .header("x-checksum-sha256", sha256_hex(b"something else"))
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(error_code(wrong).await, (400, "DIGEST_MISMATCH".into()));
    assert_eq!(
        error_code(node.get("/files/generic/a.bin").await).await,
        (404, "ARTIFACT_NOT_FOUND".into())
    );
    let repo = node.json("/api/v1/repos/generic").await;
    assert_eq!(
        (repo["artifacts"].as_u64(), repo["physical_bytes"].as_u64()),
        (Some(0), Some(0))
    );

    let malformed = node
        .http
        .put(node.url("/files/generic/a.bin"))
        .header("x-checksum-sha256", "xyz")
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(error_code(malformed).await, (400, "INVALID_DIGEST".into()));

    // The refused upload's chunks were released: storing the same bytes writes them all again.
    let right = node
        .http
        .put(node.url("/files/generic/a.bin"))
        .header("x-checksum-sha256", sha256_hex(&data))
        .body(data.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(right.status(), 201);
    let body: serde_json::Value = right.json().await.expect("json");
    assert_eq!(body["new_chunks"], body["chunks"]);
}

#[tokio::test]
async fn identical_chunks_are_stored_once_across_files_and_repositories() {
    let node = TestNode::start().await;
    node.create_repo("one", false).await;
    node.create_repo("two", false).await;
    let v1 = bytes(1_000_000, 3);
    let mut v2 = v1.clone();
    v2[500_000..500_100].copy_from_slice(&[0xEE; 100]);

    let first: serde_json::Value = node
        .put("one", "app-1.0.bin", v1.clone())
        .await
        .json()
        .await
        .expect("json");
    let second: serde_json::Value = node
        .put("one", "app-1.1.bin", v2.clone())
        .await
        .json()
        .await
        .expect("json");
    let chunks = second["chunks"].as_u64().expect("chunks");
    let new = second["new_chunks"].as_u64().expect("new");
    assert!(
        chunks > 10 && new <= 3,
        "an edit in the middle rewrote {new} of {chunks} chunks"
    );
    assert_eq!(first["new_chunks"], first["chunks"]);

    let copy: serde_json::Value = node
        .put("two", "copy.bin", v1.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(copy["new_chunks"], 0);

    let one = node.json("/api/v1/repos/one").await;
    assert_eq!(one["artifacts"], 2);
    assert_eq!(one["logical_bytes"], 2_000_000);
    let physical = one["physical_bytes"].as_u64().expect("physical");
    assert!(physical < 1_300_000, "physical {physical} after dedup");
    assert!(physical >= 1_000_000);
    let two = node.json("/api/v1/repos/two").await;
    assert_eq!(two["physical_bytes"], 1_000_000);

    assert_eq!(
        node.get("/files/one/app-1.1.bin")
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        v2.as_slice()
    );
    assert_eq!(
        node.get("/files/two/copy.bin")
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        v1.as_slice()
    );
}

#[tokio::test]
async fn mutable_overwrites_replace_content_and_release_the_old_blob() {
    let node = TestNode::start().await;
    node.create_repo("snap", false).await;
    let old = bytes(120_000, 4);
    let new = bytes(80_000, 5);
    assert_eq!(
        node.put("snap", "latest.bin", old.clone()).await.status(),
        201
    );
    assert_eq!(
        node.put("snap", "latest.bin", new.clone()).await.status(),
        201
    );
    assert_eq!(
        node.get("/files/snap/latest.bin")
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        new.as_slice()
    );
    let repo = node.json("/api/v1/repos/snap").await;
    assert_eq!(repo["artifacts"], 1);
    assert_eq!(repo["logical_bytes"], 80_000);
    assert_eq!(repo["physical_bytes"], 80_000);
    // Re-sending identical content is a no-op answered 200.
    assert_eq!(
        node.put("snap", "latest.bin", new.clone()).await.status(),
        200
    );

    let deleted = node
        .http
        .delete(node.url("/files/snap/latest.bin"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        error_code(node.get("/files/snap/latest.bin").await).await,
        (404, "ARTIFACT_NOT_FOUND".into())
    );
    let again = node
        .http
        .delete(node.url("/files/snap/latest.bin"))
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(again).await, (404, "ARTIFACT_NOT_FOUND".into()));
    let repo = node.json("/api/v1/repos/snap").await;
    assert_eq!(
        (repo["artifacts"].as_u64(), repo["physical_bytes"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn immutable_repositories_refuse_changes_but_accept_identical_retries() {
    let node = TestNode::start().await;
    node.create_repo("release", true).await;
    let data = bytes(50_000, 6);
    assert_eq!(
        node.put("release", "lib/1.0/lib.jar", data.clone())
            .await
            .status(),
        201
    );
    let retry = node.put("release", "lib/1.0/lib.jar", data.clone()).await;
    assert_eq!(retry.status(), 200);
    let retry_body: serde_json::Value = retry.json().await.expect("json");
    assert_eq!(retry_body["sha256"], sha256_hex(&data));
    let changed = node
        .put("release", "lib/1.0/lib.jar", bytes(50_000, 7))
        .await;
    assert_eq!(error_code(changed).await, (409, "IMMUTABLE".into()));
    let delete = node
        .http
        .delete(node.url("/files/release/lib/1.0/lib.jar"))
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(delete).await, (409, "IMMUTABLE".into()));
    let got = node.get("/files/release/lib/1.0/lib.jar").await;
    assert_eq!(
        got.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(got.bytes().await.expect("body").as_ref(), data.as_slice());
    let repo = node.json("/api/v1/repos/release").await;
    assert_eq!(repo["physical_bytes"], 50_000);
}

#[tokio::test]
async fn listings_filter_by_prefix_and_paginate() {
    let node = TestNode::start().await;
    node.create_repo("list", false).await;
    for name in ["a/1", "a/2", "a/3", "b/1", "ab"] {
        assert_eq!(
            node.put("list", name, name.as_bytes().to_vec())
                .await
                .status(),
            201
        );
    }
    let all = node.json("/api/v1/repos/list/files").await;
    let paths: Vec<&str> = all["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, vec!["a/1", "a/2", "a/3", "ab", "b/1"]);
    assert!(all["files"][0]["created_at"]
        .as_str()
        .expect("time")
        .ends_with('Z'));
    assert_eq!(all["files"][0]["sha256"], sha256_hex(b"a/1"));

    let page = node
        .json("/api/v1/repos/list/files?prefix=a/&limit=2")
        .await;
    assert_eq!(page["files"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next"], "a/2");
    let rest = node
        .json("/api/v1/repos/list/files?prefix=a/&limit=2&after=a/2")
        .await;
    assert_eq!(rest["files"][0]["path"], "a/3");
    assert!(rest["next"].is_null());

    assert_eq!(
        error_code(node.get("/api/v1/repos/nope/files").await).await,
        (404, "REPO_NOT_FOUND".into())
    );
    assert_eq!(
        error_code(node.get("/api/v1/repos/list/files?limit=x").await).await,
        (400, "INVALID_REQUEST".into())
    );
}

#[tokio::test]
async fn bad_paths_and_unknown_targets_get_precise_errors() {
    let node = TestNode::start().await;
    node.create_repo("g", false).await;
    let long = format!("/files/g/{}", "a".repeat(1025));
    let cases: Vec<(String, u16, &str)> = vec![
        ("/files/g/a/../b".into(), 400, "INVALID_PATH"),
        ("/files/g/a/%2e%2e/b".into(), 400, "INVALID_PATH"),
        ("/files/g/a//b".into(), 400, "INVALID_PATH"),
        ("/files/g/a/".into(), 400, "INVALID_PATH"),
        ("/files/g/".into(), 400, "INVALID_PATH"),
        ("/files/g".into(), 400, "INVALID_PATH"),
        ("/files/g/a%00b".into(), 400, "INVALID_PATH"),
        ("/files/g/bad%ff%fe".into(), 400, "INVALID_PATH"),
        (long, 400, "INVALID_PATH"),
        ("/files/G/a".into(), 400, "INVALID_REPO_NAME"),
        ("/files/missing/a".into(), 404, "REPO_NOT_FOUND"),
    ];
    for (path, status, code) in cases {
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        );
        let (got_status, body) = node.raw(request.as_bytes()).await;
        assert_eq!(got_status, status, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(json["code"], code, "{path}: {body}");
    }
    let list = node.json("/api/v1/repos/g/files").await;
    assert!(list["files"].as_array().expect("files").is_empty());

    assert_eq!(
        error_code(node.get("/nothing/here").await).await,
        (404, "NOT_FOUND".into())
    );
    let wrong_method = node
        .http
        .patch(node.url("/files/g/a"))
        .send()
        .await
        .expect("patch");
    assert_eq!(
        error_code(wrong_method).await,
        (405, "METHOD_NOT_ALLOWED".into())
    );
}

#[tokio::test]
async fn oversized_and_truncated_bodies_store_nothing() {
    let node = TestNode::start_with(|c| c.limits.max_upload_bytes = 100_000).await;
    node.create_repo("g", false).await;
    let too_big = node.put("g", "big.bin", bytes(150_000, 8)).await;
    assert_eq!(error_code(too_big).await, (413, "TOO_LARGE".into()));

    // Promise 50 000 bytes, send 20 000, close the connection.
    let mut request =
        b"PUT /files/g/cut.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n".to_vec();
    request.extend(bytes(20_000, 9));
    let addr = node.node().http_addr;
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&request).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
    }
    let list = node.json("/api/v1/repos/g/files").await;
    assert!(
        list["files"].as_array().expect("files").is_empty(),
        "{list}"
    );
    let stats = node.json("/api/v1/repos/g").await;
    assert_eq!(stats["physical_bytes"], 0);

    // A later, complete upload of the same path works.
    assert_eq!(
        node.put("g", "cut.bin", bytes(20_000, 9)).await.status(),
        201
    );
}

#[tokio::test]
async fn acknowledged_files_survive_restart_and_corrupt_chunks_are_never_served() {
    let mut node = TestNode::start().await;
    node.create_repo("g", true).await;
    let data = bytes(100_000, 10);
    let put: serde_json::Value = node
        .put("g", "keep.bin", data.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        node.put("g", "small.txt", b"hello".to_vec()).await.status(),
        201
    );
    node.restart().await;
    assert_eq!(
        node.get("/files/g/keep.bin")
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        data.as_slice()
    );
    assert_eq!(put["sha256"], sha256_hex(&data));

    // Corrupt the chunk of small.txt on disk while the node is down.
    let chunk = arca_node::digest::Blake3::of(b"hello");
    node.stop().await;
    {
        let db = wait_open_db(&node.config.data_dir.join("db")).await;
        let store = arca_node::storage::chunk_store::ChunkStore::new(db).expect("store");
        store
            .overwrite_for_test(&chunk, b"jello")
            .expect("overwrite");
    }
    node.restart().await;
    let corrupt = node.get("/files/g/small.txt").await;
    assert_eq!(error_code(corrupt).await, (500, "CORRUPT_CHUNK".into()));
    let metrics = node.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("arca_storage_corrupt_chunks_total") && !l.ends_with(" 0")),
        "corruption counted"
    );
    // Other artifacts are unaffected.
    assert_eq!(
        node.get("/files/g/keep.bin")
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        data.as_slice()
    );
}

async fn wait_open_db(path: &std::path::Path) -> std::sync::Arc<rocksdb::DB> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match arca_node::db::open_db(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open db: {e:#}"),
        }
    }
}

#[tokio::test]
async fn operational_endpoints_report_health_and_metrics() {
    let node = TestNode::start().await;
    node.create_repo("m", false).await;
    let data = bytes(70_000, 11);
    assert_eq!(node.put("m", "a", data.clone()).await.status(), 201);
    assert_eq!(node.put("m", "b", data.clone()).await.status(), 201);
    let _ = node.get("/files/m/a").await.bytes().await;
    assert_eq!(node.json("/healthz").await["status"], "ok");
    let ready = node.json("/readyz").await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["leader"], 1);

    let metrics = node.get("/metrics").await.text().await.expect("metrics");
    for needle in [
        "arca_http_requests_total{",
        "arca_http_request_duration_seconds_bucket{",
        "arca_http_received_bytes_total",
        "arca_http_sent_bytes_total",
        "arca_storage_logical_bytes",
        "arca_storage_physical_bytes",
        "arca_storage_dedup_saved_bytes",
        "arca_storage_chunks_written_total",
        "arca_storage_stored_chunks",
        "arca_raft_term",
        "arca_raft_leader_id",
        "arca_raft_applied_index",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }
    assert!(
        metrics.contains("route=\"/files/{*target}\""),
        "route label is the template"
    );
}

#[tokio::test]
async fn metric_labels_come_from_a_closed_set() {
    // Audit L4: hyper accepts any token as a method, and the request metrics were labelled
    // with it, so a client could grow the number of series without bound.
    let node = TestNode::start().await;
    for method in ["FOOBAR", "BREW", "PROPFIND-X"] {
        let request =
            format!("{method} /files/x/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _) = node.raw(request.as_bytes()).await;
        assert!(status >= 400, "{method}: {status}");
    }
    let metrics = node.get("/metrics").await.text().await.expect("metrics");
    for method in ["FOOBAR", "BREW", "PROPFIND-X"] {
        assert!(
            !metrics.contains(method),
            "the method {method} became a metric label"
        );
    }
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}
