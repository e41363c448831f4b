//! Registry changes go to the change log like every other change, and replay on a fresh node
//! from the commands and the chunks they name alone: what inter-region replication will do.

mod support;

use arca_node::metadata::model::Outcome;
use serde_json::{json, Value};
use support::oci::*;
use support::TestNode;

const NAME: &str = "containers/team/app";

#[tokio::test]
async fn registry_changes_replay_on_a_fresh_node_from_commands_and_chunks() {
    let primary = TestNode::start().await;
    primary.create_oci_repo("containers", false).await;
    let image = Image::new(1, &[90_000, 30_000]);
    image.push(&primary, NAME, "1.0").await;
    let next = Image::new(2, &[50_000]);
    next.push(&primary, NAME, "1.1").await;
    // A tag that moves, a referrer, a mount, and deletions.
    assert_eq!(
        put_manifest(&primary, NAME, "latest", OCI_MANIFEST, &image.manifest)
            .await
            .status(),
        201
    );
    assert_eq!(
        put_manifest(&primary, NAME, "latest", OCI_MANIFEST, &next.manifest)
            .await
            .status(),
        201
    );
    let empty = b"{}".to_vec();
    push_blob(&primary, NAME, &empty).await;
    let signature = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": descriptor(EMPTY_JSON, &empty), "layers": [descriptor(EMPTY_JSON, &empty)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image.digest(), "size": image.manifest.len()}}))
    .expect("json");
    assert_eq!(
        put_manifest(
            &primary,
            NAME,
            &digest(&signature),
            OCI_MANIFEST,
            &signature
        )
        .await
        .status(),
        201
    );
    let mount = primary
        .http
        .post(primary.url(&format!(
            "/v2/containers/other/blobs/uploads/?mount={}&from={NAME}",
            digest(&image.layers[0])
        )))
        .send()
        .await
        .expect("mount");
    assert_eq!(mount.status(), 201);
    for path in [
        format!("/v2/{NAME}/manifests/1.1"),
        format!("/v2/{NAME}/blobs/{}", digest(&image.layers[1])),
    ] {
        let response = primary
            .http
            .delete(primary.url(&path))
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), 202, "{path}");
    }

    // Every change is in the log, in order; no-ops are not.
    let changes = primary
        .node()
        .service
        .catalog
        .changes_after(0, 10_000)
        .expect("changes");
    let oci_changes = changes
        .iter()
        .filter(|c| {
            c.command
                .envelope()
                .is_some_and(|(format, _, _)| format == *"oci")
        })
        .count();
    // 3 + 2 + 1 blob links, 2 + 1 manifests, 2 tag pushes onto existing manifests, 1 mount,
    // 1 tag deletion, 1 unlink.
    assert_eq!(oci_changes, 14, "{changes:#?}");
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (1..=changes.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );

    // Replay on a fresh node: copy the chunks each command names, then apply the command.
    let mirror = TestNode::start().await;
    let source = &primary.node().service.chunks;
    let target = &mirror.node().service.chunks;
    for change in &changes {
        // Accounts and audit records are not registry changes (and the fresh node has its
        // own first account).
        if change
            .command
            .envelope()
            .is_some_and(|(format, _, _)| format == *"auth" || format == *"audit")
        {
            continue;
        }
        let blobs = primary
            .node()
            .service
            .formats
            .blobs(&change.command)
            .expect("blobs");
        for blob in blobs {
            for chunk in &blob.chunks {
                if !target.contains(&chunk.id).expect("contains") {
                    let data = source.read(&chunk.id).expect("chunk on the primary");
                    target.put(&chunk.id, &data).expect("put chunk");
                }
            }
        }
        let outcome = mirror
            .node()
            .service
            .propose(&change.command)
            .await
            .expect("apply on the mirror");
        let changed = match &outcome {
            Outcome::Format {
                format, changed, ..
            } if format == "oci" => *changed,
            Outcome::RepoCreated => true,
            other => panic!("seq {}: unexpected outcome {other:?}", change.seq),
        };
        assert!(
            changed,
            "seq {} changed the mirror too: {outcome:?}",
            change.seq
        );
    }

    // The mirror serves what the primary serves.
    for path in [
        format!("/v2/{NAME}/tags/list"),
        format!("/v2/{NAME}/referrers/{}", image.digest()),
        "/v2/_catalog".to_string(),
        "/api/v1/repos/containers".to_string(),
    ] {
        // Times come from the commands, so even creation times agree.
        let on_primary: Value = primary.json(&path).await;
        let on_mirror: Value = mirror.json(&path).await;
        assert_eq!(on_mirror, on_primary, "{path}");
    }
    for reference in ["1.0", "latest"] {
        let path = format!("/v2/{NAME}/manifests/{reference}");
        let expected = primary.get(&path).await.bytes().await.expect("body");
        let got = mirror.get(&path).await.bytes().await.expect("body");
        assert_eq!(got, expected, "{reference}");
    }
    let layer = format!("/v2/containers/other/blobs/{}", digest(&image.layers[0]));
    assert_eq!(
        mirror
            .get(&layer)
            .await
            .bytes()
            .await
            .expect("body")
            .as_ref(),
        image.layers[0].as_slice()
    );
    assert_eq!(
        primary
            .node()
            .service
            .catalog
            .global_stats()
            .expect("stats"),
        mirror.node().service.catalog.global_stats().expect("stats")
    );
}
