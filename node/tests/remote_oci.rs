//! OCI remote repositories against a real upstream registry (a second Arca node, which makes
//! the cache sign in through its token flow) behind a counting proxy: single-flight blob
//! fills, resume after a cut, manifests cached byte for byte, tags revalidated, errors never
//! cached, and pushes refused.

mod support;

use std::time::Duration;

use support::oci::{digest, oci_error, Image, OCI_MANIFEST};
use support::upstream_proxy::{cache_header, concurrent_gets, Mode, UpstreamProxy};
use support::TestNode;

/// An upstream node with image `src/app:v1`, a proxy in front of it, and a cache node whose
/// remote repository `hub` mirrors it (so `hub/src/app` is the upstream's `src/app`).
async fn setup(image: &Image, ttl_secs: u64) -> (TestNode, UpstreamProxy, TestNode) {
    let upstream = TestNode::start().await;
    upstream.create_oci_repo("src", false).await;
    image.push(&upstream, "src/app", "v1").await;
    let proxy = UpstreamProxy::start(&upstream.base).await;
    let cache = TestNode::start().await;
    let response = cache
        .http
        .post(cache.url("/api/v1/repos"))
        .json(&serde_json::json!({
            "name": "hub",
            "format": "oci",
            "remote": proxy.url(""),
            "upstream_username": "admin",
            "upstream_password": upstream.admin_password,
            "metadata_ttl_secs": ttl_secs,
        }))
        .send()
        .await
        .expect("create remote");
    assert_eq!(response.status(), 201);
    (upstream, proxy, cache)
}

async fn get_manifest(cache: &TestNode, reference: &str) -> reqwest::Response {
    cache
        .http
        .get(cache.url(&format!("/v2/hub/src/app/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get manifest")
}

#[tokio::test]
async fn concurrent_pulls_of_an_uncached_layer_download_it_once() {
    let image = Image::new(1, &[3 << 20, 50_000]);
    let (_upstream, proxy, cache) = setup(&image, 300).await;
    let manifest = get_manifest(&cache, "v1").await;
    assert_eq!(manifest.status(), 200);
    assert_eq!(cache_header(&manifest), "miss");
    assert_eq!(
        manifest.bytes().await.expect("body").as_ref(),
        &image.manifest[..],
        "the manifest is served byte for byte"
    );
    let layer = digest(&image.layers[0]);
    proxy.set_delay(Duration::from_millis(500));
    let url = cache.url(&format!("/v2/hub/src/app/blobs/{layer}"));
    for body in concurrent_gets(&cache.http, &url, 6).await {
        assert_eq!(body.as_ref(), &image.layers[0][..]);
    }
    proxy.set_delay(Duration::ZERO);
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{layer}")),
        1,
        "single-flight"
    );
    // Cached: served by digest with no upstream call.
    let again = cache
        .http
        .get(cache.url(&format!("/v2/hub/src/app/blobs/{layer}")))
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.bytes().await.expect("body").as_ref(),
        &image.layers[0][..]
    );
    assert_eq!(proxy.count("GET", &format!("/blobs/{layer}")), 1);
    let by_tag = get_manifest(&cache, "v1").await;
    assert_eq!(cache_header(&by_tag), "hit", "within the TTL");
}

#[tokio::test]
async fn a_cut_layer_resumes_and_errors_are_not_cached() {
    let image = Image::new(2, &[2 << 20]);
    let (_upstream, proxy, cache) = setup(&image, 300).await;
    let layer = digest(&image.layers[0]);
    let url = cache.url(&format!("/v2/hub/src/app/blobs/{layer}"));
    for mode in [Mode::Status(500), Mode::Status(429), Mode::Html] {
        proxy.set_mode(mode);
        let (status, code) = oci_error(cache.http.get(&url).send().await.expect("get")).await;
        assert_eq!((status, code.as_str()), (502, "UNAVAILABLE"), "{mode:?}");
    }
    proxy.set_mode(Mode::CutOnceAfter(900_000));
    let response = cache.http.get(&url).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        &image.layers[0][..]
    );
    assert_eq!(
        proxy.ranges(&format!("/blobs/{layer}")).len(),
        1,
        "resumed with Range"
    );
    // An unknown digest is 404 BLOB_UNKNOWN, asked once within the negative TTL.
    let unknown = format!("sha256:{}", "ab".repeat(32));
    for _ in 0..2 {
        let response = cache
            .http
            .get(cache.url(&format!("/v2/hub/src/app/blobs/{unknown}")))
            .send()
            .await
            .expect("get");
        let (status, code) = oci_error(response).await;
        assert_eq!((status, code.as_str()), (404, "BLOB_UNKNOWN"));
    }
    assert_eq!(proxy.count("GET", &unknown), 1);
}

#[tokio::test]
async fn tags_revalidate_with_head_and_survive_an_outage() {
    let image = Image::new(3, &[10_000]);
    let (mut upstream, proxy, cache) = setup(&image, 0).await;
    assert_eq!(get_manifest(&cache, "v1").await.status(), 200);
    let again = get_manifest(&cache, "v1").await;
    assert_eq!(cache_header(&again), "revalidated");
    assert_eq!(proxy.count("HEAD", "/manifests/v1"), 1);
    assert_eq!(
        proxy.count("GET", "/manifests/v1"),
        1,
        "HEAD, not GET, revalidates"
    );

    let moved = Image::new(4, &[12_000]);
    moved.push(&upstream, "src/app", "v1").await;
    let now = get_manifest(&cache, "v1").await;
    assert_eq!(
        now.bytes().await.expect("body").as_ref(),
        &moved.manifest[..]
    );

    upstream.stop().await;
    let stale = get_manifest(&cache, "v1").await;
    assert_eq!(stale.status(), 200);
    assert_eq!(cache_header(&stale), "stale");
    assert_eq!(
        stale.bytes().await.expect("body").as_ref(),
        &moved.manifest[..]
    );
    let by_digest = get_manifest(&cache, &image.digest()).await;
    assert_eq!(by_digest.status(), 200, "by digest needs no upstream");

    // Pushes are refused with the OCI error body.
    let push = cache
        .http
        .post(cache.url("/v2/hub/src/app/blobs/uploads/"))
        .send()
        .await
        .expect("post");
    let (status, code) = oci_error(push).await;
    assert_eq!((status, code.as_str()), (405, "DENIED"));
}
