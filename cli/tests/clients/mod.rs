//! What the package clients' tests share: running `arca`, checking a client's exit, and the
//! region shape they publish and resolve in (a primary region and a mirror that follows it).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arca_chaos::{RegionOptions, RegionReplication};

pub const ARCA: &str = env!("CARGO_BIN_EXE_arca");

/// A client's stdout and stderr, together.
pub fn text_of(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The client's output; fails the test with it when the client failed.
pub fn must_ok(what: &str, output: Output) -> String {
    let text = text_of(&output);
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// Runs one HTTP exchange from blocking test code.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// An access token (a PAT, what a client's user keeps) with `scopes`, issued with `session`.
pub fn access_token(base: &str, session: &str, scopes: &[&str]) -> String {
    block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/v1/tokens"))
            .bearer_auth(session)
            .json(&serde_json::json!({"scopes": scopes, "description": "client test"}))
            .send()
            .await
            .expect("create token");
        assert!(response.status().is_success(), "{}", response.status());
        let body: serde_json::Value = response.json().await.expect("json");
        body["token"].as_str().expect("token").to_string()
    })
}

/// Checks `done` every 100 ms until it holds (`true`) or `timeout` passes (`false`).
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `arca repo create NAME --format FORMAT` against `base`.
pub fn create_repo(base: &str, token: &str, name: &str, format: &str) {
    must_ok(
        "arca repo create",
        Command::new(ARCA)
            .args([
                "repo", "create", name, "--format", format, "--output", "json",
            ])
            .env("ARCA_SERVER", base)
            .env("ARCA_TOKEN", token)
            .output()
            .expect("run arca"),
    );
}

/// `arca ARGS…` against `base`, which must succeed.
pub fn arca(base: &str, token: &str, args: &[&str]) -> String {
    must_ok(
        &format!("arca {}", args.join(" ")),
        Command::new(ARCA)
            .args(args)
            .env("ARCA_SERVER", base)
            .env("ARCA_TOKEN", token)
            .output()
            .expect("run arca"),
    )
}

/// A region of `nodes` named `name` under `root`: the primary when `primary` is empty,
/// otherwise a mirror of those replication addresses. Probes and read barriers are quick so
/// a test sees replication and leadership within seconds.
pub fn region_options(root: &Path, name: &str, nodes: u64, primary: Vec<String>) -> RegionOptions {
    let mut options = RegionOptions::new(ARCA, root.join(name), nodes);
    options.region = name.into();
    options.env = vec![
        ("ARCA_REPLICATION__PROBE_INTERVAL_MS".into(), "300".into()),
        (
            "ARCA_CLUSTER__READ_BARRIER_TIMEOUT_MS".into(),
            "2000".into(),
        ),
    ];
    options.replication = Some(RegionReplication {
        tls_dir: root.join("tls"),
        primary,
        ..Default::default()
    });
    options
}
