//! Read benchmark: small-GET throughput and latency against the leader and against a follower
//! of a 3-node region (every GET runs the read barrier), with real `arca` processes on
//! loopback, and the TCP connections the reads leave in TIME_WAIT between the nodes.
//!
//! ```text
//! cargo build -p arca-cli --bin arca && cargo build -p arca-benches --bin read-bench
//! $CARGO_TARGET_DIR/debug/read-bench --arca $CARGO_TARGET_DIR/debug/arca \
//!     [--files 100] [--size 4096] [--concurrency 64] [--gets 6000] [--output json]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_benches::random_bytes;
use arca_chaos::{time_wait_to, Region, RegionOptions};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

struct Args {
    arca: PathBuf,
    files: u64,
    size: usize,
    concurrency: u64,
    gets: u64,
    json: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        arca: PathBuf::from("target/debug/arca"),
        files: 100,
        size: 4096,
        concurrency: 64,
        gets: 6000,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--arca" => args.arca = PathBuf::from(value),
            "--files" => args.files = value.parse().expect("--files"),
            "--size" => args.size = value.parse().expect("--size"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency"),
            "--gets" => args.gets = value.parse().expect("--gets"),
            "--output" => args.json = value == "json",
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

struct Run {
    target: &'static str,
    gets_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn measure(region: &Region, node: u64, target: &'static str, args: &Args) -> Run {
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let per_client = args.gets / args.concurrency;
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..args.concurrency {
        let http = region.http().clone();
        let base = region.url(node, "/files/bench/f");
        let histogram = histogram.clone();
        let errors = errors.clone();
        let files = args.files;
        clients.push(tokio::spawn(async move {
            for i in 0..per_client {
                let url = format!("{base}{}", (client * 7919 + i) % files);
                let at = Instant::now();
                let ok = match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => response.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    let micros = at.elapsed().as_micros() as u64;
                    let _ = histogram.lock().await.record(micros.max(1));
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let histogram = histogram.lock().await;
    Run {
        target,
        gets_per_sec: (per_client * args.concurrency) as f64 / elapsed,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let root = tempfile::tempdir().expect("tempdir");
    let mut options = RegionOptions::new(&args.arca, root.path(), 3);
    options.env = vec![("ARCA_LOG".into(), "warn".into())];
    let region = Region::must_start(options).await;
    let created = region
        .http()
        .post(region.url(1, "/api/v1/repos"))
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .expect("create repo");
    assert_eq!(created.status(), 201);
    for i in 0..args.files {
        let response = region
            .http()
            .put(region.url(1, &format!("/files/bench/f{i}")))
            .body(random_bytes(args.size, i))
            .send()
            .await
            .expect("put");
        assert!(response.status().is_success());
    }
    let leader = region.must_wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    for id in 1..=3 {
        region.must_wait_ready(id, Duration::from_secs(30)).await;
    }
    let ports: Vec<u16> = (1..=3).map(|id| region.node(id).grpc_addr.port()).collect();
    let before = time_wait_to(&ports);
    let on_leader = measure(&region, leader, "leader", &args).await;
    let on_follower = measure(&region, follower, "follower", &args).await;
    let time_wait = time_wait_to(&ports).saturating_sub(before);
    let ratio = on_follower.gets_per_sec / on_leader.gets_per_sec;
    if args.json {
        let run = |r: &Run| {
            serde_json::json!({"target": r.target, "gets_per_sec": r.gets_per_sec,
                "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors})
        };
        println!(
            "{}",
            serde_json::json!({
                "runs": [run(&on_leader), run(&on_follower)],
                "follower_to_leader": ratio,
                "time_wait_connections": time_wait,
            })
        );
    } else {
        println!("target    GETs/s   p50 ms   p99 ms  errors");
        for r in [&on_leader, &on_follower] {
            println!(
                "{:<8} {:>8.0} {:>8.2} {:>8.2} {:>7}",
                r.target, r.gets_per_sec, r.p50_ms, r.p99_ms, r.errors
            );
        }
        println!("follower/leader throughput: {ratio:.2}");
        println!("connections left in TIME_WAIT between the nodes: {time_wait}");
    }
}
