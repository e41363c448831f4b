//! The state machine's reference counts and running totals: random sequences of repository
//! writes of both formats (generic files, OCI blob links sharing one blob pool) leave every
//! stored count equal to a recount from the artifacts and links themselves, and a
//! counter that a command would take below zero refuses that command (the same way on every
//! node) instead of panicking or wrapping.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arca_node::digest::{Blake3, Sha256};
use arca_node::formats::generic::model::GenericCommand;
use arca_node::formats::oci::model::{
    BlobLink, ImageRecord, ManifestInfo, ManifestRecord, OciCommand, OciOutcome,
};
use arca_node::formats::oci::names::Tag;
use arca_node::metadata::codec::encode;
use arca_node::metadata::keys::{self, ChunkRefCount};
use arca_node::metadata::model::{
    Artifact, BlobDescriptor, BlobRecord, ChunkRef, Command, GlobalStats, Outcome, RepoStats,
    Repository,
};
use arca_node::names::{ArtifactPath, RepoName};
use proptest::prelude::*;
use support::TestNode;

async fn commit(node: &TestNode, command: &Command) -> Outcome {
    let applied = tokio::time::timeout(
        Duration::from_secs(10),
        node.node()
            .service
            .region
            .raft
            .write(encode(command).expect("encode")),
    )
    .await
    .expect("the command was applied within 10 s (a panic in apply stops Raft)")
    .expect("commit");
    let outcome: Outcome = rmp_serde::from_slice(&applied.response).expect("outcome");
    // A generic command's answer is the format's own outcome, which encodes exactly as the
    // core's outcomes of before the envelope: read it as one, so both encodings of a command
    // are checked against the same expectations.
    match outcome.format_payload("generic") {
        Some(payload) => rmp_serde::from_slice(&payload).expect("generic outcome"),
        None => outcome,
    }
}

fn repo_name(n: u8) -> RepoName {
    RepoName::parse(&format!("repo-{n}")).expect("repo")
}

fn path(n: u8) -> ArtifactPath {
    ArtifactPath::parse(&format!("dir/file-{n}.bin")).expect("path")
}

fn chunk_id(n: u8) -> Blake3 {
    Blake3::of(&[n, 0xc4])
}

/// Blob `n` of a pool of four, built from a pool of five chunks so that blobs share chunks and
/// a blob repeats one.
fn blob(n: u8) -> BlobDescriptor {
    let layouts: [&[u8]; 4] = [&[0, 1], &[1, 2, 2], &[3], &[0, 3, 4, 0]];
    let chunks: Vec<ChunkRef> = layouts[usize::from(n % 4)]
        .iter()
        .map(|&c| ChunkRef {
            id: chunk_id(c),
            len: 1000 + u32::from(c),
        })
        .collect();
    BlobDescriptor {
        blake3: Blake3::of(&[n % 4, 0xb1]),
        sha256: Sha256(*Blake3::of(&[n % 4, 0x5a]).as_bytes()),
        size: chunks.iter().map(|c| u64::from(c.len)).sum(),
        chunks,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        repo: u8,
        immutable: bool,
    },
    Put {
        repo: u8,
        path: u8,
        blob: u8,
    },
    Delete {
        repo: u8,
        path: u8,
    },
    /// Creates the `oci` repository [`IMAGES`].
    CreateImages,
    /// Links blob `blob` into image `image` of [`IMAGES`] (an OCI blob upload).
    Link {
        image: u8,
        blob: u8,
    },
    /// Unlinks it (an OCI blob delete).
    Unlink {
        image: u8,
        blob: u8,
    },
}

/// The `oci` repository the registry operations write: its blob links share the blob pool
/// with the generic repositories, so both formats' references meet in the same counts.
const IMAGES: &str = "images";

fn image(n: u8) -> arca_node::formats::oci::names::ImageName {
    arca_node::formats::oci::names::ImageName::parse(&format!("team/img-{n}")).expect("image")
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3u8, any::<bool>()).prop_map(|(repo, immutable)| Op::Create { repo, immutable }),
        6 => (0..3u8, 0..4u8, 0..4u8).prop_map(|(repo, path, blob)| Op::Put { repo, path, blob }),
        3 => (0..3u8, 0..4u8).prop_map(|(repo, path)| Op::Delete { repo, path }),
        1 => Just(Op::CreateImages),
        3 => (0..2u8, 0..4u8).prop_map(|(image, blob)| Op::Link { image, blob }),
        2 => (0..2u8, 0..4u8).prop_map(|(image, blob)| Op::Unlink { image, blob }),
    ]
}

