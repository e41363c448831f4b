//! Generic remote repositories against a real upstream (a second Arca node) behind a counting,
//! misbehaving proxy: cold and warm pulls, single-flight, resume after a cut, errors never
//! cached, negative cache, revalidation, stale-if-error with the upstream stopped, verification
//! against the upstream's checksum, and writes refused.

mod support;

use std::time::Duration;

use support::upstream_proxy::{cache_header, concurrent_gets, Mode, UpstreamProxy};
use support::{bytes, error_code, sha256_hex, TestNode};

const UPSTREAM_REPO: &str = "releases";
const CACHE: &str = "cache";

/// An upstream node with a private generic repository, a proxy in front of it, and a cache
/// node with a remote repository of it (signed in with the upstream's admin account).
async fn setup(ttl_secs: u64) -> (TestNode, UpstreamProxy, TestNode) {
    let upstream = TestNode::start().await;
    upstream.create_repo(UPSTREAM_REPO, false).await;
    let proxy = UpstreamProxy::start(&upstream.base).await;
    let cache = TestNode::start().await;
    let response = cache
        .http
        .post(cache.url("/api/v1/repos"))
        .json(&serde_json::json!({
            "name": CACHE,
            "format": "generic",
            "remote": proxy.url(&format!("/files/{UPSTREAM_REPO}/")),
            "upstream_username": "admin",
            "upstream_password": upstream.admin_password,
            "metadata_ttl_secs": ttl_secs,
            "negative_ttl_secs": 30,
        }))
        .send()
        .await
        .expect("create remote");
    assert_eq!(response.status(), 201);
    let view: serde_json::Value = response.json().await.expect("json");
    assert_eq!(view["kind"], "remote");
    assert_eq!(view["remote"]["password_set"], true);
    assert!(
        !view.to_string().contains(&upstream.admin_password),
        "the upstream password is never shown"
    );
    (upstream, proxy, cache)
}

async fn put_upstream(upstream: &TestNode, path: &str, data: &[u8]) {
    let response = upstream.put(UPSTREAM_REPO, path, data.to_vec()).await;
    assert!(response.status().is_success(), "{}", response.status());
}

async fn get(cache: &TestNode, path: &str) -> reqwest::Response {
    cache.get(&format!("/files/{CACHE}/{path}")).await
}

#[tokio::test]
async fn cold_then_warm_pulls_and_the_upstream_stopped() {
    let (mut upstream, proxy, cache) = setup(300).await;
    let data = bytes(300_000, 1);
    put_upstream(&upstream, "tools/cli v1.bin", &data).await;

    let cold = get(&cache, "tools/cli%20v1.bin").await;
    assert_eq!(cold.status(), 200);
    assert_eq!(cache_header(&cold), "miss");
    assert_eq!(
        cold.headers()["x-checksum-sha256"]
            .to_str()
            .expect("header"),
        sha256_hex(&data)
    );
    assert_eq!(cold.bytes().await.expect("body").as_ref(), &data[..]);

    let warm = get(&cache, "tools/cli%20v1.bin").await;
    assert_eq!(warm.status(), 200);
    assert_eq!(cache_header(&warm), "hit");
    assert_eq!(warm.bytes().await.expect("body").as_ref(), &data[..]);
    assert_eq!(
        proxy.count("GET", "cli%20v1.bin"),
        1,
        "one upstream download"
    );

    // The cached file is an ordinary file of the repository.
    let listed = cache.json(&format!("/api/v1/repos/{CACHE}/files")).await;
    assert_eq!(listed["files"][0]["path"], "tools/cli v1.bin");

    upstream.stop().await;
    let offline = get(&cache, "tools/cli%20v1.bin").await;
    assert_eq!(offline.status(), 200, "a cached file needs no upstream");
    assert_eq!(offline.bytes().await.expect("body").as_ref(), &data[..]);
    let missing = get(&cache, "tools/other.bin").await;
    let (status, code) = error_code(missing).await;
    assert_eq!((status, code.as_str()), (502, "UPSTREAM_UNAVAILABLE"));

    // A purge removes the cached copy: with the upstream down, the file is gone.
    let purge = cache
        .http
        .delete(cache.url(&format!("/api/v1/repos/{CACHE}/cache?path=tools/")))
        .send()
        .await
        .expect("purge");
    assert_eq!(purge.status(), 200);
    let answer: serde_json::Value = purge.json().await.expect("json");
    assert_eq!(answer["removed"], 1);
    let (status, _) = error_code(get(&cache, "tools/cli%20v1.bin").await).await;
    assert_eq!(status, 502, "purged, and the upstream is down");
}

#[tokio::test]
async fn concurrent_misses_cause_one_download() {
    let (upstream, proxy, cache) = setup(300).await;
    let data = bytes(4 << 20, 2);
    put_upstream(&upstream, "big.bin", &data).await;
    // Every client asks while the upstream is still thinking.
    proxy.set_delay(Duration::from_millis(600));
    let url = cache.url(&format!("/files/{CACHE}/big.bin"));
    for body in concurrent_gets(&cache.http, &url, 8).await {
        assert_eq!(body.as_ref(), &data[..]);
    }
    assert_eq!(proxy.count("GET", "big.bin"), 1, "single-flight");
    assert!(cache.metric("arca_remote_fill_joins_total").await >= 7.0);
}

