//! Tags at scale: a manifest that CI tags on every commit (thousands of tags on one digest)
//! costs a constant amount to tag again and to read, and deleting it removes every tag.

mod support;

use support::oci::{digest, put_manifest, Image, OCI_MANIFEST};
use support::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tags_on_one_manifest_keep_its_record_small() {
    // Audit P6: the manifest record kept every tag pointing at it in a list that each tag push
    // searched, rewrote and re-serialized: O(n) per push, O(n²) bytes for n tags.
    let node = TestNode::start().await;
    node.create_oci_repo("ci", false).await;
    let image = Image::new(1, &[2048]);
    image.push(&node, "ci/app", "t0").await;
    let tags = 600;
    for i in 1..tags {
        let response = put_manifest(
            &node,
            "ci/app",
            &format!("t{i}"),
            OCI_MANIFEST,
            &image.manifest,
        )
        .await;
        assert_eq!(response.status(), 201, "tag t{i}");
    }
    let repo = arca_node::names::RepoName::parse("ci").expect("repo");
    let name = arca_node::formats::oci::names::OciName::parse("ci/app").expect("name");
    let sha = arca_node::digest::Sha256::from_hex(&sha256_of(&image.manifest)).expect("digest");
    let record = node
        .node()
        .service
        .catalog
        .oci_manifest(&repo, &name.image, &sha)
        .expect("read")
        .expect("the manifest exists");
    let encoded = arca_node::metadata::codec::encode(&record).expect("encode");
    assert!(
        encoded.len() < 2048,
        "the manifest record grew to {} bytes with {tags} tags",
        encoded.len()
    );

    // Every tag is listed, and deleting the manifest by digest removes all of them.
    let list: serde_json::Value = node.json("/v2/ci/app/tags/list?n=10000").await;
    assert_eq!(list["tags"].as_array().map(Vec::len), Some(tags));
    let deleted = node
        .http
        .delete(node.url(&format!("/v2/ci/app/manifests/{}", digest(&image.manifest))))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 202);
    for i in [0, tags / 2, tags - 1] {
        let response = node.get(&format!("/v2/ci/app/manifests/t{i}")).await;
        assert_eq!(response.status(), 404, "tag t{i} is gone with its manifest");
    }
}

fn sha256_of(data: &[u8]) -> String {
    support::sha256_hex(data)
}
