//! The intra-region gRPC port: mutual TLS with node certificates of the cluster CA, Raft and
//! chunk RPCs only from nodes of the same region, admin RPCs only from cluster-admins (a token
//! or an operator certificate), and every refusal counted and audited.

mod support;

use std::path::Path;
use std::time::Duration;

use arca_node::metadata::codec::encode;
use arca_node::metadata::model::{Command, Repository};
use arca_node::names::RepoName;
use arca_proto::v1::cluster_service_client::ClusterServiceClient;
use arca_proto::v1::raft_service_client::RaftServiceClient;
use arca_proto::v1::{
    ClusterStatusRequest, DivergentRequest, NodeStatusRequest, ProposeRequest, RaftRequest,
    RemoveNodeRequest,
};
use arca_replication::tls::{self, Role};
use serde_json::Value;
use support::{wait_for, TestNode};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A certificate and key (PEM).
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn issue(ca_dir: &Path, name: &str, role: Role<'_>) -> Pem {
    let (cert, key) = tls::issue(
        ca_dir,
        name,
        role,
        &["127.0.0.1".to_string()],
        &ca_dir.join(name),
        YEAR,
    )
    .expect("issue");
    Pem {
        cert: std::fs::read(cert).expect("cert"),
        key: std::fs::read(key).expect("key"),
    }
}

