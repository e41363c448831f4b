//! Garbage collection of chunks freed by overwrites and deletes: kept for a retention window
//! (and until every known mirror passed the change that freed them), then reclaimed.

mod support;

use std::time::{Duration, Instant};

use support::{bytes, TestNode};

fn chunks_of(node: &TestNode, repo: &str, path: &str) -> Vec<arca_node::digest::ChunkId> {
    let repo = arca_node::names::RepoName::parse(repo).expect("repo");
    let path = arca_node::names::ArtifactPath::parse(path).expect("path");
    let files = arca_node::formats::generic::files::Files {
        service: node.node().service.clone(),
    };
    let (_, _, blob) = files.file(&repo, &path).expect("file");
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

fn cf_has(node: &TestNode, cf: &str, id: &arca_node::digest::ChunkId) -> bool {
    let db = node.node().service.catalog.db();
    let cf = db.cf_handle(cf).expect("column family");
    db.get_cf(cf, id.as_bytes()).expect("get").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_bytes_without_an_index_entry_are_found_once_and_settled() {
    // Audit L3: a crash of a version before atomic flush could persist a chunk's bytes without
    // its index entry. Every sweep iterates the index, so such bytes were never deleted (an
    // unreferenced chunk) and such a chunk counted as missing (a referenced one).
    use arca_node::storage::chunk_store::{CF_CHUNKS, CF_CHUNK_INDEX};
    let mut node = TestNode::start().await;
    node.create_repo("files", false).await;
    let body = bytes(300_000, 7);
    assert_eq!(
        node.put("files", "kept.bin", body.clone()).await.status(),
        201
    );
    let referenced = chunks_of(&node, "files", "kept.bin")[0];
    let orphan_bytes = bytes(50_000, 8);
    let orphan = arca_node::digest::Blake3(*blake3::hash(&orphan_bytes).as_bytes());
    {
        let db = node.node().service.catalog.db();
        let chunks = db.cf_handle(CF_CHUNKS).expect("chunks");
        let index = db.cf_handle(CF_CHUNK_INDEX).expect("index");
        // What such a crash left: bytes of a chunk nothing references, and a referenced chunk
        // whose index entry is gone.
        db.put_cf(chunks, orphan.as_bytes(), &orphan_bytes)
            .expect("put");
        db.delete_cf(index, referenced.as_bytes()).expect("delete");
        db.flush_cfs_opt(&[chunks, index], &rocksdb::FlushOptions::default())
            .expect("flush");
    }
    assert!(!node
        .node()
        .service
        .chunks
        .contains(&referenced)
        .expect("contains"));
    node.restart().await;
    support::must_wait_until(
        "the unindexed bytes are settled",
        Duration::from_secs(30),
        || !cf_has(&node, CF_CHUNKS, &orphan) && cf_has(&node, CF_CHUNK_INDEX, &referenced),
    )
    .await;
    assert!(!cf_has(&node, CF_CHUNK_INDEX, &orphan));
    let read = node.get("/files/files/kept.bin").await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.bytes().await.expect("body").to_vec(), body);
    assert_eq!(node.metric("arca_gc_unindexed_scan_done").await, 1.0);
}
