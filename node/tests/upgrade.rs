//! A data directory written by an earlier release opens and serves every artifact.
//!
//! `tests/data/data-935e75d.tar.gz` was written by commit 935e75d, the last one before
//! repository changes moved into the versioned format envelope (`Command::Format`), with
//! `scripts/make-upgrade-fixture.sh`. Its Raft log and change log hold the old command
//! encodings (`put_artifact`, `delete_artifact`, `oci`): they must decode, and the state they
//! built must serve, after the upgrade.

mod support;

use std::process::Command as Process;

use arca_node::metadata::catalog::Catalog;
use arca_node::metadata::model::Command;
use support::oci::{digest, Image};
use support::{sha256_hex, TestNode};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/data-935e75d.tar.gz"
);

/// What the fixture holds (see the script that wrote it).
const APP_SHA256: &str = "549dbaa628ad17189dd44a42ce08aff754e8c471f6dac9b5401c21e9ae71690c";
const RELEASE_SHA256: &str = "29e9e219cd3225c3aa0a92727b5a5672de1e54a1c0635a272f6cd448ba0bdefa";

fn unpack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Process::new("tar")
        .arg("-xzf")
        .arg(FIXTURE)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "unpack {FIXTURE}");
    dir
}

async fn body_sha256(node: &TestNode, path: &str) -> (u16, String) {
    let response = node.get(path).await;
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    (status, sha256_hex(&body))
}

#[tokio::test]
async fn a_data_directory_of_the_previous_release_serves_every_artifact_and_takes_new_writes() {
    let mut node = TestNode::start_in(unpack(), |_| {}).await;

    // Generic files: the overwritten version, the immutable repository, the deleted path.
    assert_eq!(
        body_sha256(&node, "/files/builds/app/1.0/app.bin").await,
        (200, APP_SHA256.to_string())
    );
    assert_eq!(
        body_sha256(&node, "/files/releases/v1/b.bin").await,
        (200, RELEASE_SHA256.to_string())
    );
    assert_eq!(
        node.get("/files/builds/app/2.0/gone.bin").await.status(),
        404
    );
    let builds = node.json("/api/v1/repos/builds").await;
    assert_eq!(builds["artifacts"], 1, "{builds}");

    // The OCI image: both remaining tags, the manifest's blobs, the deleted tag gone.
    let manifest = node.get("/v2/containers/team/app/manifests/1.0").await;
    assert_eq!(manifest.status(), 200);
    let manifest_digest = manifest.headers()["docker-content-digest"]
        .to_str()
        .expect("digest header")
        .to_string();
    let manifest_bytes = manifest.bytes().await.expect("manifest");
    assert_eq!(digest(&manifest_bytes), manifest_digest);
    let latest = node.get("/v2/containers/team/app/manifests/latest").await;
    assert_eq!(latest.status(), 200);
    assert_eq!(
        latest.headers()["docker-content-digest"],
        manifest_digest.as_str()
    );
    assert_eq!(
        node.get("/v2/containers/team/app/manifests/old")
            .await
            .status(),
        404
    );
    let tags = node.json("/v2/containers/team/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["1.0", "latest"]), "{tags}");
    let parsed: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("json");
    let mut blobs = vec![parsed["config"]["digest"]
        .as_str()
        .expect("config")
        .to_string()];
    blobs.extend(
        parsed["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("layer digest").to_string()),
    );
    for blob in &blobs {
        let response = node
            .get(&format!("/v2/containers/team/app/blobs/{blob}"))
            .await;
        assert_eq!(response.status(), 200, "blob {blob}");
        assert_eq!(&digest(&response.bytes().await.expect("blob")), blob);
    }

    // New writes of both formats land next to the old ones.
    assert_eq!(
        node.put("builds", "app/3.0/new.bin", support::bytes(9_000, 7))
            .await
            .status(),
        201
    );
    Image::new(11, &[5_000])
        .push(&node, "containers/team/app", "2.0")
        .await;

    // Every change-log entry, old and new, decodes; the old ones are the encodings of the
    // previous release.
    node.stop().await;
    let db = arca_node::db::open_db(&node.config.data_dir.join("db")).expect("open db");
    let catalog = Catalog::new(db);
    let changes = catalog
        .changes_after(0, 1_000)
        .expect("decode the change log");
    let head = catalog.changelog_head().expect("head");
    assert_eq!(changes.len() as u64, head.last_seq, "every entry decodes");
    let kinds: Vec<&str> = changes.iter().map(|c| c.command.kind()).collect();
    assert!(kinds.len() >= 12, "{kinds:?}");
    assert!(
        changes
            .iter()
            .all(|c| !matches!(c.command, Command::Replicated { .. })),
        "{kinds:?}"
    );
    drop(catalog);

    // And the upgraded directory opens again.
    node.restart().await;
    assert_eq!(
        body_sha256(&node, "/files/builds/app/1.0/app.bin").await,
        (200, APP_SHA256.to_string())
    );
    assert_eq!(
        node.get("/v2/containers/team/app/manifests/2.0")
            .await
            .status(),
        200
    );
}
