//! Replication benchmark over a shaped WAN link: a primary and a mirror region (one node each,
//! real processes), the mirror's QUIC traffic through the chaos proxy shaped as a WAN link.
//!
//! Measures: time from the primary's acknowledgement to availability in the mirror (small and
//! large artifacts), lag under a steady push load, and the bytes that cross for a new version
//! sharing 90 % of its content, against the full size a blob-level replicator would send.
//!
//! ```text
//! cargo build --release -p arca-cli -p arca-benches --bin arca --bin geo-bench
//! $CARGO_TARGET_DIR/release/geo-bench --arca $CARGO_TARGET_DIR/release/arca [--mbit 100] [--rtt-ms 80]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arca_benches::random_bytes;
use arca_chaos::{LinkShape, Region, RegionOptions, RegionReplication, UdpProxy};
use hdrhistogram::Histogram;

struct Args {
    arca: PathBuf,
    mbit: u64,
    rtt_ms: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        arca: PathBuf::from("target/release/arca"),
        mbit: 100,
        rtt_ms: 80,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--arca" => args.arca = PathBuf::from(value),
            "--mbit" => args.mbit = value.parse().expect("--mbit"),
            "--rtt-ms" => args.rtt_ms = value.parse().expect("--rtt-ms"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn options(
    args: &Args,
    root: &std::path::Path,
    name: &str,
    replication: RegionReplication,
) -> RegionOptions {
    let mut options = RegionOptions::new(&args.arca, root.join(name), 1);
    options.region = name.into();
    options.env = vec![("ARCA_LOG".into(), "warn".into())];
    options.replication = Some(replication);
    options
}

async fn put(region: &Region, path: &str, body: Vec<u8>) {
    let response = region
        .http()
        .put(region.url(1, &format!("/files/{path}")))
        .body(body)
        .send()
        .await
        .expect("push");
    assert!(
        response.status().is_success(),
        "push {path}: {}",
        response.status()
    );
}

/// Polls the mirror until it serves `path`; returns how long that took.
async fn until_available(mirror: &Region, path: &str, since: Instant) -> Duration {
    let url = mirror.url(1, &format!("/api/v1/repos/bench/files/{path}"));
    loop {
        if let Ok(response) = mirror.http().get(&url).send().await {
            if response.status() == 200 {
                return since.elapsed();
            }
        }
        assert!(
            since.elapsed() < Duration::from_secs(300),
            "{path} never reached the mirror"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let root = tempfile::tempdir().expect("tempdir");
    let tls = root.path().join("tls");
    let primary = Region::must_start(options(
        &args,
        root.path(),
        "us",
        RegionReplication {
            tls_dir: tls.clone(),
            ..Default::default()
        },
    ))
    .await;
    let proxy = UdpProxy::start(primary.node(1).replication_addr.expect("replication addr"))
        .await
        .expect("proxy");
    proxy.shape(LinkShape::wan(
        args.mbit,
        Duration::from_millis(args.rtt_ms),
    ));
    let mirror = Region::must_start(options(
        &args,
        root.path(),
        "eu",
        RegionReplication {
            tls_dir: tls,
            primary: vec![proxy.addr.to_string()],
            ..Default::default()
        },
    ))
    .await;
    let response = primary
        .http()
        .post(primary.url(1, "/api/v1/repos"))
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .expect("create repo");
    assert_eq!(response.status(), 201);
    let repo_url = mirror.url(1, "/api/v1/repos/bench");
    loop {
        if matches!(mirror.http().get(&repo_url).send().await, Ok(r) if r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "WAN link through the proxy: {} Mbit/s each way, {} ms RTT",
        args.mbit, args.rtt_ms
    );

    // 1. Small artifacts: primary acknowledgement to availability in the mirror.
    let mut small = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..30u64 {
        put(
            &primary,
            &format!("bench/small/{i}"),
            random_bytes(4096, 1_000 + i),
        )
        .await;
        let acked = Instant::now();
        let took = until_available(&mirror, &format!("small/{i}"), acked).await;
        small.record(took.as_micros() as u64).expect("record");
    }
    println!(
        "4 KiB artifacts, ack to available in the mirror (30): p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(&small, 0.5),
        ms(&small, 0.9),
        ms(&small, 1.0)
    );

    // 2. Large artifacts.
    for i in 0..3u64 {
        put(
            &primary,
            &format!("bench/large/{i}"),
            random_bytes(64 << 20, 2_000 + i),
        )
        .await;
        let acked = Instant::now();
        let took = until_available(&mirror, &format!("large/{i}"), acked).await;
        let seconds = took.as_secs_f64();
        println!(
            "64 MiB artifact {i}: available in the mirror {seconds:.2} s after the ack ({:.1} Mbit/s effective)",
            (64 << 20) as f64 * 8.0 / seconds / 1e6
        );
    }

    // 3. Lag under a steady load: 10 pushes of 256 KiB per second for 30 s (~21 Mbit/s).
    let sampler = {
        let metrics_url = mirror.url(1, "/metrics");
        let http = mirror.http().clone();
        tokio::spawn(async move {
            let mut seconds = Histogram::<u64>::new(3).expect("histogram");
            let mut entries = Histogram::<u64>::new(3).expect("histogram");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(response) = http.get(&metrics_url).send().await {
                    let text = response.text().await.unwrap_or_default();
                    let value = |name: &str| -> f64 {
                        text.lines()
                            .find(|l| l.starts_with(name))
                            .and_then(|l| l.rsplit(' ').next())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0.0)
                    };
                    seconds
                        .record((value("arca_replication_lag_seconds") * 1000.0) as u64)
                        .expect("record");
                    entries
                        .record(value("arca_replication_lag_entries") as u64)
                        .expect("record");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (seconds, entries)
        })
    };
    let load_started = Instant::now();
    let mut pushed = 0u64;
    while load_started.elapsed() < Duration::from_secs(30) {
        let due = load_started + Duration::from_millis(100 * pushed);
        tokio::time::sleep_until(due.into()).await;
        put(
            &primary,
            &format!("bench/steady/{pushed}"),
            random_bytes(256 * 1024, 3_000 + pushed),
        )
        .await;
        pushed += 1;
    }
    let (seconds, entries) = sampler.await.expect("sampler");
    println!(
        "steady load, {pushed} pushes of 256 KiB in 30 s: lag p50 {:.2} s / {} entries, max {:.2} s / {} entries",
        ms(&seconds, 0.5) * 1.0,
        entries.value_at_quantile(0.5),
        seconds.max() as f64 / 1000.0,
        entries.max()
    );

    // 4. A new version sharing 90 % of its content with the previous one.
    let v1 = random_bytes(64 << 20, 4_000);
    put(&primary, "bench/app-1.0", v1.clone()).await;
    until_available(&mirror, "app-1.0", Instant::now()).await;
    let wire_before = proxy.bytes().1;
    let payload_before = mirror
        .metric(1, "arca_replication_bytes_total", "")
        .await
        .expect("metric");
    let mut v2 = v1;
    let region = v2.len() / 10 / 8;
    for k in 0..8 {
        let start = k * (v2.len() / 8) + v2.len() / 32;
        v2[start..start + region].copy_from_slice(&random_bytes(region, 5_000 + k as u64));
    }
    put(&primary, "bench/app-1.1", v2).await;
    until_available(&mirror, "app-1.1", Instant::now()).await;
    let wire = proxy.bytes().1 - wire_before;
    let payload = mirror
        .metric(1, "arca_replication_bytes_total", "")
        .await
        .expect("metric")
        - payload_before;
    let full = (64u64 << 20) as f64;
    println!(
        "new version of a 64 MiB artifact sharing 90 %: chunk payload {:.1} MiB ({:.0} % of the full blob), on the wire {:.1} MiB ({:.0} %); a blob-level replicator sends 64.0 MiB",
        payload / (1 << 20) as f64,
        payload / full * 100.0,
        wire as f64 / (1 << 20) as f64,
        wire as f64 / full * 100.0
    );
}
