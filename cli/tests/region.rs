//! Regions of 3 and 5 real `arca` processes: leader loss under load, follower catch-up (by
//! snapshot), loss of a minority and of a majority, an isolated node, and a node joining a
//! loaded region.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_chaos::content::{seeded as content, sha256_hex};
use arca_chaos::{time_wait_to, Region, RegionOptions};
use parking_lot::Mutex;

/// The `arca` binary under test: this build's, or `ARCA_TEST_BINARY` (to run these tests
/// against another build, an older release say).
fn arca_binary() -> String {
    std::env::var("ARCA_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_arca").to_string())
}

fn options(root: &std::path::Path, nodes: u64) -> RegionOptions {
    let mut options = RegionOptions::new(arca_binary(), root, nodes);
    options.env = vec![
        ("ARCA_CHUNKING__MIN_SIZE".into(), "8192".into()),
        ("ARCA_CHUNKING__AVG_SIZE".into(), "32768".into()),
        ("ARCA_CHUNKING__MAX_SIZE".into(), "131072".into()),
        ("ARCA_RAFT__WRITE_TIMEOUT_MS".into(), "4000".into()),
        ("ARCA_CLUSTER__READ_BARRIER_TIMEOUT_MS".into(), "500".into()),
    ];
    options
}

async fn must_create_repo(region: &Region, node: u64, name: &str) {
    let response = region
        .http()
        .post(region.url(node, "/api/v1/repos"))
        .json(&serde_json::json!({"name": name}))
        .send()
        .await
        .expect("create repo");
    assert_eq!(response.status(), 201, "create repo on node {node}");
}

/// PUT to one node; returns the status (0 when the node could not be reached).
async fn put(region: &Region, node: u64, path: &str, body: Vec<u8>) -> u16 {
    match region
        .http()
        .put(region.url(node, &format!("/files/{path}")))
        .body(body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// GETs `path` from `node` and checks the bytes.
async fn must_read(region: &Region, node: u64, path: &str, sha256: &str) {
    let response = region
        .http()
        .get(region.url(node, &format!("/files/{path}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} from node {node}: {e}"));
    assert_eq!(response.status(), 200, "GET {path} from node {node}");
    let body = response.bytes().await.expect("body");
    assert_eq!(
        sha256_hex(&body),
        sha256,
        "{path} from node {node} is byte-identical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_during_concurrent_pushes_loses_no_acknowledged_write() {
    let root = tempfile::tempdir().expect("tempdir");
    let region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    let leader = region.must_wait_leader(Duration::from_secs(20)).await;
    let region = Arc::new(tokio::sync::RwLock::new(region));
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Default::default();

    // Four writers, 15 pushes each, to rotating nodes; a failed push is retried on the next node.
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let region = region.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..15u64 {
                let seed = writer * 1000 + i;
                let data = content(seed, 40_000 + (seed as usize % 7) * 9_000);
                let path = format!("ci/w{writer}/file-{i}.bin");
                let node = std::sync::atomic::AtomicU64::new((writer + i) % 3);
                arca_chaos::wait_until(
                    &format!("{path} to be acknowledged by some node"),
                    Duration::from_secs(30),
                    Duration::from_millis(50),
                    || async {
                        let id = node.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3 + 1;
                        let region = region.read().await;
                        let status = put(&region, id, &path, data.clone()).await;
                        matches!(status, 200 | 201).then_some(())
                    },
                )
                .await
                .expect("push");
                acknowledged.lock().insert(path.clone(), sha256_hex(&data));
            }
        }));
    }
    // Kill the leader once some writes are acknowledged.
    chaos_wait(|| acknowledged.lock().len() >= 12, Duration::from_secs(60)).await;
    region.write().await.must_kill(leader);
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut region = Arc::try_unwrap(region)
        .ok()
        .expect("no other owner")
        .into_inner();
    let new_leader = region.must_wait_leader(Duration::from_secs(20)).await;
    assert_ne!(new_leader, leader, "a new leader was elected");
    region.must_restart(leader);
    region
        .must_wait_ready(leader, Duration::from_secs(60))
        .await;
    let acknowledged = acknowledged.lock().clone();
    assert_eq!(acknowledged.len(), 60);
    for node in 1..=3 {
        for (path, sha) in &acknowledged {
            must_read(&region, node, path, sha).await;
        }
    }
}

