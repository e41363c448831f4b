//! openraft's own storage conformance suite against Arca's RocksDB log store and state-machine
//! driver, plus a restart test of a real single-node group.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arca_raft::storage::column_families;
use arca_raft::types::{LogId, StorageError};
use arca_raft::{
    ApplyBatch, ApplyHandler, LogStore, NodeInfo, RaftConfig, RaftGroup, StateMachineStore,
    TypeConfig,
};
use openraft::testing::{StoreBuilder, Suite};
use rocksdb::{Options, DB};
use tempfile::TempDir;

/// A tiny key-value application: a command `key=value` sets a key and answers the old value.
struct KvApp;

impl ApplyHandler for KvApp {
    fn apply(
        &self,
        batch: &mut ApplyBatch<'_>,
        _log_id: &LogId,
        command: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let text = std::str::from_utf8(command)?;
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad command"))?;
        let key = format!("kv/{key}");
        let old = batch.get(key.as_bytes())?.unwrap_or_default();
        batch.put(key.into_bytes(), value.as_bytes().to_vec())?;
        Ok(old)
    }
}

fn open(path: &Path) -> Arc<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    Arc::new(DB::open_cf_descriptors(&options, path, column_families()).expect("open rocksdb"))
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&dir.path().join("db"));
        let log = LogStore::new(db.clone())?;
        let sm = StateMachineStore::new(db, Arc::new(KvApp), dir.path().join("snapshots"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

fn node_info() -> NodeInfo {
    NodeInfo {
        grpc_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        replication_addr: String::new(),
    }
}

async fn start(dir: &Path) -> (RaftGroup, Arc<DB>) {
    let db = open(&dir.join("db"));
    let group = RaftGroup::start(
        &RaftConfig::default(),
        "test",
        1,
        db.clone(),
        Arc::new(KvApp),
        dir.join("snapshots"),
        arca_raft::Peering::default(),
    )
    .await
    .expect("start raft");
    (group, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_group_applies_commands_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (group, _db) = start(dir.path()).await;
        let mut members = BTreeMap::new();
        members.insert(1, node_info());
        assert!(group.initialize(members.clone()).await.expect("initialize"));
        group
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
        assert_eq!(
            group.write(b"a=1".to_vec()).await.expect("write").response,
            b""
        );
        assert_eq!(
            group.write(b"a=2".to_vec()).await.expect("write").response,
            b"1"
        );
        group.shutdown().await;
    }
    let (group, _db) = start(dir.path()).await;
    let mut members = BTreeMap::new();
    members.insert(1, node_info());
    assert!(!group
        .initialize(members)
        .await
        .expect("initialize again is a no-op"));
    group
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader after restart");
    assert_eq!(
        group.write(b"a=3".to_vec()).await.expect("write").response,
        b"2"
    );
    group.shutdown().await;
}
