//! The proposal boundary: no command can stop a node. A forged or undecodable proposal sent to
//! the cluster service is refused before it reaches Raft; internal commands (role changes,
//! promotions, snapshot staging, replicated batches) cannot be proposed from outside the node;
//! and a command that reaches the log anyway but cannot be decoded (a newer node's kind, a
//! corrupted entry) is applied as a deterministic refusal instead of halting Raft.

mod support;

use std::time::Duration;

use arca_node::metadata::codec::encode;
use arca_node::metadata::model::{Command, RegionRole, StreamHead};
use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_proto::v1::ProposeRequest;
use support::{bytes, sha256_hex, TestNode};

/// The bytes that, proposed once to a fresh single-node region, made it unstartable.
const GARBAGE: &[u8] = &[0xff, 0xfe, 0x20, 0x67, 0x61, 0x72, 0x62, 0x61, 0x67, 0x65];

async fn cluster_client(node: &TestNode) -> ClusterServiceClient<tonic::transport::Channel> {
    ClusterServiceClient::connect(format!("http://{}", node.node().grpc_addr))
        .await
        .expect("connect to the cluster service")
}

async fn must_store_and_read(node: &TestNode, path: &str, seed: u64) {
    let body = bytes(50_000, seed);
    let response = node.put("files", path, body.clone()).await;
    assert_eq!(response.status(), 201, "PUT {path}");
    let read = node.get(&format!("/files/files/{path}")).await;
    assert_eq!(read.status(), 200, "GET {path}");
    let got = read.bytes().await.expect("body");
    assert_eq!(sha256_hex(&got), sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_proposals_are_refused_and_the_node_keeps_working_across_restarts() {
    let mut node = TestNode::start().await;
    node.create_repo("files", false).await;
    let mut client = cluster_client(&node).await;

    // Undecodable bytes never reach the log.
    let refused = client
        .propose(ProposeRequest {
            region: "local".into(),
            command: GARBAGE.to_vec(),
        })
        .await
        .expect_err("an undecodable proposal is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // Internal commands cannot be proposed from outside: a role change would turn the region
    // into a mirror, and a snapshot finish would replace its state with nothing.
    for command in [
        Command::SetRole {
            role: RegionRole::Mirror {
                primary: "elsewhere".into(),
                replication_addrs: vec!["127.0.0.1:1".into()],
                http_addrs: Vec::new(),
            },
        },
        Command::SnapshotFinish {
            head: StreamHead::default(),
            id: None,
            pairs: None,
            step_keys: None,
        },
        Command::SnapshotInstall {
            id: None,
            max_keys: 1,
        },
        Command::Promote { at_ms: 0 },
    ] {
        let refused = client
            .propose(ProposeRequest {
                region: "local".into(),
                command: encode(&command).expect("encode"),
            })
            .await
            .expect_err("an internal command is refused at the boundary");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }

    must_store_and_read(&node, "after/forgery.bin", 1).await;
    let ready = node.get("/readyz").await;
    assert_eq!(ready.status(), 200);

    node.restart().await;
    must_store_and_read(&node, "after/restart.bin", 2).await;
    let read = node.get("/files/files/after/forgery.bin").await;
    assert_eq!(read.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_entry_in_the_log_is_a_refusal_not_a_halt() {
    let mut node = TestNode::start().await;
    node.create_repo("files", false).await;
    // A command that got into the log anyway (a newer node's kind during an upgrade, or a
    // corrupted entry): every node applies it the same way, as a refusal.
    let applied = node
        .node()
        .service
        .region
        .raft
        .write(GARBAGE.to_vec())
        .await
        .expect("the entry commits and applies");
    let outcome: serde_json::Value = rmp_serde::from_slice(&applied.response).expect("an outcome");
    assert!(outcome.get("refused").is_some(), "{outcome}");
    must_store_and_read(&node, "after/garbage.bin", 3).await;

    // Replaying the log at start-up applies it the same way: the node starts.
    node.restart().await;
    must_store_and_read(&node, "after/restart.bin", 4).await;
    let metrics = node.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("arca_state_machine_refused_commands_total"),
        "refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_once_raft_stopped() {
    let node = TestNode::start().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while node.get("/readyz").await.status() != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.node().service.region.raft.shutdown().await;
    loop {
        let status = node.get("/readyz").await.status();
        if status == 503 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still answers {status} with raft stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