async fn chaos_wait(condition: impl Fn() -> bool, timeout: Duration) {
    arca_chaos::wait_until("condition", timeout, Duration::from_millis(20), || {
        let met = condition();
        async move { met.then_some(()) }
    })
    .await
    .expect("condition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_after_writes_catches_up_by_snapshot_and_backfill() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut options = options(root.path(), 3);
    // Snapshot often and keep little log, so the returning follower needs a snapshot.
    options
        .env
        .push(("ARCA_RAFT__SNAPSHOT_EVERY_ENTRIES".into(), "10".into()));
    options
        .env
        .push(("ARCA_RAFT__KEEP_LOGS_AFTER_SNAPSHOT".into(), "2".into()));
    let mut region = Region::must_start(options).await;
    must_create_repo(&region, 1, "ci").await;
    let leader = region.must_wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    region.must_kill(follower);

    let mut written = BTreeMap::new();
    for i in 0..30u64 {
        let data = content(i, 30_000 + i as usize * 1000);
        let path = format!("ci/after/{i}.bin");
        assert_eq!(put(&region, leader, &path, data.clone()).await, 201);
        written.insert(path, sha256_hex(&data));
    }
    region.must_restart(follower);
    let ready = region
        .must_wait_ready(follower, Duration::from_secs(60))
        .await;
    assert_eq!(ready["resync_backlog"], 0);
    for (path, sha) in &written {
        must_read(&region, follower, path, sha).await;
    }
    // Every chunk arrived by backfill, none had to be fetched while serving those reads.
    let fetched_for_reads = region
        .metric(
            follower,
            "arca_region_chunks_fetched_total",
            "reason=\"read\"",
        )
        .await
        .expect("metrics");
    assert_eq!(fetched_for_reads, 0.0);
    let installed = region
        .metric(follower, "arca_raft_snapshots_installed_total", "")
        .await
        .expect("metrics");
    assert!(installed >= 1.0, "the follower caught up from a snapshot");
    let backfilled = region
        .metric(
            follower,
            "arca_region_chunks_fetched_total",
            "reason=\"resync\"",
        )
        .await
        .expect("metrics");
    assert!(
        backfilled > 0.0,
        "the follower's missing chunks came by resync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_failures_and_refuse_writes_without_a_majority() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 5)).await;
    must_create_repo(&region, 1, "ci").await;
    let before = content(1, 50_000);
    assert_eq!(put(&region, 2, "ci/before.bin", before.clone()).await, 201);

    let leader = region.must_wait_leader(Duration::from_secs(20)).await;
    let other = (1..=5).find(|id| *id != leader).expect("another node");
    region.must_kill(leader);
    region.must_kill(other);
    let live = region.live();
    let new_leader = region.must_wait_leader(Duration::from_secs(20)).await;
    let writer = *live
        .iter()
        .find(|id| **id != new_leader)
        .expect("a follower");
    assert_eq!(
        put(&region, writer, "ci/two-down.bin", content(2, 50_000)).await,
        201,
        "three of five is a majority"
    );

    region.must_kill(new_leader);
    let survivors = region.live();
    assert_eq!(survivors.len(), 2);
    let started = Instant::now();
    let response = region
        .http()
        .put(region.url(survivors[0], "/files/ci/no-quorum.bin"))
        .body(content(3, 10_000))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "NO_QUORUM", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the write failed instead of hanging"
    );

    for node in &survivors {
        // Without a majority no read can be confirmed current: refused unless the client
        // accepts a possibly stale answer.
        let refused = region
            .http()
            .get(region.url(*node, "/files/ci/before.bin"))
            .send()
            .await
            .expect("get");
        assert_eq!(
            refused.status(),
            503,
            "an unconfirmed read is refused on node {node}"
        );
        let response = region
            .http()
            .get(region.url(*node, "/files/ci/before.bin"))
            .header("x-arca-read-consistency", "stale-ok")
            .send()
            .await
            .expect("get");
        assert_eq!(
            response.status(),
            200,
            "reads of existing artifacts that accept stale data still work on node {node}"
        );
        assert_eq!(response.headers()["x-arca-read-consistency"], "local");
        assert_eq!(
            sha256_hex(&response.bytes().await.expect("body")),
            sha256_hex(&before)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_accepts_no_writes() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    let leader = region.must_wait_leader(Duration::from_secs(20)).await;
    // Isolate the leader: its two peers stop answering.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &others {
        region.must_pause(*id);
    }
    let status = put(&region, leader, "ci/isolated.bin", content(4, 20_000)).await;
    assert_eq!(status, 503, "an isolated node must not acknowledge a write");
    for id in &others {
        region.must_resume(*id);
    }
    region.must_wait_leader(Duration::from_secs(20)).await;
    let writer = others[0];
    arca_chaos::wait_until(
        "writes to resume after the partition heals",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let status = put(&region, writer, "ci/healed.bin", content(5, 20_000)).await;
            (status == 201).then_some(())
        },
    )
    .await
    .expect("write after healing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_a_loaded_region_and_ends_with_every_chunk() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    let mut written = BTreeMap::new();
    for i in 0..25u64 {
        let data = content(100 + i, 60_000 + i as usize * 500);
        let path = format!("ci/loaded/{i}.bin");
        assert_eq!(put(&region, i % 3 + 1, &path, data.clone()).await, 201);
        written.insert(path, sha256_hex(&data));
    }
    region.must_add_process(4);
    let ready = region.must_wait_ready(4, Duration::from_secs(60)).await;
    assert_eq!(ready["resync_backlog"], 0);

    let status = arca_cli(&region)
        .args(["cluster", "status", "--output", "json", "--admin"])
        .arg(region.node(1).grpc_addr.to_string())
        .output()
        .expect("arca cluster status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    assert!(
        nodes
            .iter()
            .all(|n| n["membership"] == "voter" && n["reachable"] == true),
        "{status}"
    );
    let table = arca_cli(&region)
        .args(["cluster", "status", "--admin"])
        .arg(region.node(2).grpc_addr.to_string())
        .output()
        .expect("arca cluster status");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("leader") && table.contains("follower"),
        "{table}"
    );

    for (path, sha) in &written {
        must_read(&region, 4, path, sha).await;
    }
    let fetched_for_reads = region
        .metric(4, "arca_region_chunks_fetched_total", "reason=\"read\"")
        .await
        .expect("metrics");
    assert_eq!(
        fetched_for_reads, 0.0,
        "node 4 held every chunk before serving"
    );

    // Membership changes need a cluster-admin: without a credential the CLI is refused and
    // the node stays.
    let refused = std::process::Command::new(arca_binary())
        .env_remove("ARCA_TOKEN")
        .env("ARCA_CONFIG_DIR", region.data_dir(1).join("no-login"))
        .args(["cluster", "remove-node", "--id", "4", "--admin"])
        .arg(region.node(3).grpc_addr.to_string())
        .output()
        .expect("arca cluster remove-node");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("Unauthenticated"),
        "{stderr}"
    );
    let status = arca_cli(&region)
        .args(["cluster", "status", "--output", "json", "--admin"])
        .arg(region.node(1).grpc_addr.to_string())
        .output()
        .expect("arca cluster status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(4),
        "{status}"
    );

    // And out again: removing it leaves three voters, and the region keeps taking writes.
    let removed = arca_cli(&region)
        .args([
            "cluster",
            "remove-node",
            "--id",
            "4",
            "--output",
            "json",
            "--admin",
        ])
        .arg(region.node(3).grpc_addr.to_string())
        .output()
        .expect("arca cluster remove-node");
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let removed: serde_json::Value = serde_json::from_slice(&removed.stdout).expect("json");
    assert_eq!(removed["voters"], serde_json::json!([1, 2, 3]));
    region.must_kill(4);
    assert_eq!(
        put(&region, 2, "ci/after-removal.bin", content(999, 10_000)).await,
        201
    );
}

