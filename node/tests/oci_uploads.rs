//! Upload sessions across restarts and time: durable bytes survive a restart, lost ones end
//! the session with `BLOB_UPLOAD_UNKNOWN`, idle sessions expire.

mod support;

use std::time::Duration;

use support::oci::*;
use support::{bytes, must_wait_until, TestNode};

const NAME: &str = "containers/app";

async fn start_session(node: &TestNode) -> String {
    let post = node
        .http
        .post(node.url(&format!("/v2/{NAME}/blobs/uploads/")))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 202);
    post.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string()
}

async fn patch(node: &TestNode, session: &str, range: &str, body: &[u8]) -> reqwest::Response {
    node.http
        .patch(node.url(session))
        .header("content-range", range)
        .body(body.to_vec())
        .send()
        .await
        .expect("patch")
}

#[tokio::test]
async fn sessions_survive_a_restart_with_their_acknowledged_bytes() {
    let mut node = TestNode::start().await;
    node.create_oci_repo("containers", false).await;
    let blob = bytes(120_000, 1);
    let kept = start_session(&node).await;
    assert_eq!(
        patch(&node, &kept, "0-59999", &blob[..60_000])
            .await
            .status(),
        202
    );
    let lost = start_session(&node).await;
    assert_eq!(
        patch(&node, &lost, "0-59999", &blob[..60_000])
            .await
            .status(),
        202
    );
    node.stop().await;

    // While the node is down, `lost` loses acknowledged bytes, `kept` gains unacknowledged ones.
    let uploads = node.config.data_dir.join("uploads");
    let data = |location: &str| {
        let id = location.rsplit('/').next().expect("id");
        uploads.join(format!("{id}.data"))
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(data(&lost))
        .expect("open")
        .set_len(1_000)
        .expect("truncate");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data(&kept))
            .expect("open");
        file.write_all(b"not acknowledged").expect("write");
    }
    node.restart().await;

    let status = node.get(&kept).await;
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], "0-59999");
    assert_eq!(
        oci_error(node.get(&lost).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into()),
        "a session whose bytes were lost must be restarted by the client"
    );
    assert_eq!(
        patch(&node, &kept, "60000-119999", &blob[60_000..])
            .await
            .status(),
        202
    );
    let close = node
        .http
        .put(node.url(&format!("{kept}?digest={}", digest(&blob))))
        .send()
        .await
        .expect("put");
    assert_eq!(close.status(), 201);
    let got = node
        .get(&format!("/v2/{NAME}/blobs/{}", digest(&blob)))
        .await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), blob.as_slice());
    assert_eq!(std::fs::read_dir(&uploads).expect("dir").count(), 0);
}

#[tokio::test]
async fn idle_sessions_expire() {
    let node = TestNode::start_with(|config| {
        config.oci.upload_expiry_secs = 1;
        config.oci.upload_sweep_interval_secs = 1;
    })
    .await;
    node.create_oci_repo("containers", false).await;
    let session = start_session(&node).await;
    assert_eq!(
        patch(&node, &session, "0-999", &bytes(1_000, 2))
            .await
            .status(),
        202
    );
    let uploads = node.config.data_dir.join("uploads");
    must_wait_until("the idle session expires", Duration::from_secs(15), || {
        std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(1) == 0
    })
    .await;
    assert_eq!(
        oci_error(node.get(&session).await).await,
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
    // The sweep counts an expiry just after it deletes the session's files.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.metric("arca_oci_upload_sessions_expired_total").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "expiry is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
