//! The state machine's handling of a region's history, driven by committing commands straight
//! into a single node's Raft log (as the node's own leader would): snapshot catch-ups, epochs,
//! divergent writes, replicated entries from another lineage.

mod support;

use std::time::Duration;

use arca_node::metadata::codec::encode;
use arca_node::metadata::model::{Command, RegionRole, ReplicatedEntry, Repository};
use arca_node::names::RepoName;
use serde_json::{json, Value};
use support::{bytes, TestNode};

/// Commits `command` (MessagePack of the JSON shape of a `Command`) and returns the outcome.
async fn commit(node: &TestNode, command: &Value) -> Value {
    let bytes = rmp_serde::to_vec_named(command).expect("encode");
    commit_bytes(node, bytes).await
}

async fn commit_bytes(node: &TestNode, bytes: Vec<u8>) -> Value {
    let applied = node
        .node()
        .service
        .region
        .raft
        .write(bytes)
        .await
        .expect("commit");
    rmp_serde::from_slice(&applied.response).expect("outcome")
}

async fn commit_command(node: &TestNode, command: &Command) -> Value {
    commit_bytes(node, encode(command).expect("encode")).await
}

fn mirror_role() -> RegionRole {
    RegionRole::Mirror {
        primary: "us".into(),
        replication_addrs: vec!["127.0.0.1:1".into()],
        http_addrs: Vec::new(),
    }
}

fn repo_record(name: &str) -> Vec<u8> {
    encode(&Repository {
        name: RepoName::parse(name).expect("name"),
        format: arca_node::formats::generic::NAME,
        immutable: false,
        created_at_ms: 1,
        sync_replication: false,
        remote: None,
    })
    .expect("encode")
}

/// A snapshot pair that stages repository `name`.
fn repo_pair(name: &str) -> Value {
    json!([format!("r/{name}").into_bytes(), repo_record(name)])
}

fn has_repo(node: &TestNode, name: &str) -> bool {
    node.node()
        .service
        .catalog
        .repo(&RepoName::parse(name).expect("name"))
        .expect("read")
        .is_some()
}