#[tokio::test]
async fn a_cut_download_resumes_with_range() {
    let (upstream, proxy, cache) = setup(300).await;
    let data = bytes(2 << 20, 3);
    put_upstream(&upstream, "resume.bin", &data).await;
    proxy.set_mode(Mode::CutOnceAfter(700_000));
    let response = get(&cache, "resume.bin").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body").as_ref(), &data[..]);
    assert_eq!(proxy.count("GET", "resume.bin"), 2);
    let ranges = proxy.ranges("resume.bin");
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let start: u64 = ranges[0]
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .expect("an open range");
    assert!(start > 0 && start <= 700_000, "resumed at {start}");
    assert_eq!(cache_header(&get(&cache, "resume.bin").await), "hit");
}

#[tokio::test]
async fn upstream_errors_and_html_pages_are_never_cached() {
    let (upstream, proxy, cache) = setup(300).await;
    let data = bytes(10_000, 4);
    put_upstream(&upstream, "flaky.bin", &data).await;
    for mode in [
        Mode::Status(500),
        Mode::Status(429),
        Mode::Status(503),
        Mode::Html,
    ] {
        proxy.set_mode(mode);
        let (status, code) = error_code(get(&cache, "flaky.bin").await).await;
        assert_eq!(
            (status, code.as_str()),
            (502, "UPSTREAM_UNAVAILABLE"),
            "{mode:?}"
        );
    }
    proxy.set_mode(Mode::Status(401));
    let (status, _) = error_code(get(&cache, "flaky.bin").await).await;
    assert_eq!(
        status, 502,
        "refused credentials are the operator's problem, not a 404"
    );
    proxy.set_mode(Mode::Pass);
    let good = get(&cache, "flaky.bin").await;
    assert_eq!(good.status(), 200, "no failure was cached");
    assert_eq!(good.bytes().await.expect("body").as_ref(), &data[..]);
}

#[tokio::test]
async fn a_corrupted_download_stores_nothing() {
    let (upstream, proxy, cache) = setup(300).await;
    let data = bytes(100_000, 5);
    put_upstream(&upstream, "tampered.bin", &data).await;
    proxy.set_mode(Mode::Corrupt);
    let response = get(&cache, "tampered.bin").await;
    // The head went out before the last byte arrived; the body must not end cleanly.
    assert!(
        response.bytes().await.is_err(),
        "a body that failed verification ends with an error"
    );
    let listed = cache.json(&format!("/api/v1/repos/{CACHE}/files")).await;
    assert_eq!(listed["files"].as_array().map(Vec::len), Some(0));
    proxy.set_mode(Mode::Pass);
    let good = get(&cache, "tampered.bin").await;
    assert_eq!(good.bytes().await.expect("body").as_ref(), &data[..]);
}

#[tokio::test]
async fn missing_paths_are_remembered_briefly() {
    let (_upstream, proxy, cache) = setup(300).await;
    for _ in 0..3 {
        let (status, code) = error_code(get(&cache, "nope.bin").await).await;
        assert_eq!((status, code.as_str()), (404, "UPSTREAM_NOT_FOUND"));
    }
    assert_eq!(
        proxy.count("GET", "nope.bin"),
        1,
        "the negative cache answered"
    );
}

#[tokio::test]
async fn revalidation_sees_changes_and_an_outage_serves_stale() {
    let (mut upstream, proxy, cache) = setup(0).await;
    put_upstream(&upstream, "latest.txt", b"v1").await;
    assert_eq!(
        get(&cache, "latest.txt")
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        b"v1"
    );
    let again = get(&cache, "latest.txt").await;
    assert_eq!(cache_header(&again), "revalidated");
    assert_eq!(
        proxy.count("HEAD", "latest.txt"),
        1,
        "revalidated with HEAD"
    );

    put_upstream(&upstream, "latest.txt", b"v2").await;
    let changed = get(&cache, "latest.txt").await;
    assert_eq!(cache_header(&changed), "miss");
    assert_eq!(changed.bytes().await.expect("body").as_ref(), b"v2");

    upstream.stop().await;
    let stale = get(&cache, "latest.txt").await;
    assert_eq!(stale.status(), 200);
    assert_eq!(cache_header(&stale), "stale");
    assert!(stale.headers()["warning"]
        .to_str()
        .expect("warning")
        .starts_with("110"));
    assert_eq!(stale.bytes().await.expect("body").as_ref(), b"v2");
    assert!(cache.metric("arca_remote_cache_total").await >= 4.0);
}

#[tokio::test]
async fn remote_repositories_refuse_writes_and_bad_specs() {
    let (_upstream, _proxy, cache) = setup(300).await;
    let (status, code) = error_code(cache.put(CACHE, "x.bin", b"x".to_vec()).await).await;
    assert_eq!((status, code.as_str()), (405, "REMOTE_READ_ONLY"));
    let delete = cache
        .http
        .delete(cache.url(&format!("/files/{CACHE}/x.bin")))
        .send()
        .await
        .expect("delete");
    let (status, code) = error_code(delete).await;
    assert_eq!((status, code.as_str()), (405, "REMOTE_READ_ONLY"));
    for body in [
        serde_json::json!({"name": "bad1", "remote": "ftp://host/"}),
        serde_json::json!({"name": "bad2", "remote": "http://u:p@host/"}),
        serde_json::json!({"name": "bad3", "upstream_username": "x"}),
        serde_json::json!({"name": "bad4", "format": "npm", "remote": "http://127.0.0.1:1/"}),
    ] {
        let response = cache
            .http
            .post(cache.url("/api/v1/repos"))
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 400, "{body}");
    }
}