/// The CLI as a cluster-admin of `region` (the admin RPCs refuse anyone else).
fn arca_cli(region: &Region) -> std::process::Command {
    let mut command = std::process::Command::new(arca_binary());
    if let Some(token) = &region.token {
        command.env("ARCA_TOKEN", token);
    }
    command
}

/// Removes `--join ADDR` from a node's command line.
fn without_join(args: &mut Vec<String>) {
    if let Some(at) = args.iter().position(|a| a == "--join") {
        args.drain(at..(at + 2).min(args.len()));
    }
}

async fn status_code(region: &Region, node: u64, path: &str) -> u16 {
    match region.http().get(region.url(node, path)).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Asserts `node` answers `/readyz` with 503 for `hold`.
async fn must_stay_unready(region: &Region, node: u64, hold: Duration, what: &str) {
    let until = Instant::now() + hold;
    while Instant::now() < until {
        let status = status_code(region, node, "/readyz").await;
        assert_ne!(status, 200, "{what}: node {node} became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_an_empty_disk_neither_forms_a_new_region_nor_rejoins_with_amnesia() {
    // Audit D10: without --join an empty data directory became a new one-node region under
    // the same name; with --join, a voter's id was accepted again with an empty log and vote.
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    let before = content(40, 60_000);
    assert_eq!(put(&region, 1, "ci/before.bin", before.clone()).await, 201);

    // Node 3's disk is replaced; it is restarted without --join.
    region.must_kill(3);
    std::fs::remove_dir_all(region.data_dir(3)).expect("wipe node 3");
    without_join(&mut region.node_mut(3).options_mut().extra_args);
    region.must_restart(3);
    must_stay_unready(
        &region,
        3,
        Duration::from_secs(4),
        "started blank without --join",
    )
    .await;
    let listed = status_code(&region, 3, "/api/v1/repos").await;
    assert_ne!(listed, 200, "a blank node serves no region of its own");

    // With --join and the same id: refused (the id is a voter's), it must not vote.
    region.must_kill(3);
    std::fs::remove_dir_all(region.data_dir(3)).expect("wipe node 3");
    let seed = region.node(1).grpc_addr.to_string();
    region
        .node_mut(3)
        .options_mut()
        .extra_args
        .extend(["--join".to_string(), seed]);
    region.must_restart(3);
    must_stay_unready(
        &region,
        3,
        Duration::from_secs(4),
        "rejoined under a voter's id",
    )
    .await;
    // The region goes on with nodes 1 and 2.
    let during = put(&region, 2, "ci/during.bin", content(41, 30_000)).await;
    assert_eq!(during, 201, "node 1 log:\n{}", region.node(1).log());

    // Removing the old voter lets the new disk join as a fresh member, and it catches up.
    let admin = region.node(1).grpc_addr.to_string();
    let removed = arca_cli(&region)
        .args(["cluster", "remove-node", "--id", "3", "--admin", &admin])
        .output()
        .expect("run arca");
    assert!(removed.status.success(), "{removed:?}");
    region.must_wait_ready(3, Duration::from_secs(60)).await;
    must_read(&region, 3, "ci/before.bin", &sha256_hex(&before)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_reads_refuse_unless_stale_data_is_accepted() {
    // Audit A9: a barrier that could not complete quietly served local, possibly stale state;
    // only a header said so, and registry clients and curl ignore it.
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    let body = content(50, 30_000);
    assert_eq!(put(&region, 1, "ci/a.bin", body.clone()).await, 201);
    let survivor = 1;
    region.must_kill(2);
    region.must_kill(3);
    let url = region.url(survivor, "/files/ci/a.bin");
    let refused = region.http().get(&url).send().await.expect("get");
    assert_eq!(
        refused.status(),
        503,
        "a read that cannot be confirmed is refused"
    );
    let stale = region
        .http()
        .get(&url)
        .header("x-arca-read-consistency", "stale-ok")
        .send()
        .await
        .expect("get");
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-arca-read-consistency"], "local");
    assert_eq!(
        sha256_hex(&stale.bytes().await.expect("body")),
        sha256_hex(&body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immutable_content_is_read_without_a_leader_round_even_without_a_quorum() {
    // Audit P8: every GET and HEAD was a leader round trip, including files that can never
    // change and OCI content by digest: read throughput was capped by what the leader could
    // confirm, and without a quorum those reads were "local" like any other. A local hit on
    // immutable content is proof: it is served at once, labelled `immutable`, counted in no
    // barrier, while a mutable read on the same node is refused.
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 3)).await;
    let response = region
        .http()
        .post(region.url(1, "/api/v1/repos"))
        .json(&serde_json::json!({"name": "releases", "immutable": true}))
        .send()
        .await
        .expect("create repo");
    assert_eq!(response.status(), 201);
    must_create_repo(&region, 1, "ci").await;
    let release = content(70, 30_000);
    assert_eq!(
        put(&region, 1, "releases/v1.bin", release.clone()).await,
        201
    );
    assert_eq!(
        put(&region, 1, "ci/latest.bin", content(71, 1_000)).await,
        201
    );
    // Every node holds the release before two of them go.
    for node in 1..=3 {
        let response = region
            .http()
            .get(region.url(node, "/files/releases/v1.bin"))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200);
    }
    let survivor = 1;
    region.must_kill(2);
    region.must_kill(3);
    let before = region
        .metric(survivor, "arca_region_read_barriers_total", "")
        .await
        .expect("metrics");
    let response = region
        .http()
        .get(region.url(survivor, "/files/releases/v1.bin"))
        .send()
        .await
        .expect("get");
    let status = response.status();
    let consistency = response
        .headers()
        .get("x-arca-read-consistency")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.bytes().await.expect("body");
    assert_eq!(status, 200);
    assert_eq!(
        consistency, "immutable",
        "served after a barrier, not as immutable"
    );
    assert_eq!(sha256_hex(&body), sha256_hex(&release));
    let after = region
        .metric(survivor, "arca_region_read_barriers_total", "")
        .await
        .expect("metrics");
    assert_eq!(after, before, "an immutable read ran a barrier");
    let mutable = region
        .http()
        .get(region.url(survivor, "/files/ci/latest.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        mutable.status(),
        503,
        "a mutable read without a quorum is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_barriers_reuse_connections_and_are_shared() {
    // Audit A2: every read barrier made openraft ask for a new client per voter, and each was
    // a new TCP and HTTP/2 connection: hundreds of sockets in TIME_WAIT per second of reads.
    let root = tempfile::tempdir().expect("tempdir");
    let region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    assert_eq!(put(&region, 1, "ci/a.bin", content(60, 10_000)).await, 201);
    let leader = region.must_wait_leader(Duration::from_secs(20)).await;
    let ports: Vec<u16> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| region.node(id).grpc_addr.port())
        .collect();
    let before = time_wait_to(&ports);
    let url = region.url(leader, "/files/ci/a.bin");
    let mut reads = Vec::new();
    for _ in 0..300 {
        let http = region.http().clone();
        let url = url.clone();
        reads.push(tokio::spawn(async move {
            http.get(&url).send().await.map(|r| r.status().as_u16())
        }));
    }
    for read in reads {
        assert_eq!(read.await.expect("join").expect("get"), 200);
    }
    let after = time_wait_to(&ports);
    assert!(
        after.saturating_sub(before) < 10,
        "300 reads left {} connections to the followers in TIME_WAIT",
        after.saturating_sub(before)
    );
}

/// Deletes every chunk of `path` from a stopped node's database.
fn delete_chunks_of(data_dir: &std::path::Path, repo: &str, path: &str) -> usize {
    let db = arca_node::db::open_db(&data_dir.join("db")).expect("open the node's db");
    let catalog = arca_node::metadata::catalog::Catalog::new(db.clone());
    let repo = arca_node::names::RepoName::parse(repo).expect("repo");
    let path = arca_node::names::ArtifactPath::parse(path).expect("path");
    let artifact = catalog
        .artifact(&repo, &path)
        .expect("read")
        .expect("the artifact");
    let blob = catalog
        .blob(&artifact.blob)
        .expect("read")
        .expect("the blob");
    let store = arca_node::storage::chunk_store::ChunkStore::new(db.clone()).expect("store");
    let mut deleted = 0;
    for chunk in &blob.descriptor.chunks {
        if store
            .delete_unless(&chunk.id, |_| Ok(false))
            .expect("delete")
        {
            deleted += 1;
        }
    }
    db.flush_wal(true).expect("sync");
    deleted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_needs_a_chunk_from_stopped_peers_ends_within_its_deadline() {
    // Audit A5: peer RPCs had no deadline and channels no keepalive; a read of a chunk this
    // node lacks, from a peer that is SIGSTOPped, hung for as long as the client waited.
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 3)).await;
    must_create_repo(&region, 1, "ci").await;
    assert_eq!(put(&region, 1, "ci/a.bin", content(70, 100_000)).await, 201);
    for id in 1..=3 {
        region.must_wait_ready(id, Duration::from_secs(30)).await;
    }
    region.must_stop(1, Duration::from_secs(10));
    assert!(delete_chunks_of(region.data_dir(1), "ci", "a.bin") > 0);
    region.must_pause(2);
    region.must_pause(3);
    region.must_restart(1);
    let started = Instant::now();
    let answer = region
        .http()
        .get(region.url(1, "/files/ci/a.bin"))
        .header("x-arca-read-consistency", "stale-ok")
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    let answered = match answer {
        Ok(response) => {
            let _ = response.bytes().await;
            true
        }
        Err(e) => !e.is_timeout(),
    };
    assert!(answered, "no answer within 60 s");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the read took {:?}",
        started.elapsed()
    );
    region.must_resume(2);
    region.must_resume(3);
}

/// Audit D11: a node that is its region's only voter sweeps unreferenced chunks at start-up
/// with no grace, and must do so only after it applied every entry in its log. Here a power cut
/// is emulated on a stopped node: its Raft log (synced) and chunks (synced before each write was
/// proposed) are kept, while its state machine and the unsynced committed-index hint are put
/// back to what they were before 600 uploads. At the restart the uploads are applied again,
/// after the new term's first entry commits; before the fix the sweep ran as soon as a leader
/// was known and deleted the chunks of every upload not re-applied yet, which a single node can
/// never get back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sole_voter_sweeps_at_start_up_only_after_reapplying_its_log() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = Region::must_start(options(root.path(), 1)).await;
    must_create_repo(&region, 1, "ci").await;
    region.must_stop(1, Duration::from_secs(20));
    let db = region.data_dir(1).join("db");
    let before = arca_chaos::faults::save_unsynced_state(&db).expect("save the state");
    region.must_restart(1);
    region.must_wait_ready(1, Duration::from_secs(60)).await;

    let mut files = Vec::new();
    for i in 0..600u64 {
        let data = content(i, 2_000 + (i as usize % 7) * 300);
        let path = format!("ci/small-{i}.bin");
        assert_eq!(put(&region, 1, &path, data.clone()).await, 201);
        files.push((path, sha256_hex(&data)));
    }
    // The last write, and so the last to be applied again, is a file of many chunks.
    let large = content(9_999, 2 << 20);
    assert_eq!(put(&region, 1, "ci/large.bin", large.clone()).await, 201);
    files.push(("ci/large.bin".to_string(), sha256_hex(&large)));
    region.must_stop(1, Duration::from_secs(20));
    arca_chaos::faults::restore_unsynced_state(&db, &before).expect("power cut");

    region.must_restart(1);
    // A node that lost referenced chunks never becomes ready (it cannot fetch them from
    // anyone): look at what it serves either way.
    let ready = arca_chaos::wait_until(
        "node 1 to be ready after the power cut",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || region.readyz(1),
    )
    .await
    .is_ok();
    let mut broken = Vec::new();
    for (path, sha) in &files {
        let response = region
            .http()
            .get(region.url(1, &format!("/files/{path}")))
            .send()
            .await
            .expect("get");
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status != 200 || sha256_hex(&body) != *sha {
            broken.push(format!("{path}: {status}"));
        }
    }
    let deleted = region
        .metric(1, "arca_storage_chunks_deleted_total", "")
        .await
        .expect("metrics");
    assert!(
        ready && broken.is_empty() && deleted == 0.0,
        "{} of {} acknowledged files lost after a power cut ({deleted} chunks swept, ready: \
         {ready}): {:?}; log:\n{}",
        broken.len(),
        files.len(),
        &broken[..broken.len().min(5)],
        region.node(1).log()
    );
}

/// A region whose gRPC port requires mutual TLS: the nodes join, replicate and forward writes
/// over it with their node certificates, and the CLI administers it over https as a
/// cluster-admin (a token, or an operator certificate) and as nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_with_mutual_tls_on_grpc_replicates_and_is_administered_over_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let certs = root.path().join("certs");
    let year = Duration::from_secs(365 * 24 * 3600);
    arca_replication::tls::init_ca(&certs, year).expect("ca");
    let node_cert = |name: &str| {
        arca_replication::tls::issue(
            &certs,
            name,
            arca_replication::tls::Role::Node { region: "test" },
            &["127.0.0.1".to_string()],
            &certs.join(name),
            year,
        )
        .expect("node certificate")
    };
    let (cert, key) = node_cert("test-nodes");
    let (operator_cert, operator_key) = arca_replication::tls::issue(
        &certs,
        "alice",
        arca_replication::tls::Role::Operator,
        &[],
        &certs.join("alice"),
        year,
    )
    .expect("operator certificate");
    let mut options = options(root.path(), 3);
    options.env.extend([
        (
            "ARCA_CLUSTER__CA_CERT".to_string(),
            certs.join("ca.pem").display().to_string(),
        ),
        ("ARCA_CLUSTER__CERT".to_string(), cert.display().to_string()),
        ("ARCA_CLUSTER__KEY".to_string(), key.display().to_string()),
    ]);
    let region = Region::must_start(options).await;
    must_create_repo(&region, 1, "ci").await;
    // Node 2 or 3 is a follower: its writes go to the leader over TLS, its chunks too.
    let data = content(7, 300_000);
    for node in 1..=3 {
        let path = format!("ci/tls-{node}.bin");
        assert_eq!(put(&region, node, &path, data.clone()).await, 201);
        for reader in 1..=3 {
            must_read(&region, reader, &path, &sha256_hex(&data)).await;
        }
    }

    let https = |node: u64| format!("https://{}", region.node(node).grpc_addr);
    let cli = |node: u64, args: &[&str], credential: &str| {
        let mut command = std::process::Command::new(arca_binary());
        command
            .env("ARCA_CA_CERT", certs.join("ca.pem"))
            .env("ARCA_CONFIG_DIR", root.path().join("cli-config"))
            .env_remove("ARCA_TOKEN")
            .args(args)
            .args(["--output", "json", "--admin", &https(node)]);
        match credential {
            "token" => {
                command.env("ARCA_TOKEN", region.token.as_deref().expect("signed in"));
            }
            "operator" => {
                command
                    .arg("--admin-cert")
                    .arg(&operator_cert)
                    .arg("--admin-key")
                    .arg(&operator_key);
            }
            _ => {}
        }
        command.output().expect("run arca")
    };
    let refused = cli(2, &["cluster", "status"], "none");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "{refused:?}"
    );
    for credential in ["token", "operator"] {
        let status = cli(2, &["cluster", "status"], credential);
        assert!(status.status.success(), "{credential}: {status:?}");
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
        assert_eq!(
            status["nodes"].as_array().map(Vec::len),
            Some(3),
            "{status}"
        );
    }
    // A plaintext client gets nothing from a TLS port.
    let plaintext = arca_cli(&region)
        .args(["cluster", "status", "--admin"])
        .arg(region.node(1).grpc_addr.to_string())
        .output()
        .expect("run arca");
    assert!(!plaintext.status.success(), "{plaintext:?}");

    // Removing a node through a follower: it forwards the operator's token to the leader,
    // which decides on it and records who asked.
    let leader = region.must_wait_leader(Duration::from_secs(30)).await;
    let via = (1..=3).find(|n| *n != leader).expect("a follower");
    let gone = (1..=3)
        .find(|n| *n != leader && *n != via)
        .expect("another");
    let removed = cli(
        via,
        &["cluster", "remove-node", "--id", &gone.to_string()],
        "token",
    );
    assert!(removed.status.success(), "{removed:?}");
    let records = arca_chaos::wait_until(
        "the membership change in the audit log",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let body: serde_json::Value = region
                .http()
                .get(region.url(leader, "/api/v1/audit?action=cluster.remove_node"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let records = body["records"].as_array()?.clone();
            (!records.is_empty()).then_some(records)
        },
    )
    .await
    .expect("audited");
    assert_eq!(records[0]["principal"], "user:admin", "{records:?}");
    assert_eq!(records[0]["outcome"], "ok", "{records:?}");
    assert_eq!(records[0]["resource"], format!("node {gone}"));
}
