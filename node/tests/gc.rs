//! Garbage collection of chunks freed by overwrites and deletes: kept for a retention window
//! (and until every known mirror passed the change that freed them), then reclaimed.

mod support;

use std::time::{Duration, Instant};

use support::{bytes, TestNode};

fn chunks_of(node: &TestNode, repo: &str, path: &str) -> Vec<arca_node::digest::ChunkId> {
    let repo = arca_node::names::RepoName::parse(repo).expect("repo");
    let path = arca_node::names::ArtifactPath::parse(path).expect("path");
    let (_, _, blob) = node.node().service.file(&repo, &path).expect("file");
    blob.descriptor.chunks.iter().map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_freed_by_an_overwrite_are_kept_for_the_retention_window_then_reclaimed() {
    // Audit A4: freed chunks were deleted the moment an overwrite dropped their last reference,
    // cutting short downloads of the old version and sending lagging mirrors to a snapshot.
    let node = TestNode::start_with_env(&[
        ("GC__FREED_RETENTION_SECS", "2"),
        ("GC__RELEASE_INTERVAL_SECS", "1"),
        ("GC__RELEASE_START_DELAY_SECS", "0"),
    ])
    .await;
    node.create_repo("files", false).await;
    assert_eq!(
        node.put("files", "latest.bin", bytes(200_000, 1))
            .await
            .status(),
        201
    );
    let old = chunks_of(&node, "files", "latest.bin");
    assert_eq!(
        node.put("files", "latest.bin", bytes(200_000, 2))
            .await
            .status(),
        201
    );
    // A window, not a wait for a condition: what is checked is that nothing deletes the freed
    // chunks in it (before the fix, the overwrite's apply did at once).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = &node.node().service.chunks;
    for id in &old {
        assert!(
            store.contains(id).expect("contains"),
            "a freed chunk went at once"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.iter().any(|id| store.contains(id).unwrap_or(true)) {
        assert!(
            Instant::now() < deadline,
            "freed chunks were never reclaimed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
