//! A large push and pull through a real server process must stream: the server's resident
//! memory may grow by less than half the body, and never by 200 MiB.
//!
//! The body is 384 MiB by default, so a developer's run of the suite stays quick;
//! `ARCA_TEST_LARGE_BYTES` sets it, and `.ci/run` sets it to 2 GiB.

use std::time::Instant;

use arca_chaos::{ArcaProcess, ProcessOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const ARCA: &str = env!("CARGO_BIN_EXE_arca");
const MIB: u64 = 1 << 20;

/// `total` bytes of incompressible, non-repeating data, generated 1 MiB at a time.
fn generated(total: u64) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::iter(0..total.div_ceil(MIB)).map(move |i| {
        let len = (total - i * MIB).min(MIB) as usize;
        let mut block = vec![0u8; len];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut block);
        Ok(block)
    })
}

fn expected_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; MIB as usize];
    for i in 0..total.div_ceil(MIB) {
        let len = (total - i * MIB).min(MIB) as usize;
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut block[..len]);
        hasher.update(&block[..len]);
    }
    hex::encode(hasher.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_push_and_pull_stream_in_bounded_memory() {
    let total: u64 = std::env::var("ARCA_TEST_LARGE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(384 * MIB);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let token = server.admin_token().await.expect("sign in");
    let http = arca_chaos::credentials::authorized(reqwest::Client::builder(), Some(&token))
        .build()
        .expect("client");
    assert_eq!(
        http.post(format!("{base}/api/v1/repos"))
            .json(&serde_json::json!({"name": "big"}))
            .send()
            .await
            .expect("create")
            .status(),
        201
    );
    let (baseline, _) = server.memory().expect("memory");

    let started = Instant::now();
    let response = http
        .put(format!("{base}/files/big/blob.bin"))
        .header("content-length", total)
        .body(reqwest::Body::wrap_stream(generated(total)))
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 201);
    let pushed: serde_json::Value = response.json().await.expect("json");
    let push_secs = started.elapsed().as_secs_f64();
    let expected = expected_sha256(total);
    assert_eq!(pushed["sha256"], expected.as_str());

    let (_, after_push_peak) = server.memory().expect("memory");
    let started = Instant::now();
    let response = http
        .get(format!("{base}/files/big/blob.bin"))
        .send()
        .await
        .expect("pull");
    assert_eq!(response.status(), 200);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut body = response.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.expect("body");
        received += piece.len() as u64;
        hasher.update(&piece);
    }
    let pull_secs = started.elapsed().as_secs_f64();
    assert_eq!(received, total);
    assert_eq!(hex::encode(hasher.finalize()), expected);

    let (_, peak) = server.memory().expect("memory");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{} MiB: push {:.1}s ({:.0} MiB/s), pull {:.1}s ({:.0} MiB/s); RSS baseline {} MiB, peak after push {} MiB, peak {} MiB, growth {} MiB",
        total / MIB,
        push_secs,
        total as f64 / MIB as f64 / push_secs,
        pull_secs,
        total as f64 / MIB as f64 / pull_secs,
        baseline / MIB,
        after_push_peak / MIB,
        peak / MIB,
        growth / MIB
    );
    let bound = (total / 2).min(200 * MIB);
    assert!(
        growth < bound,
        "server RSS grew by {} MiB over a {} MiB body (bound {} MiB)",
        growth / MIB,
        total / MIB,
        bound / MIB
    );
}
