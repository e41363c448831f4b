//! Push and pull round trips through the HTTP API of a real single node (in process, loopback,
//! temporary RocksDB), with every iteration pushing fresh content so deduplication does not
//! flatter the numbers. The peer in the same run is a bare axum server on the same runtime
//! that drains uploads and serves downloads from memory: the HTTP ceiling Arca's numbers are
//! read against.
//!
//! `cargo bench -p arca-benches --bench roundtrip`

use std::time::{Duration, Instant};

use arca_benches::random_bytes;
use arca_node::NodeConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        data_dir: dir.path().join("data"),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: "127.0.0.1:0".into(),
        ..NodeConfig::default()
    };
    let node = runtime
        .block_on(arca_node::start(config))
        .expect("start node");
    let base = format!("http://{}", node.http_addr);
    let http = reqwest::Client::new();
    runtime
        .block_on(
            http.post(format!("{base}/api/v1/repos"))
                .json(&serde_json_body())
                .send(),
        )
        .expect("create repo");

    let peer = runtime.block_on(start_peer());

    let mut seed = 1000u64;
    for (label, size) in [("4KiB", 4 << 10), ("16MiB", 16 << 20)] {
        let mut group = c.benchmark_group(format!("http_{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(if size > 1 << 20 { 20 } else { 100 });
        group.bench_function("push_fresh_content", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seed += 1;
                    let data = random_bytes(size, seed);
                    let url = format!("{base}/files/bench/{label}/{seed}");
                    let started = Instant::now();
                    let response = runtime
                        .block_on(http.put(&url).body(data).send())
                        .expect("put");
                    assert_eq!(response.status(), 201);
                    total += started.elapsed();
                }
                total
            })
        });
        group.bench_function("peer_push_drained", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seed += 1;
                    let data = random_bytes(size, seed);
                    let started = Instant::now();
                    let response = runtime
                        .block_on(http.put(format!("{peer}/drain")).body(data).send())
                        .expect("put");
                    assert_eq!(response.status(), 200);
                    total += started.elapsed();
                }
                total
            })
        });
        let url = format!("{base}/files/bench/{label}/pull-target");
        let response = runtime
            .block_on(
                http.put(&url)
                    .body(random_bytes(size, u64::MAX - size as u64))
                    .send(),
            )
            .expect("put pull target");
        assert_eq!(response.status(), 201);
        let peer_url = format!("{peer}/bytes/{size}");
        group.bench_function("peer_pull_from_memory", |b| {
            b.iter(|| {
                let body = runtime
                    .block_on(async { http.get(&peer_url).send().await?.bytes().await })
                    .expect("get");
                assert_eq!(body.len(), size);
            })
        });
        group.bench_function("pull", |b| {
            b.iter(|| {
                let body = runtime
                    .block_on(async { http.get(&url).send().await?.bytes().await })
                    .expect("get");
                assert_eq!(body.len(), size);
            })
        });
        group.finish();
    }
    runtime.block_on(node.shutdown());
}

/// The peer: an axum server that drains request bodies and serves zero-filled bodies.
async fn start_peer() -> String {
    use axum::body::Body;
    use axum::extract::Path;
    use axum::routing::{get, put};
    use futures::StreamExt;
    let app = axum::Router::new()
        .route(
            "/drain",
            put(|body: Body| async move {
                let mut stream = body.into_data_stream();
                let mut n = 0usize;
                while let Some(Ok(piece)) = stream.next().await {
                    n += piece.len();
                }
                n.to_string()
            }),
        )
        .route(
            "/bytes/{size}",
            get(|Path(size): Path<usize>| async move { vec![0u8; size] }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind peer");
    let addr = listener.local_addr().expect("peer addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn serde_json_body() -> std::collections::HashMap<&'static str, &'static str> {
    std::collections::HashMap::from([("name", "bench")])
}

criterion_group!(roundtrip, benches);
criterion_main!(roundtrip);
