//! Resource limits at the HTTP edge: slow uploads cannot starve the node, upload counts and
//! upload sessions are capped, and every refusal says why with a precise status.

mod support;

use std::time::{Duration, Instant};

use support::oci::oci_error;
use support::{bytes, TestNode};
use tokio::io::AsyncWriteExt;

/// Opens a PUT that sends its headers and a first byte, then stalls.
/// Uploads the node has answered so far: admitted (it read their body) or refused at admission.
async fn uploads_handled(node: &TestNode) -> f64 {
    node.metric("arca_http_received_bytes_total").await
        + node.metric("arca_http_refused_uploads_total").await
}

/// Waits until the node has handled `count` more stalled uploads than `before` (from
/// [`uploads_handled`]): each either holds its place, its one body byte read, or was refused.
async fn wait_for_stalled_uploads(node: &TestNode, before: f64, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while uploads_handled(node).await < before + count as f64 {
        assert!(
            Instant::now() < deadline,
            "{count} stalled uploads never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stalled_upload(node: &TestNode, path: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(node.node().http_addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /files/files/{path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 1000000\r\n\r\nx",
        node.admin_auth()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_do_not_starve_downloads() {
    // Audit A7: each upload held a blocking thread for its whole duration; about 512 clients
    // sending a byte a second exhausted the pool every chunk read uses.
    let node = TestNode::start_with_env(&[("LIMITS__MAX_CONCURRENT_UPLOADS", "2000")]).await;
    node.create_repo("files", false).await;
    let body = bytes(200_000, 1);
    assert_eq!(
        node.put("files", "kept.bin", body.clone()).await.status(),
        201
    );
    let before = uploads_handled(&node).await;
    let mut stalled = Vec::new();
    for i in 0..540 {
        stalled.push(stalled_upload(&node, &format!("slow/{i}")).await);
    }
    wait_for_stalled_uploads(&node, before, 540).await;
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), node.get("/files/files/kept.bin"))
        .await
        .expect("a download completes while 540 uploads stall");
    assert_eq!(read.status(), 200);
    let got = tokio::time::timeout(Duration::from_secs(10), read.bytes())
        .await
        .expect("the body arrives")
        .expect("body");
    assert_eq!(got.len(), body.len());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_past_the_limit_are_refused() {
    let node = TestNode::start_with_env(&[("LIMITS__MAX_CONCURRENT_UPLOADS", "2")]).await;
    node.create_repo("files", false).await;
    let before = uploads_handled(&node).await;
    let _a = stalled_upload(&node, "a").await;
    let _b = stalled_upload(&node, "b").await;
    wait_for_stalled_uploads(&node, before, 2).await;
    let refused = node.put("files", "c", bytes(1000, 2)).await;
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "TOO_MANY_UPLOADS", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stops_sending_is_cut_off() {
    let node = TestNode::start_with_env(&[("LIMITS__BODY_IDLE_TIMEOUT_SECS", "1")]).await;
    node.create_repo("files", false).await;
    let mut stream = stalled_upload(&node, "idle").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await;
    assert!(
        read.is_ok(),
        "the node closed an upload idle past its timeout"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("INCOMPLETE_BODY"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_are_capped() {
    // Audit A8: sessions had no count or byte quota, on the filesystem RocksDB lives on.
    let node = TestNode::start_with_env(&[("OCI__MAX_UPLOAD_SESSIONS", "3")]).await;
    node.create_oci_repo("img", false).await;
    for _ in 0..3 {
        let started = node
            .http
            .post(node.url("/v2/img/app/blobs/uploads/"))
            .send()
            .await
            .expect("post");
        assert_eq!(started.status(), 202);
    }
    let refused = node
        .http
        .post(node.url("/v2/img/app/blobs/uploads/"))
        .send()
        .await
        .expect("post");
    assert_eq!(
        oci_error(refused).await,
        (429, "TOOMANYREQUESTS".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_session_bytes_are_capped() {
    let node = TestNode::start_with_env(&[("OCI__MAX_SPOOLED_BYTES", "100000")]).await;
    node.create_oci_repo("img", false).await;
    let started = node
        .http
        .post(node.url("/v2/img/app/blobs/uploads/"))
        .send()
        .await
        .expect("post");
    let location = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        node.url(&location)
    };
    let too_much = node
        .http
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .body(bytes(150_000, 3))
        .send()
        .await
        .expect("patch");
    assert_eq!(oci_error(too_much).await.0, 413);
}
