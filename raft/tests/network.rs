//! The tonic transport between the nodes of a region, over real servers on loopback.

mod common;

use std::time::Duration;

use arca_proto::v1::raft_service_client::RaftServiceClient;
use arca_proto::v1::RaftRequest;
use arca_raft::network::NetworkFactory;
use arca_raft::{ClusterId, PeerTransport, RaftConfig};
use common::{loopback_listener, node_info, slow_proxy, Node};
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use openraft::{RaftNetwork, RaftNetworkFactory, Vote};

fn vote_request() -> VoteRequest<u64> {
    VoteRequest {
        vote: Vote::new(1, 2),
        last_log_id: None,
    }
}

/// openraft asks for a new client per voter on every read barrier; each must not be a new
/// TCP and HTTP/2 connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_one_peer_share_one_connection() {
    let node = Node::start(1, &RaftConfig::default(), loopback_listener().await).await;
    let mut factory = NetworkFactory::new("test", ClusterId::default(), PeerTransport::plaintext());
    let mut clone = factory.clone();
    for i in 0..40 {
        // Both the factory and its clone, as openraft holds several.
        let factory = if i % 2 == 0 { &mut factory } else { &mut clone };
        let mut client = factory.new_client(1, &node.info()).await;
        client
            .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
            .await
            .expect("vote rpc");
    }
    assert_eq!(
        node.server.accepted(),
        1,
        "40 clients of one peer opened {} connections",
        node.server.accepted()
    );

    // The peer moves to another address: the next client goes there.
    let moved = Node::start(2, &RaftConfig::default(), loopback_listener().await).await;
    for _ in 0..5 {
        let mut client = factory.new_client(1, &moved.info()).await;
        client
            .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
            .await
            .expect("vote rpc to the new address");
    }
    assert_eq!(moved.server.accepted(), 1);
    assert_eq!(node.server.accepted(), 1);
}

/// A learner that is far behind on large commands, over a slow WAN-like link (20 ms each way,
/// 5 MB/s), must catch up. openraft gives every AppendEntries the heartbeat interval (150 ms)
/// and may put hundreds of entries in one, so the transport must send what fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_behind_a_slow_link_catches_up_on_large_entries() {
    const ENTRIES: usize = 100;
    const ENTRY_BYTES: usize = 256 * 1024;
    let config = RaftConfig::default();
    let leader = Node::start(1, &config, loopback_listener().await).await;
    leader.initialize_alone().await;
    let value = "x".repeat(ENTRY_BYTES);
    for i in 0..ENTRIES {
        leader
            .group
            .write(format!("k{i}={value}").into_bytes())
            .await
            .expect("write");
    }
    let last = leader
        .group
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .expect("leader has a log");

    let follower_listener = loopback_listener().await;
    let upstream = follower_listener.local_addr().expect("local addr");
    let proxy = slow_proxy(upstream, Duration::from_millis(20), 5_000_000).await;
    let follower = Node::start(2, &config, follower_listener).await;
    leader
        .group
        .raft()
        .add_learner(2, node_info(proxy), false)
        .await
        .expect("add learner");
    // 25 MiB at 5 MB/s is 5 s of transfer; a minute is generous.
    let started = std::time::Instant::now();
    follower
        .group
        .raft()
        .wait(Some(Duration::from_secs(60)))
        .applied_index_at_least(Some(last), "the learner caught up")
        .await
        .expect("the learner catches up within 60 s");
    eprintln!("learner caught up in {:?}", started.elapsed());
}

/// A Raft message larger than the transport's bound is refused before it is buffered whole,
/// with a status that says why, and the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_raft_message_is_refused_and_the_node_keeps_working() {
    let node = Node::start(1, &RaftConfig::default(), loopback_listener().await).await;
    node.initialize_alone().await;
    let mut client = RaftServiceClient::connect(format!("http://{}", node.server.addr))
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX);
    let oversized = RaftRequest {
        region: "test".into(),
        payload: vec![0u8; 65 << 20],
        ..Default::default()
    };
    let status = client
        .append_entries(oversized)
        .await
        .expect_err("an oversized message is refused");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large") && status.message().contains("limit"),
        "the status says why: {status:?}"
    );

    // Same connection, a normal message: served.
    let vote = RaftRequest {
        region: "test".into(),
        payload: rmp_serde::to_vec_named(&vote_request()).expect("encode vote"),
        ..Default::default()
    };
    let reply = client.vote(vote).await.expect("a normal message is served");
    assert!(!reply.into_inner().payload.is_empty());
    // And the group still commits.
    node.group
        .write(b"a=1".to_vec())
        .await
        .expect("write after the refused message");
}

fn vote_from_cluster(cluster_id: &str) -> RaftRequest {
    RaftRequest {
        region: "test".into(),
        payload: rmp_serde::to_vec_named(&vote_request()).expect("encode vote"),
        cluster_id: cluster_id.into(),
    }
}

async fn raw_client(node: &Node) -> RaftServiceClient<tonic::transport::Channel> {
    RaftServiceClient::connect(format!("http://{}", node.server.addr))
        .await
        .expect("connect")
}

/// Two clusters may share a region name (and reuse addresses); a Raft RPC from the other one
/// must not touch this one's log. Requests without an id (older nodes) and nodes that do not
/// know their id yet (joining) are let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_message_from_another_cluster_is_refused() {
    let cluster_a = ClusterId::default();
    cluster_a.set("cluster-a".into());
    let node = Node::start_in_cluster(
        1,
        &RaftConfig::default(),
        loopback_listener().await,
        cluster_a,
    )
    .await;
    let mut client = raw_client(&node).await;
    let status = client
        .vote(vote_from_cluster("cluster-b"))
        .await
        .expect_err("a message from another cluster is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("cluster-a") && status.message().contains("cluster-b"),
        "the status names both clusters: {status:?}"
    );
    client
        .vote(vote_from_cluster("cluster-a"))
        .await
        .expect("a message from the same cluster is served");
    client
        .vote(vote_from_cluster(""))
        .await
        .expect("a message without a cluster id is served");

    // The client side sends its id.
    let cluster_b = ClusterId::default();
    cluster_b.set("cluster-b".into());
    let mut factory = NetworkFactory::new("test", cluster_b, PeerTransport::plaintext());
    let mut other = factory.new_client(1, &node.info()).await;
    let error = other
        .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
        .await
        .expect_err("refused through the network client too");
    assert!(error.to_string().contains("cluster-a"), "{error}");
    let mut factory = NetworkFactory::new("test", ClusterId::default(), PeerTransport::plaintext());
    let mut anonymous = factory.new_client(1, &node.info()).await;
    anonymous
        .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
        .await
        .expect("a client that does not know its cluster is served");

    // A node that does not know its cluster yet (joining) accepts any; once it learns it, it
    // checks.
    let joining_id = ClusterId::default();
    let joining = Node::start_in_cluster(
        2,
        &RaftConfig::default(),
        loopback_listener().await,
        joining_id.clone(),
    )
    .await;
    let mut client = raw_client(&joining).await;
    client
        .vote(vote_from_cluster("cluster-b"))
        .await
        .expect("a node without a cluster id serves any");
    joining_id.set("cluster-a".into());
    let status = client
        .vote(vote_from_cluster("cluster-b"))
        .await
        .expect_err("refused once the node knows its cluster");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
}
