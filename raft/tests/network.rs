//! The tonic transport between the nodes of a region, over real servers on loopback.

mod common;

use std::time::Duration;

use arca_raft::network::NetworkFactory;
use arca_raft::RaftConfig;
use common::{loopback_listener, Node};
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
    let mut factory = NetworkFactory::new("test");
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
