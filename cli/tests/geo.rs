//! Replication between regions with real processes: a primary region and mirror regions over
//! QUIC with mutual TLS, links cut and shaped by the chaos proxies, failover and the return of
//! a former primary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arca_chaos::content::{seeded as content, sha256_hex};
use arca_chaos::{wait_until, LinkShape, Region, RegionOptions, RegionReplication, UdpProxy};

/// The `arca` binary under test: this build's, or `ARCA_TEST_BINARY` (to run these tests
/// against another build, an older release say).
fn arca_binary() -> String {
    std::env::var("ARCA_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_arca").to_string())
}

fn env() -> Vec<(String, String)> {
    vec![
        ("ARCA_RAFT__WRITE_TIMEOUT_MS".into(), "4000".into()),
        ("ARCA_REPLICATION__PROBE_INTERVAL_MS".into(), "300".into()),
        ("ARCA_REPLICATION__SYNC_TIMEOUT_MS".into(), "2500".into()),
        ("ARCA_CLUSTER__READ_BARRIER_TIMEOUT_MS".into(), "500".into()),
    ]
}

fn region_options(
    root: &Path,
    name: &str,
    nodes: u64,
    replication: RegionReplication,
) -> RegionOptions {
    let mut options = RegionOptions::new(arca_binary(), root.join(name), nodes);
    options.region = name.into();
    options.env = env();
    options.replication = Some(replication);
    options
}

async fn primary(root: &Path, nodes: u64) -> Region {
    primary_with_env(root, nodes, &[]).await
}

/// The primary region `us`, with `env` (`ARCA_*` variables) on top of the tests' defaults.
async fn primary_with_env(root: &Path, nodes: u64, env: &[(&str, &str)]) -> Region {
    let replication = RegionReplication {
        tls_dir: root.join("tls"),
        ..Default::default()
    };
    let mut options = region_options(root, "us", nodes, replication);
    options
        .env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Region::must_start(options).await
}

async fn mirror(
    root: &Path,
    name: &str,
    nodes: u64,
    primary: Vec<String>,
    read_through: bool,
) -> Region {
    let replication = RegionReplication {
        tls_dir: root.join("tls"),
        primary,
        peers: Vec::new(),
        read_through,
    };
    Region::must_start(region_options(root, name, nodes, replication)).await
}

async fn must_create_repo(region: &Region, node: u64, body: serde_json::Value) {
    let response = region
        .http()
        .post(region.url(node, "/api/v1/repos"))
        .json(&body)
        .send()
        .await
        .expect("create repo");
    assert_eq!(response.status(), 201, "create repo {body}");
}

async fn put(region: &Region, node: u64, path: &str, body: Vec<u8>) -> reqwest::Response {
    region
        .http()
        .put(region.url(node, &format!("/files/{path}")))
        .body(body)
        .send()
        .await
        .expect("put")
}

