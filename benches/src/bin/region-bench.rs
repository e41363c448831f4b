//! Region benchmark: push throughput and latency on a 1-node against a 3-node region, and the
//! time from killing the leader to the first successful write, with real `arca` processes on
//! loopback.
//!
//! ```text
//! cargo build --release -p arca-cli
//! cargo run --release -p arca-benches --bin region-bench -- \
//!     --arca $CARGO_TARGET_DIR/release/arca [--pushes 400] [--size 262144] [--concurrency 8] [--trials 20]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_benches::random_bytes;
use arca_chaos::{Region, RegionOptions};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

struct Args {
    arca: PathBuf,
    pushes: u64,
    size: usize,
    concurrency: u64,
    trials: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        arca: PathBuf::from("target/release/arca"),
        pushes: 400,
        size: 256 * 1024,
        concurrency: 8,
        trials: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--arca" => args.arca = PathBuf::from(value),
            "--pushes" => args.pushes = value.parse().expect("--pushes"),
            "--size" => args.size = value.parse().expect("--size"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency"),
            "--trials" => args.trials = value.parse().expect("--trials"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

async fn start(args: &Args, root: &std::path::Path, nodes: u64) -> Region {
    let mut options = RegionOptions::new(&args.arca, root, nodes);
    options.env = vec![("ARCA_LOG".into(), "warn".into())];
    let region = Region::must_start(options).await;
    let response = region
        .http()
        .post(region.url(1, "/api/v1/repos"))
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .expect("create repo");
    assert_eq!(response.status(), 201);
    region
}

/// Pushes `args.pushes` fresh blobs with `args.concurrency` writers spread over the nodes.
async fn throughput(args: &Args, region: &Region, nodes: u64) -> (f64, Histogram<u64>) {
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..args.concurrency {
        let http = region.http().clone();
        let urls: Vec<String> = (1..=nodes).map(|id| region.url(id, "")).collect();
        let latencies = latencies.clone();
        let per_writer = args.pushes / args.concurrency;
        let size = args.size;
        writers.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let seed = writer * 1_000_000 + i;
                let body = random_bytes(size, seed);
                let url = format!(
                    "{}/files/bench/w{writer}/{i}",
                    urls[(seed % urls.len() as u64) as usize]
                );
                let t = Instant::now();
                let response = http.put(&url).body(body).send().await.expect("push");
                assert_eq!(response.status(), 201, "push {url}");
                latencies
                    .lock()
                    .await
                    .record(t.elapsed().as_micros() as u64)
                    .expect("record");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total_bytes = (args.pushes / args.concurrency * args.concurrency) as f64 * args.size as f64;
    let histogram = latencies.lock().await.clone();
    (total_bytes / elapsed / (1 << 20) as f64, histogram)
}

/// Kills the leader and measures until a write through a survivor succeeds; `trials` times.
async fn failover(args: &Args, region: &mut Region) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for trial in 0..args.trials {
        let leader = region.must_wait_leader(Duration::from_secs(30)).await;
        let survivor = region
            .live()
            .into_iter()
            .find(|id| *id != leader)
            .expect("survivor");
        let url = region.url(survivor, &format!("/files/bench/failover/{trial}"));
        region.must_kill(leader);
        let killed = Instant::now();
        loop {
            let response = region
                .http()
                .put(&url)
                .body(random_bytes(4096, 9_000_000 + trial))
                .send()
                .await;
            if matches!(&response, Ok(r) if r.status() == 201) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no write succeeded within 60 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        histogram
            .record(killed.elapsed().as_millis() as u64)
            .expect("record");
        region.must_restart(leader);
        region
            .must_wait_ready(leader, Duration::from_secs(60))
            .await;
    }
    histogram
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    println!(
        "push benchmark: {} pushes of {} KiB, {} concurrent writers",
        args.pushes,
        args.size / 1024,
        args.concurrency
    );
    println!("| region | MiB/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for nodes in [1u64, 3] {
        let root = tempfile::tempdir().expect("tempdir");
        let region = start(&args, root.path(), nodes).await;
        let (mib_per_sec, latencies) = throughput(&args, &region, nodes).await;
        println!(
            "| {nodes} node{} | {mib_per_sec:.1} | {:.1} | {:.1} | {:.1} |",
            if nodes == 1 { "" } else { "s" },
            ms(&latencies, 0.5),
            ms(&latencies, 0.99),
            ms(&latencies, 1.0)
        );
    }
    let root = tempfile::tempdir().expect("tempdir");
    let mut region = start(&args, root.path(), 3).await;
    let failover = failover(&args, &mut region).await;
    println!();
    println!(
        "leader kill to first successful write, {} trials (ms):",
        args.trials
    );
    println!(
        "min {} | p50 {} | p90 {} | max {}",
        failover.min(),
        failover.value_at_quantile(0.5),
        failover.value_at_quantile(0.9),
        failover.max()
    );
}
