//! The load generator and the registry comparison (`arca-bench`) against real servers: a real
//! `arca serve` process and Debian's `docker-registry` (CNCF distribution 2.8), which
//! `scripts/setup.sh` installs. These check that the tools measure what they say (every
//! operation really happens and is verified); the numbers themselves live in
//! `docs/benchmarks.md`.

use std::path::Path;

use arca_benches::compare::{self, Server};
use arca_benches::load::{self, LoadSpec, Workload};

const ARCA: &str = env!("CARGO_BIN_EXE_arca");
const REGISTRY: &str = "/usr/bin/docker-registry";

async fn repo_stats(http: &reqwest::Client, url: &str, repo: &str) -> serde_json::Value {
    http.get(format!("{url}/api/v1/repos/{repo}"))
        .send()
        .await
        .expect("repo stats")
        .json()
        .await
        .expect("repo stats json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_drives_every_workload_against_arca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let arca = Server::arca(Path::new(ARCA), dir.path())
        .await
        .expect("bench run");
    // Each server's own session: tests in this process run side by side.
    let token = arca.token.clone().expect("arca signs in");
    let http = arca_chaos::credentials::authorized(reqwest::Client::builder(), Some(&token))
        .build()
        .expect("client");
    let size = 96 * 1024;
    for workload in Workload::ALL {
        let mut spec = LoadSpec::new(&arca.url, workload, size);
        spec.token = Some(token.clone());
        spec.concurrency = 4;
        spec.ops = 24;
        spec.verify = true;
        let before = repo_stats(&http, &arca.url, "containers").await;
        let result = load::run(&spec).await.expect("bench run");
        assert_eq!(result.errors, 0, "{workload}: {:?}", result.first_error);
        assert_eq!(result.ops, 24);
        assert!(result.p50_ms > 0.0, "{result:?}");
        assert!(result.p50_ms <= result.p95_ms && result.p95_ms <= result.p99_ms);
        assert!(result.p99_ms <= result.max_ms + 0.001, "{result:?}");
        match workload {
            Workload::BlobPush | Workload::BlobPull | Workload::FilePush | Workload::FilePull => {
                assert_eq!(result.bytes, 24 * size as u64, "{workload}")
            }
            _ => assert!(result.bytes > 24 * 200, "{workload}: {}", result.bytes),
        }
        if workload == Workload::BlobPush {
            // 24 fresh blobs really landed: the repository's stored bytes grew by them.
            let after = repo_stats(&http, &arca.url, "containers").await;
            let grown = after["physical_bytes"].as_u64().expect("json field")
                - before["physical_bytes"].as_u64().expect("json field");
            assert!(grown >= 24 * size as u64, "{before} → {after}");
        }
    }
    let files = repo_stats(&http, &arca.url, "bench").await;
    assert!(
        files["artifacts"].as_u64().expect("json field") >= 24,
        "{files}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_reports_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let arca = Server::arca(Path::new(ARCA), dir.path())
        .await
        .expect("bench run");
    // No OCI repository named `missing`: every push fails, and the run says so.
    let mut spec = LoadSpec::new(&arca.url, Workload::BlobPush, 4096);
    spec.token = arca.token.clone();
    spec.image = "missing/app".into();
    spec.ops = 5;
    let result = load::run(&spec).await.expect("bench run");
    assert_eq!(result.errors, 5);
    assert!(
        result.first_error.as_deref().unwrap_or("").contains("404"),
        "{result:?}"
    );
    // A pull run cannot even prepare its blobs.
    let mut spec = LoadSpec::new(&arca.url, Workload::BlobPull, 4096);
    spec.token = arca.token.clone();
    spec.image = "missing/app".into();
    assert!(load::run(&spec).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparison_with_debian_docker_registry() {
    assert!(
        Path::new(REGISTRY).exists(),
        "{REGISTRY} is missing: scripts/setup.sh installs Debian's docker-registry"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let arca = Server::arca(Path::new(ARCA), dir.path())
        .await
        .expect("bench run");
    let peer = Server::distribution(Path::new(REGISTRY), dir.path())
        .await
        .expect("bench run");
    let cases = compare::quick_cases();
    let mut runs = 0;
    let rows = compare::compare(&arca, &peer, &cases, 1, |_| runs += 1)
        .await
        .expect("bench run");
    assert_eq!(runs, 2 * cases.len());
    assert_eq!(rows.len(), cases.len());
    for row in &rows {
        assert_eq!(row.arca.server, "arca");
        assert_eq!(row.peer.server, "distribution");
        assert_eq!(row.arca.result.errors + row.peer.result.errors, 0);
        assert!(
            row.throughput_ratio.is_finite() && row.throughput_ratio > 0.0,
            "{row:?}"
        );
        assert!(row.arca.peak_rss_bytes > 1 << 20 && row.peer.peak_rss_bytes > 1 << 20);
    }
    // The peer really stored what it was sent: its blob exists on its filesystem storage.
    let blobs = dir
        .path()
        .join("distribution/data/docker/registry/v2/blobs/sha256");
    assert!(
        std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0) > 0,
        "{} is empty",
        blobs.display()
    );
    let table = compare::table(&rows).to_string();
    assert!(table.contains("manifest-pull"), "{table}");
}