/// The status of a PUT, without following a redirect.
async fn put_status_no_redirect(region: &Region, node: u64, path: &str, body: Vec<u8>) -> u16 {
    let client =
        arca_chaos::credentials::authorized(reqwest::Client::builder(), region.token.as_deref())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
    match client
        .put(region.url(node, &format!("/files/{path}")))
        .body(body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits until `node` of `region` serves `path` with `sha`.
async fn must_see(region: &Region, node: u64, path: &str, sha: &str, timeout: Duration) {
    let url = region.url(node, &format!("/files/{path}"));
    let last = std::sync::Mutex::new(String::new());
    wait_until(
        &format!("{path} on {url}"),
        timeout,
        Duration::from_millis(100),
        || async {
            let response = region.http().get(&url).send().await.ok()?;
            let status = response.status();
            let body = response.bytes().await.ok()?;
            if status != 200 {
                if let Ok(mut last) = last.lock() {
                    *last = format!("{status} {}", String::from_utf8_lossy(&body));
                }
                return None;
            }
            (sha256_hex(&body) == sha).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| {
        let last = last.lock().map(|l| l.clone()).unwrap_or_default();
        panic!(
            "{e}; last answer: {last}; log:\n{}",
            region.node(node).log()
        )
    });
}

/// Runs the CLI as a cluster-admin of the region its `--admin` names (the admin RPCs refuse
/// anyone else).
fn arca(args: &[&str]) -> Output {
    let mut command = Command::new(arca_binary());
    let admin = args
        .iter()
        .position(|a| *a == "--admin")
        .and_then(|i| args.get(i + 1));
    if let Some(token) = admin.and_then(|a| arca_chaos::credentials::token_for(a)) {
        command.env("ARCA_TOKEN", token);
    }
    command.args(args).output().expect("run arca")
}

fn admin(region: &Region, node: u64) -> String {
    region.node(node).grpc_addr.to_string()
}

fn status_json(region: &Region, node: u64) -> serde_json::Value {
    let output = arca(&[
        "cluster",
        "status",
        "--output",
        "json",
        "--admin",
        &admin(region, node),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

fn region_row<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["regions"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_follows_the_primary_and_redirects_writes_to_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 3).await;
    let eu = mirror(root.path(), "eu", 1, us.replication_addrs(), false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let mut files = Vec::new();
    for i in 0..6u64 {
        let data = content(i, 200_000 + i as usize * 10_000);
        let path = format!("ci/build-{i}.tar");
        assert_eq!(put(&us, i % 3 + 1, &path, data.clone()).await.status(), 201);
        files.push((path, sha256_hex(&data)));
    }
    for (path, sha) in &files {
        must_see(&eu, 1, path, sha, Duration::from_secs(30)).await;
    }

    // A write to the mirror is refused with the primary's location (a client that follows
    // redirects, as reqwest does by default, lands on the primary; look at the redirect itself).
    let no_redirects =
        arca_chaos::credentials::authorized(reqwest::Client::builder(), us.token.as_deref())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
    let response = no_redirects
        .put(eu.url(1, "/files/ci/at-the-mirror.bin"))
        .body(content(99, 1000))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        us.nodes
            .values()
            .any(|n| location.starts_with(&n.base_url())),
        "{location}"
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], "READ_ONLY_MIRROR");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("us"),
        "{body}"
    );

    // A client still sending a large body reads the redirect, not a reset connection: the
    // mirror drains what it refuses (up to 16 MiB). Streamed, as the CLI sends files.
    for attempt in 0..3u64 {
        let frames: Vec<Result<Vec<u8>, std::io::Error>> = (0..8)
            .map(|i| Ok(content(200 + attempt * 8 + i, 1 << 20)))
            .collect();
        let response = no_redirects
            .put(eu.url(1, "/files/ci/large-at-the-mirror.bin"))
            .header("content-length", 8u64 << 20)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(frames)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e:#}"));
        assert_eq!(response.status(), 307, "attempt {attempt}");
    }

    // The CLI follows the redirect.
    let file = root.path().join("upload.bin");
    let data = content(100, 300_000);
    std::fs::write(&file, &data).expect("write");
    let output = Command::new(arca_binary())
        .args([
            "push",
            file.to_str().expect("path"),
            "ci/through-the-mirror.bin",
        ])
        .env("ARCA_SERVER", eu.node(1).base_url())
        .env("ARCA_TOKEN", us.token.clone().expect("signed in"))
        .output()
        .expect("arca push");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    must_see(
        &us,
        2,
        "ci/through-the-mirror.bin",
        &sha256_hex(&data),
        Duration::from_secs(10),
    )
    .await;
    must_see(
        &eu,
        1,
        "ci/through-the-mirror.bin",
        &sha256_hex(&data),
        Duration::from_secs(30),
    )
    .await;

    // Status shows both regions and no lag once idle.
    wait_until(
        "the mirror to report no lag",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let status = status_json(&eu, 1);
            let row = region_row(&status, "eu")?;
            (row["lag_entries"] == 0
                && row["connected"] == true
                && region_row(&status, "us")?["role"] == "primary")
                .then_some(())
        },
    )
    .await
    .expect("mirror caught up");
    assert_eq!(
        eu.metric(1, "arca_replication_connected", "")
            .await
            .expect("metric"),
        1.0
    );
    assert_eq!(
        eu.metric(1, "arca_replication_lag_entries", "")
            .await
            .expect("metric"),
        0.0
    );
    let status = status_json(&us, 3);
    assert_eq!(
        region_row(&status, "eu").expect("mirror row")["role"],
        "mirror"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_the_link_raises_lag_and_the_mirror_converges_and_verifies() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    let eu = mirror(root.path(), "eu", 1, vec![proxy.addr.to_string()], false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let first = content(1, 100_000);
    assert_eq!(
        put(&us, 1, "ci/before.bin", first.clone()).await.status(),
        201
    );
    must_see(
        &eu,
        1,
        "ci/before.bin",
        &sha256_hex(&first),
        Duration::from_secs(30),
    )
    .await;

    proxy.cut();
    let mut during = Vec::new();
    for i in 0..5u64 {
        let data = content(10 + i, 80_000);
        let path = format!("ci/during-{i}.bin");
        assert_eq!(put(&us, 1, &path, data.clone()).await.status(), 201);
        during.push((path, sha256_hex(&data)));
    }
    // The mirror cannot know what it misses, but it knows how long it has not heard: lag in
    // seconds rises; the primary sees the mirror's entries fall behind.
    wait_until(
        "lag to rise on the mirror",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let lag = eu
                .metric(1, "arca_replication_lag_seconds", "")
                .await
                .ok()?;
            (lag > 3.0).then_some(())
        },
    )
    .await
    .expect("lag seconds rise while the link is cut");
    let status = status_json(&us, 1);
    let row = region_row(&status, "eu").expect("mirror row on the primary");
    assert!(
        row["lag_entries"].as_u64().unwrap_or_default() >= 5,
        "{status}"
    );

    proxy.heal();
    for (path, sha) in &during {
        must_see(&eu, 1, path, sha, Duration::from_secs(60)).await;
    }
    wait_until(
        "lag back to zero",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let entries = eu
                .metric(1, "arca_replication_lag_entries", "")
                .await
                .ok()?;
            let seconds = eu
                .metric(1, "arca_replication_lag_seconds", "")
                .await
                .ok()?;
            (entries == 0.0 && seconds == 0.0).then_some(())
        },
    )
    .await
    .expect("caught up");
    let verify = arca(&[
        "cluster",
        "verify",
        "--output",
        "json",
        "--admin",
        &admin(&eu, 1),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("json");
    assert!(verify.status.success(), "{report}");
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["regions"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_sharing_most_content_crosses_as_a_small_fraction() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let eu = mirror(root.path(), "eu", 1, us.replication_addrs(), false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let v1 = content(7, 64 << 20);
    assert_eq!(
        put(&us, 1, "ci/app-1.0.bin", v1.clone()).await.status(),
        201
    );
    must_see(
        &eu,
        1,
        "ci/app-1.0.bin",
        &sha256_hex(&v1),
        Duration::from_secs(120),
    )
    .await;
    let before = eu
        .metric(1, "arca_replication_bytes_total", "")
        .await
        .expect("metric");
    assert!(
        before >= (64 << 20) as f64,
        "the first version crossed whole ({before} bytes)"
    );
    let skipped_before = eu
        .metric(1, "arca_replication_chunks_skipped_total", "")
        .await
        .expect("metric");

    let mut v2 = v1.clone();
    v2[30 << 20..(30 << 20) + 65_536].copy_from_slice(&content(8, 65_536));
    assert_eq!(
        put(&us, 1, "ci/app-1.1.bin", v2.clone()).await.status(),
        201
    );
    must_see(
        &eu,
        1,
        "ci/app-1.1.bin",
        &sha256_hex(&v2),
        Duration::from_secs(120),
    )
    .await;
    let crossed = eu
        .metric(1, "arca_replication_bytes_total", "")
        .await
        .expect("metric")
        - before;
    assert!(
        crossed < (8 << 20) as f64,
        "a 64 KiB edit of a 64 MiB file sent {crossed} bytes"
    );
    let skipped = eu
        .metric(1, "arca_replication_chunks_skipped_total", "")
        .await
        .expect("metric")
        - skipped_before;
    assert!(skipped > 40.0, "most chunks were skipped ({skipped})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_replicated_push_is_not_acknowledged_while_the_mirror_is_cut_off() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    let eu = mirror(root.path(), "eu", 1, vec![proxy.addr.to_string()], false).await;
    must_create_repo(
        &us,
        1,
        serde_json::json!({"name": "critical", "replication": "sync"}),
    )
    .await;
    let first = content(1, 50_000);
    assert_eq!(
        put(&us, 1, "critical/a.bin", first.clone()).await.status(),
        201
    );
    must_see(
        &eu,
        1,
        "critical/a.bin",
        &sha256_hex(&first),
        Duration::from_secs(5),
    )
    .await;

    proxy.cut();
    let started = Instant::now();
    let second = content(2, 50_000);
    let response = put(&us, 1, "critical/b.bin", second.clone()).await;
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "SYNC_REPLICATION_TIMEOUT", "{body}");
    assert!(started.elapsed() < Duration::from_secs(15));

    proxy.heal();
    // Retrying the same upload is safe and succeeds once the mirror has it.
    wait_until(
        "the retried push to be acknowledged",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let status = put(&us, 1, "critical/b.bin", second.clone()).await.status();
            matches!(status.as_u16(), 200 | 201).then_some(())
        },
    )
    .await
    .expect("acknowledged after healing");
    must_see(
        &eu,
        1,
        "critical/b.bin",
        &sha256_hex(&second),
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promoting_the_mirror_and_the_old_primary_returning_as_a_mirror_with_its_divergent_writes()
{
    let root = tempfile::tempdir().expect("tempdir");
    let mut us = primary(root.path(), 1).await;
    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    let eu = mirror(root.path(), "eu", 1, vec![proxy.addr.to_string()], false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let kept = content(1, 120_000);
    assert_eq!(put(&us, 1, "ci/kept.bin", kept.clone()).await.status(), 201);
    must_see(
        &eu,
        1,
        "ci/kept.bin",
        &sha256_hex(&kept),
        Duration::from_secs(30),
    )
    .await;

    // The link drops; the primary accepts one more write, then the primary region is lost.
    proxy.cut();
    let lost = content(2, 60_000);
    assert_eq!(put(&us, 1, "ci/lost.bin", lost.clone()).await.status(), 201);
    us.must_kill(1);
    // The mirror cannot know what it missed; once the primary has been silent for a while, it
    // says so and wants --force.
    wait_until(
        "the primary to go silent",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let lag = eu
                .metric(1, "arca_replication_lag_seconds", "")
                .await
                .ok()?;
            (lag > 3.0).then_some(())
        },
    )
    .await
    .expect("silence");

    // Promotion reports the risk and wants --force.
    let refused = arca(&["cluster", "promote", "eu", "--admin", &admin(&eu, 1)]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.contains("--force"), "{text}");
    let promoted = arca(&[
        "cluster",
        "promote",
        "eu",
        "--force",
        "--output",
        "json",
        "--admin",
        &admin(&eu, 1),
    ]);
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stdout)
    );
    let promoted: serde_json::Value = serde_json::from_slice(&promoted.stdout).expect("json");
    assert_eq!(promoted["promoted"], true);
    assert_eq!(promoted["epoch"], 2);
    // The new primary's audit log says who promoted it.
    wait_until(
        "the promotion in the audit log",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let body: serde_json::Value = eu
                .http()
                .get(eu.url(1, "/api/v1/audit?action=region.promote"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let records = body["records"].as_array()?;
            records
                .iter()
                .any(|r| {
                    r["principal"] == "user:admin"
                        && r["outcome"] == "ok"
                        && r["resource"] == "region eu (forced)"
                })
                .then_some(())
        },
    )
    .await
    .expect("the promotion is audited");

    let after = content(3, 70_000);
    assert_eq!(
        put(&eu, 1, "ci/after-failover.bin", after.clone())
            .await
            .status(),
        201
    );

    // The old primary comes back knowing where the other region is: it learns the newer epoch,
    // stops taking writes, records what diverged, and follows the new primary.
    let eu_addr = eu
        .node(1)
        .replication_addr
        .expect("replication addr")
        .to_string();
    us.node_mut(1)
        .options_mut()
        .extra_args
        .extend(["--peer".to_string(), eu_addr]);
    us.must_restart(1);
    wait_until(
        "the old primary to redirect writes",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let status = put_status_no_redirect(&us, 1, "ci/late.bin", content(4, 1000)).await;
            (status == 307).then_some(())
        },
    )
    .await
    .expect("old primary demoted");
    must_see(
        &us,
        1,
        "ci/after-failover.bin",
        &sha256_hex(&after),
        Duration::from_secs(60),
    )
    .await;
    must_see(
        &us,
        1,
        "ci/kept.bin",
        &sha256_hex(&kept),
        Duration::from_secs(10),
    )
    .await;
    let gone = us
        .http()
        .get(us.url(1, "/files/ci/lost.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        gone.status(),
        404,
        "the divergent write is not part of the new history"
    );

    let divergent = arca(&[
        "cluster",
        "divergent",
        "--output",
        "json",
        "--admin",
        &admin(&us, 1),
    ]);
    assert!(divergent.status.success());
    let divergent: serde_json::Value = serde_json::from_slice(&divergent.stdout).expect("json");
    // Audit records the old primary chained after the fork are listed too (the new primary's
    // chain does not hold them); the one repository write is the lost file.
    let (audit, writes): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = divergent
        ["divergent"]
        .as_array()
        .expect("list")
        .iter()
        .partition(|w| {
            w["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("append ") && s.ends_with(" audit records"))
        });
    assert_eq!(writes.len(), 1, "{divergent}");
    assert!(
        writes[0]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("ci/lost.bin"),
        "{divergent}"
    );
    assert!(audit.iter().all(|w| w["content_bytes"] == 0), "{divergent}");

    let verify = arca(&[
        "cluster",
        "verify",
        "--output",
        "json",
        "--admin",
        &admin(&us, 1),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("json");
    assert_eq!(report["consistent"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_node_mirror_keeps_following_when_its_leader_dies() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let mut eu = mirror(root.path(), "eu", 3, us.replication_addrs(), false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let mut files = Vec::new();
    for i in 0..10u64 {
        let data = content(i, 40_000);
        let path = format!("ci/a-{i}.bin");
        assert_eq!(put(&us, 1, &path, data.clone()).await.status(), 201);
        files.push((path, sha256_hex(&data)));
    }
    must_see(&eu, 2, &files[9].0, &files[9].1, Duration::from_secs(30)).await;
    let leader = eu.must_wait_leader(Duration::from_secs(20)).await;
    eu.must_kill(leader);
    for i in 10..20u64 {
        let data = content(i, 40_000);
        let path = format!("ci/a-{i}.bin");
        assert_eq!(put(&us, 1, &path, data.clone()).await.status(), 201);
        files.push((path, sha256_hex(&data)));
    }
    let survivor = eu.live()[0];
    for (path, sha) in &files {
        must_see(&eu, survivor, path, sha, Duration::from_secs(60)).await;
    }
    eu.must_restart(leader);
    eu.must_wait_ready(leader, Duration::from_secs(60)).await;
    let verify = arca(&[
        "cluster",
        "verify",
        "--output",
        "json",
        "--admin",
        &admin(&eu, survivor),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).expect("json");
    assert_eq!(report["consistent"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_through_mirror_serves_what_it_has_not_received_yet() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    // A slow link: the mirror falls behind a large artifact.
    proxy.shape(LinkShape::wan(4, Duration::from_millis(20)));
    let eu = mirror(root.path(), "eu", 1, vec![proxy.addr.to_string()], true).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    wait_until(
        "the repository on the mirror",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let response = eu
                .http()
                .get(eu.url(1, "/api/v1/repos/ci"))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await
    .expect("repository replicated");
    assert_eq!(
        put(&us, 1, "ci/large.bin", content(1, 16 << 20))
            .await
            .status(),
        201
    );
    let small = content(2, 20_000);
    assert_eq!(
        put(&us, 1, "ci/small.bin", small.clone()).await.status(),
        201
    );
    let response = eu
        .http()
        .get(eu.url(1, "/files/ci/small.bin"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-arca-read-through"], "primary");
    assert_eq!(
        sha256_hex(&response.bytes().await.expect("body")),
        sha256_hex(&small)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_from_the_cluster_ca_cannot_connect() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let addr = us
        .node(1)
        .replication_addr
        .expect("replication addr")
        .to_string();
    let info = arca_replication::RegionInfo {
        region: "rogue".into(),
        role: arca_replication::Role::Mirror,
        epoch: 1,
        primary: None,
        http_addrs: vec![],
        replication_addrs: vec![],
        head: Default::default(),
        fork: None,
        forks: Vec::new(),
        cluster_id: None,
    };
    let rogue = arca_chaos::must_issue(&root.path().join("rogue-ca"), "rogue", "rogue");
    let endpoint =
        arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &rogue).expect("endpoint");
    let refused = arca_replication::client::hello(&endpoint, &addr, info.clone()).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA is refused at the handshake"
    );
    let trusted = arca_chaos::must_issue(&root.path().join("tls"), "probe", "rogue");
    let endpoint = arca_replication::endpoint("127.0.0.1:0".parse().expect("addr"), &trusted)
        .expect("endpoint");
    let hello = arca_replication::client::hello(&endpoint, &addr, info)
        .await
        .expect("hello with a valid certificate");
    assert_eq!(hello.region, "us");
}

/// Found by `arca-chaos --scenario leader-kill --seed 1 --topology 3,1`: a new single-node
/// mirror served its first writes as a primary until its first housekeeping tick, because it
/// read its membership before initializing had reached the Raft metrics. A write sent the
/// moment the mirror is ready must already be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_mirror_refuses_writes_as_soon_as_it_is_ready() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let mut replication = RegionReplication {
        tls_dir: root.path().join("tls"),
        primary: us.replication_addrs(),
        ..Default::default()
    };
    // Probe rarely, so only the start-up path can make the region a mirror in time.
    replication.read_through = false;
    let mut options = region_options(root.path(), "eu", 1, replication);
    options
        .env
        .retain(|(k, _)| k != "ARCA_REPLICATION__PROBE_INTERVAL_MS");
    options
        .env
        .push(("ARCA_REPLICATION__PROBE_INTERVAL_MS".into(), "60000".into()));
    let eu = Region::must_start(options).await;
    let status = put_status_no_redirect(&eu, 1, "ci/too-early.bin", content(1, 1000)).await;
    assert_eq!(status, 307, "a write to a fresh mirror is refused");
}

/// Found by `scripts/chaos-ci.sh` (`primary-loss-promote`, seed 20261128, topology 3,1): a
/// mirror that fell behind replays change-log entries whose chunks the primary has already
/// reclaimed (a later entry overwrote the artifact), got `CHUNK_UNAVAILABLE` on every attempt and
/// never caught up. It must catch up from a snapshot instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_behind_an_overwrite_whose_chunks_were_reclaimed_still_catches_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    let eu = mirror(root.path(), "eu", 1, vec![proxy.addr.to_string()], false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let first = content(1, 200_000);
    assert_eq!(put(&us, 1, "ci/app.bin", first.clone()).await.status(), 201);
    must_see(
        &eu,
        1,
        "ci/app.bin",
        &sha256_hex(&first),
        Duration::from_secs(30),
    )
    .await;

    proxy.cut();
    // The second version's chunks are reclaimed on the primary as soon as the third replaces it.
    let second = content(2, 200_000);
    assert_eq!(put(&us, 1, "ci/app.bin", second).await.status(), 201);
    let third = content(3, 200_000);
    assert_eq!(put(&us, 1, "ci/app.bin", third.clone()).await.status(), 201);
    proxy.heal();
    must_see(
        &eu,
        1,
        "ci/app.bin",
        &sha256_hex(&third),
        Duration::from_secs(30),
    )
    .await;
    // Audit A4: the primary keeps freed chunks until every mirror it knows passed the change
    // that freed them, so the mirror follows the log instead of starting a snapshot.
    let catch_ups = eu
        .metric(1, "arca_replication_snapshot_catch_ups_total", "")
        .await
        .unwrap_or(0.0);
    assert_eq!(catch_ups, 0.0, "the mirror needed a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_repairs_a_chunk_no_node_of_its_region_holds_from_the_primary() {
    // Audit D3: a mirror resynced chunks only from its own region's nodes; a chunk none of them
    // held (lost, corrupt) was missing there for ever although the primary had it.
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let mut eu = mirror(root.path(), "eu", 1, us.replication_addrs(), false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let body = content(80, 150_000);
    assert_eq!(put(&us, 1, "ci/app.bin", body.clone()).await.status(), 201);
    must_see(
        &eu,
        1,
        "ci/app.bin",
        &sha256_hex(&body),
        Duration::from_secs(30),
    )
    .await;
    eu.must_stop(1, Duration::from_secs(10));
    let corrupted =
        arca_chaos::faults::corrupt_chunks(&eu.data_dir(1).join("db"), 100, 7).expect("corrupt");
    assert!(!corrupted.is_empty());
    eu.must_restart(1);
    must_see(
        &eu,
        1,
        "ci/app.bin",
        &sha256_hex(&body),
        Duration::from_secs(30),
    )
    .await;
}

/// Audit A6: a primary region that knows of peer regions takes no write, on any node, after a
/// start until every peer answered that none of them replaced it; before this, followers of a
/// returning multi-node former primary (and every node, when a peer did not answer) took writes
/// that a later probe could only record as divergent. `arca cluster unfence` lifts the gate for
/// the whole region when a peer is gone for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_takes_no_write_on_any_node_before_it_heard_from_every_peer_region() {
    let root = tempfile::tempdir().expect("tempdir");
    // A peer region that never answers: a UDP port nothing listens on any more.
    let silent_peer = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.local_addr().expect("addr").to_string()
    };
    let replication = RegionReplication {
        tls_dir: root.path().join("tls"),
        peers: vec![silent_peer],
        ..Default::default()
    };
    let us = Region::must_start(region_options(root.path(), "us", 3, replication)).await;
    // Reads are served while writes wait.
    let response = us
        .http()
        .get(us.url(2, "/api/v1/repos"))
        .send()
        .await
        .expect("list repos");
    assert_eq!(response.status(), 200);
    for node in 1..=3u64 {
        let response = us
            .http()
            .post(us.url(node, "/api/v1/repos"))
            .json(&serde_json::json!({"name": format!("r{node}")}))
            .send()
            .await
            .expect("create repo");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            status, 503,
            "node {node} took a write before hearing from its peer: {body}"
        );
        assert_eq!(body["code"], "NOT_READY", "{body}");
    }

    let output = arca(&[
        "cluster",
        "unfence",
        "--admin",
        &admin(&us, 2),
        "--output",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    must_create_repo(&us, 3, serde_json::json!({"name": "ci"})).await;
    for node in 1..=3u64 {
        let path = format!("ci/after-unfence-{node}.bin");
        assert_eq!(
            put(&us, node, &path, content(node, 5000)).await.status(),
            201
        );
    }
}

/// Audit D4: a mirror's orphan sweep must not delete the chunks it fetched for a batch or a
/// snapshot that is not committed yet. The mirror here sweeps every second with no grace, and
/// catches up over a slow link from a primary that kept almost none of its log (so from a
/// snapshot, then entries). Before the fix, fetched chunks were unreferenced and unpinned until
/// the commit, so the sweep deleted them, and the committed files referenced chunks the mirror
/// region lacked. Nothing is ever deleted on the primary, so the mirror must not delete a
/// single chunk either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mirror_sweeping_with_no_grace_keeps_the_chunks_of_batches_and_snapshots_in_flight() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary_with_env(root.path(), 1, &[("ARCA_REPLICATION__RETAIN_ENTRIES", "2")]).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let mut files = Vec::new();
    for i in 0..6u64 {
        let data = content(100 + i, 2_500_000);
        let path = format!("ci/seed-{i}.bin");
        assert_eq!(put(&us, 1, &path, data.clone()).await.status(), 201);
        files.push((path, sha256_hex(&data)));
    }

    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    // About 2 MiB/s: the 15 MB the mirror needs take several sweeps to arrive.
    proxy.shape(LinkShape {
        bandwidth: Some(2 << 20),
        latency: Duration::from_millis(5),
        ..Default::default()
    });
    // The mirror reaches its primary through the proxy: the primary's session works there.
    arca_chaos::credentials::register(
        [proxy.addr.to_string()],
        us.token.as_deref().expect("signed in"),
    );
    let mut options = region_options(
        root.path(),
        "eu",
        1,
        RegionReplication {
            tls_dir: root.path().join("tls"),
            primary: vec![proxy.addr.to_string()],
            ..Default::default()
        },
    );
    options.env.extend([
        ("ARCA_GC__ORPHAN_GRACE_SECS".to_string(), "0".to_string()),
        ("ARCA_GC__SWEEP_INTERVAL_SECS".to_string(), "1".to_string()),
    ]);
    let eu = Region::must_start(options).await;
    // More writes while the mirror catches up: these cross as entries.
    for i in 0..3u64 {
        let data = content(200 + i, 1_500_000);
        let path = format!("ci/live-{i}.bin");
        assert_eq!(put(&us, 1, &path, data.clone()).await.status(), 201);
        files.push((path, sha256_hex(&data)));
    }
    for (path, sha) in &files {
        must_see(&eu, 1, path, sha, Duration::from_secs(120)).await;
    }
    let deleted = eu
        .metric(1, "arca_storage_chunks_deleted_total", "")
        .await
        .expect("metrics");
    let from_primary = eu
        .metric(1, "arca_region_chunks_fetched_total", "reason=\"primary\"")
        .await
        .expect("metrics");
    assert_eq!(
        (deleted, from_primary),
        (0.0, 0.0),
        "the mirror deleted chunks it had fetched for entries it then committed (and fetched \
         them again from the primary); log:\n{}",
        eu.node(1).log()
    );
}

/// Audit D6: sync replication that names its mirrors. With `replication.sync_mirrors = eu, ap`
/// a write to a sync repository (a delete too) is acknowledged only once both hold it: before,
/// one acknowledgement from any mirror was enough, and deletes never waited, so promoting the
/// mirror that did not acknowledge lost acknowledged writes. And a promotion without `--force`
/// refuses a mirror that another mirror region is ahead of, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_writes_wait_for_every_named_mirror_and_promotion_names_the_mirror_ahead() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut us = primary_with_env(
        root.path(),
        1,
        &[("ARCA_REPLICATION__SYNC_MIRRORS", "eu,ap")],
    )
    .await;
    let eu = mirror(root.path(), "eu", 1, us.replication_addrs(), false).await;
    let proxy = UdpProxy::start(us.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    let ap = Region::must_start(region_options(
        root.path(),
        "ap",
        1,
        RegionReplication {
            tls_dir: root.path().join("tls"),
            primary: vec![proxy.addr.to_string()],
            peers: eu.replication_addrs(),
            read_through: false,
        },
    ))
    .await;
    must_create_repo(
        &us,
        1,
        serde_json::json!({"name": "critical", "replication": "sync"}),
    )
    .await;
    let first = content(1, 40_000);
    assert_eq!(
        put(&us, 1, "critical/a.bin", first.clone()).await.status(),
        201
    );
    must_see(
        &ap,
        1,
        "critical/a.bin",
        &sha256_hex(&first),
        Duration::from_secs(10),
    )
    .await;

    // ap is cut off; eu still acknowledges everything.
    proxy.cut();
    let second = content(2, 40_000);
    let response = put(&us, 1, "critical/b.bin", second.clone()).await;
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(status, 504, "acknowledged without ap: {body}");
    assert_eq!(body["code"], "SYNC_REPLICATION_TIMEOUT", "{body}");
    let response = us
        .http()
        .delete(us.url(1, "/files/critical/a.bin"))
        .send()
        .await
        .expect("delete");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 504, "a sync delete did not wait for ap: {body}");
    must_see(
        &eu,
        1,
        "critical/b.bin",
        &sha256_hex(&second),
        Duration::from_secs(10),
    )
    .await;

    // The primary is lost. ap is behind eu: promoting it would lose what eu applied.
    us.must_kill(1);
    let refused = arca(&[
        "cluster",
        "promote",
        "ap",
        "--admin",
        &admin(&ap, 1),
        "--output",
        "json",
    ]);
    let reply = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        reply.contains("region eu has applied entry"),
        "the promotion of ap did not name eu as ahead: {reply}"
    );
    assert!(!reply.contains("\"promoted\":true"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_at_the_primary_works_at_a_mirror_until_its_revocation_arrives() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = primary(root.path(), 1).await;
    let eu = mirror(root.path(), "eu", 1, us.replication_addrs(), false).await;
    must_create_repo(&us, 1, serde_json::json!({"name": "ci"})).await;
    let data = content(7, 50_000);
    assert_eq!(put(&us, 1, "ci/app.tar", data.clone()).await.status(), 201);
    let created: serde_json::Value = us
        .http()
        .post(us.url(1, "/api/v1/tokens"))
        .json(&serde_json::json!({ "scopes": ["ci:read"] }))
        .send()
        .await
        .expect("create token")
        .json()
        .await
        .expect("json");
    let token = created["token"].as_str().expect("token").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let client = reqwest::Client::builder().build().expect("client");
    let read = |client: reqwest::Client, token: String| {
        let url = eu.url(1, "/files/ci/app.tar");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    // The token reaches the mirror with the change log.
    let started = std::time::Instant::now();
    wait_until(
        "the mirror accepts the new token",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let read = read(client.clone(), token.clone());
            async move { (read.await == 200).then_some(()) }
        },
    )
    .await
    .expect("token at the mirror");
    eprintln!("token usable at the mirror after {:?}", started.elapsed());
    // Revoked at the primary: refused at the mirror within the replication lag.
    let revoked = us
        .http()
        .delete(us.url(1, &format!("/api/v1/tokens/{id}")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let started = std::time::Instant::now();
    wait_until(
        "the mirror refuses the revoked token",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let read = read(client.clone(), token.clone());
            async move { (read.await == 401).then_some(()) }
        },
    )
    .await
    .expect("revocation at the mirror");
    eprintln!(
        "revocation effective at the mirror after {:?}",
        started.elapsed()
    );
    // The primary refuses it too, and a write at the mirror with the admin's token still gets
    // the redirect, not a 401.
    assert_eq!(read(client.clone(), token.clone()).await, 401);
    assert_eq!(
        put_status_no_redirect(&eu, 1, "ci/x.bin", vec![1, 2, 3]).await,
        307
    );
}