/// A format's version 1 `command` in the envelope, or (`legacy`) as nodes before the envelope
/// encoded it.
fn in_envelope<C: serde::Serialize>(
    format: arca_node::metadata::model::FormatName,
    command: &C,
    legacy: bool,
) -> Command {
    let envelope = Command::format(format, 1, rmp_serde::to_vec_named(command).expect("encode"));
    if legacy {
        envelope.legacy_form().expect("a legacy form")
    } else {
        envelope
    }
}

fn command(op: &Op, at_ms: i64) -> Command {
    encoded(op, at_ms, false)
}

/// The command for `op`: in the format envelope, or (`legacy`) as nodes before the envelope
/// encoded it.
fn encoded(op: &Op, at_ms: i64, legacy: bool) -> Command {
    let generic =
        |command: GenericCommand| in_envelope(arca_node::formats::generic::NAME, &command, legacy);
    let oci = |command: OciCommand| in_envelope(arca_node::formats::oci::NAME, &command, legacy);
    match *op {
        Op::Create { repo, immutable } => Command::CreateRepo {
            repo: Repository {
                name: repo_name(repo),
                format: arca_node::formats::generic::NAME,
                immutable,
                created_at_ms: at_ms,
                sync_replication: false,
                remote: None,
            },
        },
        Op::Put {
            repo,
            path: p,
            blob: b,
        } => generic(GenericCommand::PutArtifact {
            repo: repo_name(repo),
            path: path(p),
            blob: blob(b),
            at_ms,
        }),
        Op::Delete { repo, path: p } => generic(GenericCommand::DeleteArtifact {
            repo: repo_name(repo),
            path: path(p),
            at_ms,
        }),
        Op::CreateImages => Command::CreateRepo {
            repo: Repository {
                name: RepoName::parse(IMAGES).expect("repo"),
                format: arca_node::formats::oci::NAME,
                immutable: false,
                created_at_ms: at_ms,
                sync_replication: false,
                remote: None,
            },
        },
        Op::Link { image: i, blob: b } => oci(OciCommand::LinkBlob {
            repo: RepoName::parse(IMAGES).expect("repo"),
            image: image(i),
            blob: blob(b),
            at_ms,
        }),
        Op::Unlink { image: i, blob: b } => oci(OciCommand::UnlinkBlob {
            repo: RepoName::parse(IMAGES).expect("repo"),
            image: image(i),
            digest: blob(b).sha256,
            at_ms,
        }),
    }
}

/// What the operations leave, by the rules of generic repositories: per repository whether it
/// is immutable, and its paths' blobs.
fn model(ops: &[Op]) -> BTreeMap<u8, (bool, BTreeMap<u8, u8>)> {
    let mut repos: BTreeMap<u8, (bool, BTreeMap<u8, u8>)> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Create { repo, immutable } => {
                repos.entry(repo).or_insert((immutable, BTreeMap::new()));
            }
            Op::Put { repo, path, blob } => {
                if let Some((immutable, paths)) = repos.get_mut(&repo) {
                    match paths.get(&path) {
                        Some(old) if *immutable && *old % 4 != blob % 4 => {}
                        _ => {
                            paths.insert(path, blob % 4);
                        }
                    }
                }
            }
            Op::Delete { repo, path } => {
                if let Some((false, paths)) = repos.get_mut(&repo) {
                    paths.remove(&path);
                }
            }
            // The registry's operations touch only the `oci` repository.
            Op::CreateImages | Op::Link { .. } | Op::Unlink { .. } => {}
        }
    }
    repos
}

/// Every key of the state machine under `prefix`, with its value.
fn pairs(node: &TestNode, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = node.node().service.catalog.db();
    let cf = db
        .cf_handle(arca_raft::storage::CF_STATE_MACHINE)
        .expect("sm");
    db.prefix_iterator_cf(cf, prefix)
        .map(|item| item.expect("read"))
        .take_while(|(key, _)| key.starts_with(prefix))
        .map(|(key, value)| (key.to_vec(), value.to_vec()))
        .collect()
}