/// A channel to `addr` over TLS trusting `ca`, presenting `identity` if given.
async fn tls_channel(addr: &str, ca: &[u8], identity: Option<&Pem>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(pem) = identity {
        tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    request
}

/// A proposal creating repository `name`, as a node forwarding a client's write sends it.
fn forged_create(name: &str) -> ProposeRequest {
    ProposeRequest {
        region: "local".into(),
        command: encode(&Command::CreateRepo {
            repo: Repository {
                name: RepoName::parse(name).expect("name"),
                format: arca_node::formats::generic::NAME,
                immutable: false,
                created_at_ms: 1,
                sync_replication: false,
                remote: None,
            },
        })
        .expect("encode"),
    }
}

fn raft_vote() -> RaftRequest {
    RaftRequest {
        region: "local".into(),
        payload: Vec::new(),
        cluster_id: String::new(),
    }
}

async fn audit(node: &TestNode, action: &str) -> Vec<Value> {
    node.json(&format!("/api/v1/audit?action={action}")).await["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_port_admits_only_this_regions_nodes_and_cluster_admins() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca_dir = certs.path().join("ca");
    tls::init_ca(&ca_dir, YEAR).expect("ca");
    let own = issue(&ca_dir, "node-1", Role::Node { region: "local" });
    let peer = issue(&ca_dir, "node-2", Role::Node { region: "local" });
    let other_region = issue(&ca_dir, "eu-1", Role::Node { region: "eu" });
    let operator = issue(&ca_dir, "alice", Role::Operator);
    let rogue_dir = certs.path().join("rogue");
    tls::init_ca(&rogue_dir, YEAR).expect("rogue ca");
    let rogue = issue(&rogue_dir, "node-2", Role::Node { region: "local" });
    let ca = std::fs::read(ca_dir.join("ca.pem")).expect("ca.pem");
    drop(own);

    let node = TestNode::start_with(|config| {
        config.cluster.ca_cert = Some(ca_dir.join("ca.pem"));
        config.cluster.cert = Some(ca_dir.join("node-1.pem"));
        config.cluster.key = Some(ca_dir.join("node-1.key"));
    })
    .await;
    let addr = node.node().grpc_addr.to_string();
    let admin_token = node.create_token(&["**:cluster-admin"]).await.1;
    let reader_token = node.create_token(&["**:read"]).await.1;

    // Plaintext does not get a gRPC answer at all, nor does a certificate of another CA.
    let mut plaintext = ClusterServiceClient::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_lazy(),
    );
    let refused = plaintext
        .node_status(NodeStatusRequest {})
        .await
        .expect_err("plaintext is refused");
    // The connection fails below gRPC: no method ever answered.
    assert!(
        matches!(
            refused.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{refused:?}"
    );
    let handshake = match tls_channel(&addr, &ca, Some(&rogue)).await {
        Err(e) => e,
        Ok(channel) => ClusterServiceClient::new(channel)
            .node_status(NodeStatusRequest {})
            .await
            .map(|_| "answered".to_string())
            .unwrap_or_else(|status| format!("{status:?}")),
    };
    assert_ne!(
        handshake, "answered",
        "a certificate of another CA is refused"
    );

    let anonymous = tls_channel(&addr, &ca, None).await.expect("TLS, no cert");
    let eu = tls_channel(&addr, &ca, Some(&other_region))
        .await
        .expect("TLS, eu node");
    let alice = tls_channel(&addr, &ca, Some(&operator))
        .await
        .expect("TLS, operator");
    let node_2 = tls_channel(&addr, &ca, Some(&peer))
        .await
        .expect("TLS, node of this region");

    // A forged Propose, from no certificate, another region's node or an operator, never
    // reaches Raft: the repository does not appear.
    for (who, channel, reason) in [
        ("no certificate", &anonymous, "present a node certificate"),
        ("an eu node", &eu, "region \"eu\""),
        ("an operator", &alice, "not operators"),
    ] {
        let refused = ClusterServiceClient::new(channel.clone())
            .propose(forged_create("forged"))
            .await
            .expect_err("a forged proposal is refused");
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}: {refused:?}");
        assert!(refused.message().contains(reason), "{who}: {refused:?}");
        let vote = RaftServiceClient::new(channel.clone())
            .vote(raft_vote())
            .await
            .expect_err("Raft is for the region's nodes");
        assert_eq!(vote.code(), Code::PermissionDenied, "{who}: {vote:?}");
    }
    // Not even with a cluster-admin's token: Raft and proposals are for nodes.
    let refused = ClusterServiceClient::new(anonymous.clone())
        .propose(with_token(forged_create("forged"), &admin_token))
        .await
        .expect_err("a token is no node certificate");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        node.get("/api/v1/repos/forged").await.status(),
        404,
        "no forged repository"
    );

    // A node of this region is a peer: its proposals are the region's writes.
    ClusterServiceClient::new(node_2.clone())
        .propose(forged_create("from-a-peer"))
        .await
        .expect("a node of the region proposes");
    assert_eq!(node.get("/api/v1/repos/from-a-peer").await.status(), 200);
    ClusterServiceClient::new(node_2.clone())
        .node_status(NodeStatusRequest {})
        .await
        .expect("status for a peer");

    // Admin RPCs: a cluster-admin's token or an operator certificate; a node certificate or a
    // reader's token is not enough.
    let divergent = |channel: &Channel, token: Option<&str>| {
        let mut client = ClusterServiceClient::new(channel.clone());
        let request = match token {
            Some(token) => with_token(DivergentRequest {}, token),
            None => tonic::Request::new(DivergentRequest {}),
        };
        async move { client.divergent(request).await.map(|_| ()) }
    };
    for (who, channel, token, code) in [
        ("no credential", &anonymous, None, Code::Unauthenticated),
        ("a node of the region", &node_2, None, Code::Unauthenticated),
        ("an eu node", &eu, None, Code::Unauthenticated),
        (
            "a bad token",
            &anonymous,
            Some("arca_notatoken"),
            Code::Unauthenticated,
        ),
        (
            "a reader",
            &anonymous,
            Some(&reader_token),
            Code::PermissionDenied,
        ),
    ] {
        let refused = divergent(channel, token).await.expect_err("refused");
        assert_eq!(refused.code(), code, "{who}: {refused:?}");
    }
    divergent(&anonymous, Some(&admin_token))
        .await
        .expect("a cluster-admin's token");
    divergent(&alice, None)
        .await
        .expect("an operator certificate");
    ClusterServiceClient::new(alice.clone())
        .cluster_status(ClusterStatusRequest {})
        .await
        .expect("status for an operator");

    // Membership changes are audited with who asked, refusals with who tried.
    let removed = ClusterServiceClient::new(anonymous.clone())
        .remove_node(with_token(RemoveNodeRequest { node_id: 99 }, &admin_token))
        .await;
    let records = wait_for(
        "the membership change in the audit log",
        Duration::from_secs(10),
        || async {
            let records = audit(&node, "cluster.remove_node").await;
            (!records.is_empty()).then_some(records)
        },
    )
    .await;
    assert_eq!(records[0]["principal"], "user:admin", "{records:?}");
    assert_eq!(records[0]["resource"], "node 99");
    let outcome = records[0]["outcome"].as_str().unwrap_or_default();
    assert_eq!(outcome == "ok", removed.is_ok(), "{outcome} vs {removed:?}");
    let denied = wait_for(
        "the refused proposals in the audit log",
        Duration::from_secs(10),
        || async {
            let records = audit(&node, "grpc Propose").await;
            let principals: Vec<String> = records
                .iter()
                .filter_map(|r| r["principal"].as_str().map(str::to_string))
                .collect();
            let all = ["anonymous", "node:eu-1@eu", "operator:alice"]
                .iter()
                .all(|p| principals.iter().any(|seen| seen == p));
            all.then_some(records)
        },
    )
    .await;
    assert!(denied.iter().all(|r| r["outcome"]
        .as_str()
        .is_some_and(|o| o.starts_with("denied:"))));
    assert!(node.metric("arca_auth_denied_total").await >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_plaintext_mode_admin_rpcs_still_need_a_cluster_admin() {
    let node = TestNode::start().await;
    let addr = format!("http://{}", node.node().grpc_addr);
    let mut client = ClusterServiceClient::connect(addr).await.expect("connect");
    let refused = client
        .divergent(DivergentRequest {})
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("arca login"), "{refused:?}");
    let admin_token = node.create_token(&["**:cluster-admin"]).await.1;
    client
        .divergent(with_token(DivergentRequest {}, &admin_token))
        .await
        .expect("a cluster-admin");
    // The session of `arca login` works too.
    let session = node
        .http
        .post(node.url("/api/v1/auth/login"))
        .send()
        .await
        .expect("login");
    let session: Value = session.json().await.expect("json");
    client
        .divergent(with_token(
            DivergentRequest {},
            session["token"].as_str().expect("session token"),
        ))
        .await
        .expect("a cluster-admin's session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_with_a_certificate_that_is_not_of_its_region() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca_dir = certs.path().join("ca");
    tls::init_ca(&ca_dir, YEAR).expect("ca");
    issue(&ca_dir, "eu-1", Role::Node { region: "eu" });
    issue(&ca_dir, "alice", Role::Operator);
    for (name, use_for) in [
        ("eu-1", "cluster"),
        ("alice", "cluster"),
        ("eu-1", "replication"),
    ] {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = arca_node::config::NodeConfig {
            data_dir: data.path().join("data"),
            http_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
            ..Default::default()
        };
        let (ca, cert, key) = (
            Some(ca_dir.join("ca.pem")),
            Some(ca_dir.join(format!("{name}.pem"))),
            Some(ca_dir.join(format!("{name}.key"))),
        );
        if use_for == "cluster" {
            (
                config.cluster.ca_cert,
                config.cluster.cert,
                config.cluster.key,
            ) = (ca, cert, key);
        } else {
            config.replication.listen_addr = Some("127.0.0.1:0".into());
            (
                config.replication.ca_cert,
                config.replication.cert,
                config.replication.key,
            ) = (ca, cert, key);
        }
        let refused = match arca_node::start(config).await {
            Ok(node) => {
                node.shutdown().await;
                panic!("{name} as the {use_for} certificate of region local was accepted");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(
            refused.contains("not a node of region \"local\""),
            "{name} for {use_for}: {refused}"
        );
    }
}