fn head(seq: u64) -> Value {
    json!({"epoch": 1, "seq": seq, "at_ms": 1})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_snapshot_catch_ups_install_only_one_whole_snapshot() {
    // Audit D8: a deposed mirror leader kept forwarding parts of its catch-up; parts carried
    // no snapshot id, so the new leader's staging took them and the finish installed a mix.
    let node = TestNode::start().await;
    commit_command(
        &node,
        &Command::SetRole {
            role: mirror_role(),
        },
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_begin": {"head": head(10), "id": "first"}}),
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_part": {"id": "first", "pairs": [repo_pair("one")]}}),
    )
    .await;
    // The new leader starts its own catch-up; the old one goes on sending.
    commit(
        &node,
        &json!({"snapshot_begin": {"head": head(12), "id": "second"}}),
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_part": {"id": "first", "pairs": [repo_pair("stale")]}}),
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_part": {"id": "second", "pairs": [repo_pair("two")]}}),
    )
    .await;
    let refused = commit(
        &node,
        &json!({"snapshot_finish": {"head": head(10), "id": "first", "pairs": 2}}),
    )
    .await;
    assert!(refused.get("snapshot_installed").is_none(), "{refused}");
    assert!(!has_repo(&node, "stale"), "a stale part was installed");
    let installed = commit(
        &node,
        &json!({"snapshot_finish": {"head": head(12), "id": "second", "pairs": 1}}),
    )
    .await;
    assert!(installed.get("snapshot_installed").is_some(), "{installed}");
    assert!(has_repo(&node, "two"));
    assert!(!has_repo(&node, "one") && !has_repo(&node, "stale"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_missing_parts_is_not_installed() {
    // Audit D8: the finish installed whatever was staged, with no count or digest check.
    let node = TestNode::start().await;
    commit_command(
        &node,
        &Command::SetRole {
            role: mirror_role(),
        },
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_begin": {"head": head(5), "id": "s"}}),
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_part": {"id": "s", "pairs": [repo_pair("a")]}}),
    )
    .await;
    let refused = commit(
        &node,
        &json!({"snapshot_finish": {"head": head(5), "id": "s", "pairs": 3}}),
    )
    .await;
    assert!(refused.get("snapshot_installed").is_none(), "{refused}");
    assert!(!has_repo(&node, "a"));
}

fn staged_keys(node: &TestNode) -> usize {
    let db = node.node().service.catalog.db();
    let cf = db
        .cf_handle(arca_raft::storage::CF_STATE_MACHINE)
        .expect("sm");
    db.prefix_iterator_cf(cf, b"x/")
        .take_while(|item| item.as_ref().is_ok_and(|(key, _)| key.starts_with(b"x/")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_drops_a_half_staged_snapshot() {
    // Audit L2: staged keys of an aborted catch-up stayed (in every Raft snapshot) for ever on
    // a region promoted mid-catch-up.
    let node = TestNode::start().await;
    commit_command(
        &node,
        &Command::SetRole {
            role: mirror_role(),
        },
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_begin": {"head": head(5), "id": "s"}}),
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_part": {"id": "s", "pairs": [repo_pair("a")]}}),
    )
    .await;
    assert_eq!(staged_keys(&node), 1);
    commit_command(&node, &Command::Promote { at_ms: 2 }).await;
    assert_eq!(staged_keys(&node), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_after_a_demotion_starts_an_epoch_no_region_has_used() {
    // Audit D7: the new epoch was the last applied entry's epoch + 1, and a demotion did not
    // raise it: a demoted primary promoted again reused the epoch of the region that replaced
    // it, and two primaries at one epoch never fence each other.
    let node = TestNode::start().await;
    let demoted = commit_command(
        &node,
        &Command::Demote {
            role: mirror_role(),
            epoch: 5,
            fork_seq: 0,
            at_ms: 1,
        },
    )
    .await;
    assert!(demoted.get("demoted").is_some(), "{demoted}");
    let promoted = commit_command(&node, &Command::Promote { at_ms: 2 }).await;
    let epoch = promoted["promoted"]["epoch"].as_u64().expect("epoch");
    assert!(
        epoch > 5,
        "promoted to epoch {epoch}, already used by the region at epoch 5"
    );
}

async fn put_files(node: &TestNode, count: u64) {
    node.create_repo("files", false).await;
    for i in 0..count {
        let response = node.put("files", &format!("f{i}"), bytes(20_000, i)).await;
        assert_eq!(response.status(), 201);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergent_writes_trimmed_from_the_log_are_still_reported() {
    // Audit D9: entries trimmed before the demotion were skipped without a word.
    let node = TestNode::start().await;
    put_files(&node, 4).await;
    // Where the repository and the files landed in the change log (audit batches and the
    // first account take seqs of their own).
    let service = &node.node().service;
    let log = service.catalog.changes_after(0, 1000).expect("log");
    let seq_of = |needle: &str| {
        log.iter()
            .find(|c| service.formats.describe(&c.command).contains(needle))
            .map(|c| c.seq)
            .unwrap_or_else(|| panic!("no {needle} in the change log"))
    };
    let fork = seq_of("create repository files");
    let trim = seq_of("files/f2 ");
    commit_command(&node, &Command::TrimChangeLog { before_seq: trim }).await;
    commit_command(
        &node,
        &Command::Demote {
            role: mirror_role(),
            epoch: 2,
            fork_seq: fork,
            at_ms: 1,
        },
    )
    .await;
    let listed = arca_node::geo::status::divergent(&node.node().service.geo).expect("divergent");
    let seqs: Vec<u64> = listed.writes.iter().map(|w| w.seq).collect();
    // One record stands for the trimmed range; every entry kept after it is one record.
    let mut expected = vec![fork + 1];
    expected.extend(
        service
            .catalog
            .changes_after(0, 1000)
            .expect("log")
            .iter()
            .map(|c| c.seq)
            .filter(|seq| *seq >= trim),
    );
    assert_eq!(seqs, expected, "{:?}", listed.writes);
    let range = format!("{}-{}", fork + 1, trim - 1);
    assert!(
        listed.writes[0].summary.contains(&range) && listed.writes[0].summary.contains("trimmed"),
        "{:?}",
        listed.writes[0]
    );
    assert!(
        listed
            .writes
            .iter()
            .any(|w| w.summary.contains("files/f3 ")),
        "{:?}",
        listed.writes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_of_divergent_writes_outlives_the_snapshot_that_replaces_them() {
    // Audit D9: once the new primary's snapshot replaced the state, the divergent uploads'
    // chunks were unreferenced and the sweep deleted them an hour later.
    let node = TestNode::start().await;
    put_files(&node, 1).await;
    let service = &node.node().service;
    let repo = RepoName::parse("files").expect("repo");
    let path = arca_node::names::ArtifactPath::parse("f0").expect("path");
    let files = arca_node::formats::generic::files::Files {
        service: service.clone(),
    };
    let (_, _, blob) = files.file(&repo, &path).expect("the file");
    commit_command(
        &node,
        &Command::Demote {
            role: mirror_role(),
            epoch: 2,
            fork_seq: 0,
            at_ms: 1,
        },
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_begin": {"head": {"epoch": 2, "seq": 0, "at_ms": 1}, "id": "s"}}),
    )
    .await;
    commit(
        &node,
        &json!({"snapshot_finish": {"head": {"epoch": 2, "seq": 0, "at_ms": 1}, "id": "s", "pairs": 0}}),
    )
    .await;
    assert!(!has_repo(&node, "files"), "the snapshot replaced the state");
    let swept = service.collector.sweep(Duration::ZERO).expect("sweep");
    for chunk in &blob.descriptor.chunks {
        assert!(
            service.chunks.contains(&chunk.id).expect("contains"),
            "chunk {} of a divergent write was collected ({swept} swept)",
            chunk.id
        );
    }
}

fn replicated(epoch: u64, seq: u64, repo: &str) -> Command {
    Command::Replicated {
        entries: vec![ReplicatedEntry {
            epoch,
            seq,
            at_ms: 1,
            command: Command::CreateRepo {
                repo: Repository {
                    name: RepoName::parse(repo).expect("name"),
                    format: arca_node::formats::generic::NAME,
                    immutable: false,
                    created_at_ms: 1,
                    sync_replication: false,
                    remote: None,
                },
            },
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_entries_from_an_older_or_another_lineage_are_refused() {
    // Audit D5: entries were deduplicated by seq alone and never compared by epoch, so a mirror
    // mixed two primaries' histories.
    let node = TestNode::start().await;
    commit_command(
        &node,
        &Command::SetRole {
            role: mirror_role(),
        },
    )
    .await;
    // The first account took seqs of this node's log before it became a mirror.
    let base = node
        .node()
        .service
        .catalog
        .changelog_head()
        .expect("head")
        .last_seq;
    commit_command(&node, &replicated(2, base + 1, "a")).await;
    assert!(has_repo(&node, "a"));
    // An entry of an older epoch after one of epoch 2: the old primary's divergent history.
    commit_command(&node, &replicated(1, base + 2, "b")).await;
    assert!(
        !has_repo(&node, "b"),
        "an entry from an older epoch was applied"
    );
    // The same seq from another epoch is not a duplicate to skip but a fork.
    let forked = commit_command(&node, &replicated(3, base + 1, "c")).await;
    assert!(forked.get("replicated").is_none(), "{forked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_installs_a_primary_snapshot_whole() {
    let primary = TestNode::start().await;
    put_files(&primary, 2).await;
    let reader = primary
        .node()
        .service
        .catalog
        .state_reader(1 << 20)
        .expect("reader");
    let head = reader.head.clone();
    let pairs = reader.collect_all().expect("pairs");
    let mirror = TestNode::start().await;
    commit_command(
        &mirror,
        &Command::SetRole {
            role: mirror_role(),
        },
    )
    .await;
    // The mirror had followed the log for a while before it fell behind.
    for record in primary
        .node()
        .service
        .catalog
        .changes_after(0, 2)
        .expect("changes")
    {
        commit_command(
            &mirror,
            &Command::Replicated {
                entries: vec![ReplicatedEntry {
                    epoch: record.epoch,
                    seq: record.seq,
                    at_ms: record.at_ms,
                    command: record.command,
                }],
            },
        )
        .await;
    }
    assert!(has_repo(&mirror, "files"));
    let head = json!({"epoch": head.epoch, "seq": head.last_seq, "at_ms": head.last_at_ms});
    commit(
        &mirror,
        &json!({"snapshot_begin": {"head": head, "id": "s"}}),
    )
    .await;
    let count = pairs.len();
    let pairs: Vec<Value> = pairs.into_iter().map(|(k, v)| json!([k, v])).collect();
    let staged = commit(
        &mirror,
        &json!({"snapshot_part": {"id": "s", "pairs": pairs}}),
    )
    .await;
    assert!(
        staged.get("snapshot_staged").is_some() || staged == json!("snapshot_staged"),
        "{staged}"
    );
    let installed = commit(
        &mirror,
        &json!({"snapshot_finish": {"head": head, "id": "s", "pairs": count}}),
    )
    .await;
    assert!(installed.get("snapshot_installed").is_some(), "{installed}");
    assert!(has_repo(&mirror, "files"));
}

/// A mirror role whose primary this node has no address for: nothing drives its catch-up but
/// the test.
fn unreachable_mirror_role() -> RegionRole {
    RegionRole::Mirror {
        primary: "us".into(),
        replication_addrs: Vec::new(),
        http_addrs: Vec::new(),
    }
}

/// Stages `count` repositories named `{prefix}-{i}` as catch-up `id` and asks for a finish
/// installed in steps of `step_keys`; returns the finish's outcome.
async fn stage_repos(
    node: &TestNode,
    id: &str,
    prefix: &str,
    count: usize,
    step_keys: u32,
) -> Value {
    commit(
        node,
        &json!({"snapshot_begin": {"head": head(7), "id": id}}),
    )
    .await;
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for part in names.chunks(100) {
        let pairs: Vec<Value> = part.iter().map(|name| repo_pair(name)).collect();
        commit(node, &json!({"snapshot_part": {"id": id, "pairs": pairs}})).await;
    }
    commit(
        node,
        &json!({"snapshot_finish": {"head": head(7), "id": id, "pairs": count, "step_keys": step_keys}}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_installs_a_snapshot_in_bounded_steps_and_refuses_reads_meanwhile() {
    // Audit P2: the finish deleted every key and moved every staged one in a single apply (all
    // keys in one set, a delete and a put for each in one batch), at the same moment on every
    // node of the mirror. It must go in steps of bounded size, and while the state is half
    // replaced no read may be answered from it.
    let node = TestNode::start().await;
    commit_command(
        &node,
        &Command::SetRole {
            role: unreachable_mirror_role(),
        },
    )
    .await;
    // A first catch-up, installed whole (a finish without a step size, as older nodes send).
    commit(
        &node,
        &json!({"snapshot_begin": {"head": head(5), "id": "old"}}),
    )
    .await;
    let pairs: Vec<Value> = (0..300).map(|i| repo_pair(&format!("old-{i}"))).collect();
    commit(
        &node,
        &json!({"snapshot_part": {"id": "old", "pairs": pairs}}),
    )
    .await;
    let installed = commit(
        &node,
        &json!({"snapshot_finish": {"head": head(5), "id": "old", "pairs": 300}}),
    )
    .await;
    assert!(installed.get("snapshot_installed").is_some(), "{installed}");
    assert!(has_repo(&node, "old-0"));

    let finish = stage_repos(&node, "new", "new", 300, 50).await;
    assert!(
        finish.get("snapshot_installing").is_some(),
        "the finish installed the snapshot in one apply: {finish}"
    );
    // Half replaced: reads answer 503 NOT_READY (even those that accept stale data), and so
    // does readiness.
    let (status, code) = support::error_code(node.get("/api/v1/repos").await).await;
    assert_eq!((status, code.as_str()), (503, "NOT_READY"));
    let stale_ok = node
        .http
        .get(node.url("/api/v1/repos"))
        .header("x-arca-read-consistency", "stale-ok")
        .send()
        .await
        .expect("get");
    assert_eq!(stale_ok.status().as_u16(), 503);
    assert_eq!(node.get("/readyz").await.status().as_u16(), 503);
    // Nothing may start over a half-installed state or leave it half installed.
    let begin = commit(
        &node,
        &json!({"snapshot_begin": {"head": head(9), "id": "other"}}),
    )
    .await;
    assert!(begin.get("snapshot_installing").is_some(), "{begin}");
    let promote = commit_command(&node, &Command::Promote { at_ms: 3 }).await;
    assert!(promote.get("snapshot_installing").is_some(), "{promote}");
    let abort = commit(&node, &json!({"snapshot_abort": {"id": "new"}})).await;
    assert!(abort.get("snapshot_aborted").is_none(), "{abort}");

    let mut steps = 0;
    loop {
        let step = commit(
            &node,
            &json!({"snapshot_install": {"id": "new", "max_keys": 50}}),
        )
        .await;
        steps += 1;
        assert!(steps <= 100, "the install does not end: {step}");
        if step.get("snapshot_installed").is_some() {
            break;
        }
        let visited = step["snapshot_installing"]["visited"]
            .as_u64()
            .expect("visited");
        assert!(visited <= 50, "a step touched {visited} keys: {step}");
    }
    // 300 old repositories to delete and 300 staged ones to move, 50 keys a step.
    assert!(steps >= 12, "{steps} steps");
    assert!(has_repo(&node, "new-0") && has_repo(&node, "new-299"));
    assert!(!has_repo(&node, "old-0") && !has_repo(&node, "old-299"));
    assert_eq!(staged_keys(&node), 0);
    // Serving again: not NOT_READY (the staged state holds no accounts, so the old credential
    // is refused now).
    assert_eq!(node.get("/api/v1/repos").await.status().as_u16(), 401);
    let step = commit(
        &node,
        &json!({"snapshot_install": {"id": "new", "max_keys": 50}}),
    )
    .await;
    assert!(step.get("snapshot_installed").is_none(), "{step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_installed_snapshot_is_finished_by_whichever_node_leads() {
    // Audit P2: with the install in steps, a mirror leader that stops half-way must not leave
    // its region half replaced: the next leader (here: the node after its catch-up's proposer
    // is gone) finishes it from the staged state alone, even while the primary is unreachable.
    // The node runs the mirror side of replication (a QUIC endpoint with certificates of a
    // test CA); its primary's address answers nothing.
    let tls = tempfile::tempdir().expect("tempdir");
    let year = Duration::from_secs(365 * 24 * 3600);
    arca_replication::tls::init_ca(tls.path(), year).expect("ca");
    let (cert, key) = arca_replication::tls::issue(
        tls.path(),
        "node",
        arca_replication::tls::Role::Node { region: "local" },
        &["127.0.0.1".to_string()],
        &tls.path().join("node"),
        year,
    )
    .expect("issue");
    let node = TestNode::start_with(|config| {
        config.replication.listen_addr = Some("127.0.0.1:0".into());
        config.replication.ca_cert = Some(tls.path().join("ca.pem"));
        config.replication.cert = Some(cert);
        config.replication.key = Some(key);
    })
    .await;
    commit_command(
        &node,
        &Command::SetRole {
            role: mirror_role(),
        },
    )
    .await;
    let finish = stage_repos(&node, "gone", "staged", 250, 20).await;
    assert!(
        finish.get("snapshot_installing").is_some(),
        "the finish installed the snapshot in one apply: {finish}"
    );
    support::must_wait_until("the install is finished", Duration::from_secs(30), || {
        has_repo(&node, "staged-0") && has_repo(&node, "staged-249") && staged_keys(&node) == 0
    })
    .await;
    // Serving again: not NOT_READY (the staged state holds no accounts, so the old credential
    // is refused now).
    assert_eq!(node.get("/api/v1/repos").await.status().as_u16(), 401);
}