/// `{prefix}{repo}/{32-byte id}` split into the repository and the id.
fn repo_and_id(key: &[u8], prefix: &[u8]) -> (String, Blake3) {
    let rest = &key[prefix.len()..];
    let slash = rest.iter().position(|b| *b == b'/').expect("repo/id");
    (
        String::from_utf8(rest[..slash].to_vec()).expect("utf-8"),
        Blake3::from_slice(&rest[slash + 1..]).expect("id"),
    )
}

/// Recounts every reference count and total from the artifacts and compares it with what the
/// state machine stored.
fn check_counts(node: &TestNode) {
    let artifacts: Vec<Artifact> = pairs(node, b"a/")
        .into_iter()
        .map(|(_, v)| rmp_serde::from_slice(&v).expect("artifact"))
        .collect();
    let blobs: BTreeMap<Blake3, BlobRecord> = pairs(node, b"b/")
        .into_iter()
        .map(|(k, v)| {
            let record: BlobRecord = rmp_serde::from_slice(&v).expect("blob");
            assert_eq!(k, keys::blob(&record.descriptor.blake3));
            (record.descriptor.blake3, record)
        })
        .collect();
    // Blob references: one per artifact.
    let mut blob_refs: BTreeMap<Blake3, u64> = BTreeMap::new();
    let mut repo_blob: BTreeMap<(String, Blake3), u64> = BTreeMap::new();
    let mut repo_stats: BTreeMap<String, RepoStats> = BTreeMap::new();
    for artifact in &artifacts {
        *blob_refs.entry(artifact.blob).or_default() += 1;
        *repo_blob
            .entry((artifact.repo.to_string(), artifact.blob))
            .or_default() += 1;
        let stats = repo_stats.entry(artifact.repo.to_string()).or_default();
        stats.artifacts += 1;
        stats.logical_bytes += artifact.size;
    }
    // An OCI blob link holds one reference on its blob and counts its size (not an artifact).
    let mut image_links: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut registry_bytes = 0;
    for (key, value) in pairs(node, b"ob/") {
        let link: BlobLink = rmp_serde::from_slice(&value).expect("blob link");
        let rest = &key[3..];
        let slash = rest.iter().position(|b| *b == b'/').expect("repo/");
        let repo = String::from_utf8(rest[..slash].to_vec()).expect("utf-8");
        let colon = rest.iter().position(|b| *b == b':').expect("image:");
        *image_links
            .entry([b"oi/".as_slice(), &rest[..colon]].concat())
            .or_default() += 1;
        *blob_refs.entry(link.blob).or_default() += 1;
        *repo_blob.entry((repo.clone(), link.blob)).or_default() += 1;
        repo_stats.entry(repo).or_default().logical_bytes += link.size;
        registry_bytes += link.size;
    }
    // A manifest holds one reference on the blob of its bytes and one on each blob it
    // references; it counts as an artifact of its size.
    let mut manifests = 0u64;
    for (key, value) in pairs(node, b"om/") {
        let record: ManifestRecord = rmp_serde::from_slice(&value).expect("manifest record");
        let rest = &key[3..];
        let slash = rest.iter().position(|b| *b == b'/').expect("repo/");
        let repo = String::from_utf8(rest[..slash].to_vec()).expect("utf-8");
        for blob in std::iter::once(&record.blob).chain(&record.references) {
            *blob_refs.entry(*blob).or_default() += 1;
            *repo_blob.entry((repo.clone(), *blob)).or_default() += 1;
        }
        let stats = repo_stats.entry(repo).or_default();
        stats.artifacts += 1;
        stats.logical_bytes += record.size;
        registry_bytes += record.size;
        manifests += 1;
    }
    // An image record exists while the image holds something, and counts its links.
    let images: BTreeMap<Vec<u8>, u64> = pairs(node, b"oi/")
        .into_iter()
        .map(|(k, v)| {
            let record: ImageRecord = rmp_serde::from_slice(&v).expect("image record");
            (k, record.blobs)
        })
        .collect();
    assert_eq!(images, image_links, "image records");
    let stored_refs: BTreeMap<Blake3, u64> = blobs
        .iter()
        .map(|(id, record)| (*id, record.refs))
        .collect();
    assert_eq!(stored_refs, blob_refs, "blob reference counts");
    // Chunk references: one per distinct chunk of each live blob; per repository, one per
    // distinct chunk of each blob the repository uses.
    let distinct = |id: &Blake3| -> BTreeSet<(Blake3, u32)> {
        blobs[id]
            .descriptor
            .chunks
            .iter()
            .map(|c| (c.id, c.len))
            .collect()
    };
    let mut chunk_refs: BTreeMap<Blake3, (u64, u32)> = BTreeMap::new();
    for id in blobs.keys() {
        for (chunk, len) in distinct(id) {
            chunk_refs.entry(chunk).or_insert((0, len)).0 += 1;
        }
    }
    let mut repo_chunk: BTreeMap<(String, Blake3), u64> = BTreeMap::new();
    let mut repo_physical: BTreeMap<String, BTreeSet<(Blake3, u32)>> = BTreeMap::new();
    for (repo, id) in repo_blob.keys() {
        for (chunk, len) in distinct(id) {
            *repo_chunk.entry((repo.clone(), chunk)).or_default() += 1;
            repo_physical
                .entry(repo.clone())
                .or_default()
                .insert((chunk, len));
        }
    }
    let stored_chunks: BTreeMap<Blake3, (u64, u32)> = pairs(node, keys::CHUNK_REFS_PREFIX)
        .into_iter()
        .map(|(k, v)| {
            let count = ChunkRefCount::decode(&v).expect("chunk count");
            (
                Blake3::from_slice(&k[keys::CHUNK_REFS_PREFIX.len()..]).expect("id"),
                (count.count, count.len),
            )
        })
        .collect();
    assert_eq!(stored_chunks, chunk_refs, "chunk reference counts");
    let stored_repo_blob: BTreeMap<(String, Blake3), u64> = pairs(node, b"rb/")
        .into_iter()
        .map(|(k, v)| {
            (
                repo_and_id(&k, b"rb/"),
                keys::decode_count(&v).expect("count"),
            )
        })
        .collect();
    assert_eq!(stored_repo_blob, repo_blob, "repository blob counts");
    let stored_repo_chunk: BTreeMap<(String, Blake3), u64> = pairs(node, b"rc/")
        .into_iter()
        .map(|(k, v)| {
            (
                repo_and_id(&k, b"rc/"),
                keys::decode_count(&v).expect("count"),
            )
        })
        .collect();
    assert_eq!(stored_repo_chunk, repo_chunk, "repository chunk counts");
    // The digest index names exactly the live blobs.
    let index: BTreeSet<Vec<u8>> = pairs(node, b"h/").into_iter().map(|(k, _)| k).collect();
    let expected_index: BTreeSet<Vec<u8>> = blobs
        .values()
        .map(|r| keys::sha256_index(&r.descriptor.sha256))
        .collect();
    assert_eq!(index, expected_index, "sha256 index");
    // Running totals.
    let repos: Vec<String> = pairs(node, b"r/")
        .into_iter()
        .map(|(k, _)| String::from_utf8(k[2..].to_vec()).expect("utf-8"))
        .collect();
    for repo in &repos {
        let mut expected = repo_stats.get(repo).cloned().unwrap_or_default();
        expected.physical_bytes = repo_physical.get(repo).map_or(0, |chunks| {
            chunks.iter().map(|(_, len)| u64::from(*len)).sum()
        });
        let stored: RepoStats = node
            .node()
            .service
            .catalog
            .db()
            .get_cf(
                node.node()
                    .service
                    .catalog
                    .db()
                    .cf_handle(arca_raft::storage::CF_STATE_MACHINE)
                    .expect("sm"),
                format!("s/{repo}"),
            )
            .expect("read")
            .map(|v| rmp_serde::from_slice(&v).expect("stats"))
            .unwrap_or_default();
        assert_eq!(stored, expected, "totals of {repo}");
    }
    let global = node.node().service.catalog.global_stats().expect("stats");
    let expected = GlobalStats {
        repositories: repos.len() as u64,
        artifacts: artifacts.len() as u64 + manifests,
        blobs: blobs.len() as u64,
        chunks: chunk_refs.len() as u64,
        logical_bytes: artifacts.iter().map(|a| a.size).sum::<u64>() + registry_bytes,
        physical_bytes: chunk_refs.values().map(|(_, len)| u64::from(*len)).sum(),
    };
    assert_eq!(global, expected, "global totals");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_writes_leave_every_count_equal_to_a_recount(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let node = TestNode::start().await;
            for (i, op) in ops.iter().enumerate() {
                commit(&node, &command(op, 1000 + i as i64)).await;
            }
            check_counts(&node);
            let expected = model(&ops);
            let mut stored: BTreeMap<u8, (bool, BTreeMap<u8, u8>)> = BTreeMap::new();
            for n in 0..3u8 {
                let Some(repo) = node.node().service.catalog.repo(&repo_name(n)).expect("repo") else {
                    continue;
                };
                let mut paths = BTreeMap::new();
                for p in 0..4u8 {
                    if let Some(artifact) = node.node().service.catalog.artifact(&repo_name(n), &path(p)).expect("artifact") {
                        let b = (0..4u8).find(|b| blob(*b).blake3 == artifact.blob).expect("a pool blob");
                        paths.insert(p, b);
                    }
                }
                stored.insert(n, (repo.immutable, paths));
            }
            assert_eq!(stored, expected, "artifacts after {ops:?}");
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_would_take_a_total_below_zero_is_refused_and_the_node_goes_on() {
    // Totals were decremented with plain `-=`: a state whose totals disagree with its artifacts
    // (a bug, a hand-edited or corrupted key) made the next delete underflow, which panics in
    // a debug build (stopping Raft on every node at the same entry) and wraps in a release
    // build (a total of 18 quintillion artifacts, for ever).
    let node = TestNode::start().await;
    commit(
        &node,
        &command(
            &Op::Create {
                repo: 0,
                immutable: false,
            },
            1,
        ),
    )
    .await;
    commit(
        &node,
        &command(
            &Op::Put {
                repo: 0,
                path: 0,
                blob: 0,
            },
            2,
        ),
    )
    .await;
    let db = node.node().service.catalog.db();
    let cf = db
        .cf_handle(arca_raft::storage::CF_STATE_MACHINE)
        .expect("sm");
    let mut global = node.node().service.catalog.global_stats().expect("stats");
    global.artifacts = 0;
    db.put_cf(cf, keys::GLOBAL_STATS, encode(&global).expect("encode"))
        .expect("corrupt the total");
    let refused = commit(&node, &command(&Op::Delete { repo: 0, path: 0 }, 3)).await;
    assert!(matches!(refused, Outcome::Refused { .. }), "{refused:?}");
    assert!(
        node.node()
            .service
            .catalog
            .artifact(&repo_name(0), &path(0))
            .expect("read")
            .is_some(),
        "a refused command changes nothing"
    );
    assert!(
        node.metric("arca_state_machine_refused_commands_total")
            .await
            >= 1.0
    );
    // The node keeps applying.
    let stored = commit(
        &node,
        &command(
            &Op::Put {
                repo: 0,
                path: 1,
                blob: 1,
            },
            4,
        ),
    )
    .await;
    assert!(
        matches!(stored, Outcome::ArtifactStored { .. }),
        "{stored:?}"
    );
}

/// One command against a prepared state, and what applying it must answer.
struct Case {
    name: &'static str,
    /// Operations applied first (their outcomes are not checked).
    before: Vec<Op>,
    op: Op,
    expect: fn(&Outcome) -> bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_repository_command_answers_as_its_table_says() {
    let mutable = Op::Create {
        repo: 0,
        immutable: false,
    };
    let immutable = Op::Create {
        repo: 1,
        immutable: true,
    };
    let put = |repo, path, blob| Op::Put { repo, path, blob };
    let delete = |repo, path| Op::Delete { repo, path };
    let cases = vec![
        Case {
            name: "create a repository",
            before: vec![],
            op: mutable.clone(),
            expect: |o| matches!(o, Outcome::RepoCreated),
        },
        Case {
            name: "create it again",
            before: vec![mutable.clone()],
            op: mutable.clone(),
            expect: |o| matches!(o, Outcome::RepoExists),
        },
        Case {
            name: "put into a missing repository",
            before: vec![],
            op: put(2, 0, 0),
            expect: |o| matches!(o, Outcome::RepoNotFound),
        },
        Case {
            name: "put a new path",
            before: vec![mutable.clone()],
            op: put(0, 0, 0),
            expect: |o| matches!(o, Outcome::ArtifactStored { replaced: false, seq } if *seq > 0),
        },
        Case {
            name: "put the same content again",
            before: vec![mutable.clone(), put(0, 0, 0)],
            op: put(0, 0, 0),
            expect: |o| matches!(o, Outcome::ArtifactUnchanged),
        },
        Case {
            name: "overwrite in a mutable repository",
            before: vec![mutable.clone(), put(0, 0, 0)],
            op: put(0, 0, 1),
            expect: |o| matches!(o, Outcome::ArtifactStored { replaced: true, .. }),
        },
        Case {
            name: "overwrite in an immutable repository",
            before: vec![immutable.clone(), put(1, 0, 0)],
            op: put(1, 0, 1),
            expect: |o| matches!(o, Outcome::Immutable),
        },
        Case {
            name: "re-send identical content to an immutable path",
            before: vec![immutable.clone(), put(1, 0, 0)],
            op: put(1, 0, 0),
            expect: |o| matches!(o, Outcome::ArtifactUnchanged),
        },
        Case {
            name: "delete a path",
            before: vec![mutable.clone(), put(0, 0, 0)],
            op: delete(0, 0),
            expect: |o| matches!(o, Outcome::ArtifactDeleted { seq } if *seq > 0),
        },
        Case {
            name: "delete a missing path",
            before: vec![mutable.clone()],
            op: delete(0, 3),
            expect: |o| matches!(o, Outcome::ArtifactNotFound),
        },
        Case {
            name: "delete from an immutable repository",
            before: vec![immutable.clone(), put(1, 0, 0)],
            op: delete(1, 0),
            expect: |o| matches!(o, Outcome::Immutable),
        },
        Case {
            name: "delete from a missing repository",
            before: vec![],
            op: delete(2, 0),
            expect: |o| matches!(o, Outcome::RepoNotFound),
        },
    ];
    // Each case in the format envelope and in the encoding of before it (what an older
    // node proposes during a rolling upgrade): both must answer the same.
    for legacy in [false, true] {
        for case in &cases {
            let node = TestNode::start().await;
            for (i, op) in case.before.iter().enumerate() {
                commit(&node, &encoded(op, 10 + i as i64, legacy)).await;
            }
            let outcome = commit(&node, &encoded(&case.op, 100, legacy)).await;
            assert!(
                (case.expect)(&outcome),
                "{} (legacy {legacy}): {outcome:?}",
                case.name
            );
            check_counts(&node);
        }
    }
    // On a mirror every client write is refused, and changes nothing.
    let node = TestNode::start().await;
    commit(&node, &command(&mutable, 1)).await;
    commit(
        &node,
        &Command::SetRole {
            role: arca_node::metadata::model::RegionRole::Mirror {
                primary: "us".into(),
                replication_addrs: Vec::new(),
                http_addrs: Vec::new(),
            },
        },
    )
    .await;
    for op in [immutable.clone(), put(0, 0, 0), delete(0, 0)] {
        let outcome = commit(&node, &command(&op, 2)).await;
        assert!(
            matches!(outcome, Outcome::ReadOnlyMirror),
            "{op:?}: {outcome:?}"
        );
    }
    check_counts(&node);
}

/// What the registry's state machine answered, from either encoding of its answer.
fn oci_answer(outcome: &Outcome) -> Option<OciOutcome> {
    let payload = outcome.format_payload("oci")?;
    rmp_serde::from_slice(&payload).ok()
}

/// The manifest of blobs `blobs` (pool numbers), stored as blob 3 of the pool.
fn manifest(blobs: &[u8]) -> ManifestInfo {
    let bytes = blob(3);
    ManifestInfo {
        digest: bytes.sha256,
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        blob: bytes,
        blobs: blobs.iter().map(|b| blob(*b).sha256).collect(),
        manifests: Vec::new(),
        subject: None,
        artifact_type: None,
        annotations: Default::default(),
    }
}

/// One registry command against a prepared state, and what applying it must answer.
struct OciCase {
    name: &'static str,
    before: Vec<Command>,
    command: Command,
    expect: fn(&OciOutcome) -> bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_registry_command_answers_as_its_table_says() {
    for legacy in [false, true] {
        let images = || RepoName::parse(IMAGES).expect("repo");
        let oci =
            |command: OciCommand| in_envelope(arca_node::formats::oci::NAME, &command, legacy);
        let create = encoded(&Op::CreateImages, 1, legacy);
        let link = |i: u8, b: u8| encoded(&Op::Link { image: i, blob: b }, 2, legacy);
        // Image 1 mounts blob 1 from image 0.
        let mount = || {
            oci(OciCommand::MountBlob {
                repo: images(),
                image: image(1),
                from_repo: images(),
                from_image: image(0),
                blob: blob(1),
                at_ms: 3,
            })
        };
        let put_manifest = |blobs: &[u8], tag: &str| {
            oci(OciCommand::PutManifest {
                repo: images(),
                image: image(0),
                tag: Some(Tag::parse(tag).expect("tag")),
                manifest: manifest(blobs),
                at_ms: 5,
            })
        };
        let cases = vec![
            OciCase {
                name: "link into a missing repository",
                before: vec![],
                command: link(0, 0),
                expect: |o| matches!(o, OciOutcome::RepoNotFound),
            },
            OciCase {
                name: "link into a generic repository",
                before: vec![command(
                    &Op::Create {
                        repo: 0,
                        immutable: false,
                    },
                    1,
                )],
                command: oci(OciCommand::LinkBlob {
                    repo: repo_name(0),
                    image: image(0),
                    blob: blob(0),
                    at_ms: 2,
                }),
                expect: |o| matches!(o, OciOutcome::WrongFormat { format } if *format == *"generic"),
            },
            OciCase {
                name: "link a new blob",
                before: vec![create.clone()],
                command: link(0, 0),
                expect: |o| matches!(o, OciOutcome::BlobLinked { seq } if *seq > 0),
            },
            OciCase {
                name: "link it again",
                before: vec![create.clone(), link(0, 0)],
                command: link(0, 0),
                expect: |o| matches!(o, OciOutcome::BlobUnchanged),
            },
            OciCase {
                name: "unlink a blob the image does not have",
                before: vec![create.clone(), link(0, 0)],
                command: encoded(&Op::Unlink { image: 1, blob: 0 }, 3, legacy),
                expect: |o| matches!(o, OciOutcome::BlobUnknown),
            },
            OciCase {
                name: "unlink a linked blob",
                before: vec![create.clone(), link(0, 0)],
                command: encoded(&Op::Unlink { image: 0, blob: 0 }, 3, legacy),
                expect: |o| matches!(o, OciOutcome::BlobUnlinked { seq } if *seq > 0),
            },
            OciCase {
                name: "mount a blob another image links",
                before: vec![create.clone(), link(0, 1)],
                command: mount(),
                expect: |o| matches!(o, OciOutcome::BlobLinked { .. }),
            },
            OciCase {
                name: "mount a blob the source does not link",
                before: vec![create.clone()],
                command: mount(),
                expect: |o| matches!(o, OciOutcome::BlobUnknown),
            },
            OciCase {
                name: "a manifest whose blob is not linked",
                before: vec![create.clone(), link(0, 0)],
                command: put_manifest(&[0, 1], "v1"),
                expect: |o| matches!(o, OciOutcome::ManifestBlobUnknown { digests } if digests.len() == 1),
            },
            OciCase {
                name: "a manifest with a tag",
                before: vec![create.clone(), link(0, 0), link(0, 1)],
                command: put_manifest(&[0, 1], "v1"),
                expect: |o| matches!(o, OciOutcome::ManifestStored { created: true, seq } if *seq > 0),
            },
            OciCase {
                name: "the same manifest and tag again",
                before: vec![create.clone(), link(0, 0), put_manifest(&[0], "v1")],
                command: put_manifest(&[0], "v1"),
                expect: |o| matches!(o, OciOutcome::ManifestUnchanged),
            },
            OciCase {
                name: "delete a tag that does not exist",
                before: vec![create.clone()],
                command: oci(OciCommand::DeleteTag {
                    repo: images(),
                    image: image(0),
                    tag: Tag::parse("v9").expect("tag"),
                    at_ms: 6,
                }),
                expect: |o| matches!(o, OciOutcome::TagUnknown),
            },
            OciCase {
                name: "delete a manifest and its tags",
                before: vec![create.clone(), link(0, 0), put_manifest(&[0], "v1")],
                command: oci(OciCommand::DeleteManifest {
                    repo: images(),
                    image: image(0),
                    digest: blob(3).sha256,
                    at_ms: 6,
                }),
                expect: |o| matches!(o, OciOutcome::ManifestDeleted { seq } if *seq > 0),
            },
        ];
        for case in &cases {
            let node = TestNode::start().await;
            for command in &case.before {
                commit(&node, command).await;
            }
            let outcome = commit(&node, &case.command).await;
            let answer = oci_answer(&outcome);
            assert!(
                answer.as_ref().is_some_and(case.expect),
                "{} (legacy {legacy}): {outcome:?} → {answer:?}",
                case.name
            );
            check_counts(&node);
        }
    }
}
