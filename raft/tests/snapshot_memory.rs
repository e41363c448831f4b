//! Building and installing a snapshot must not hold the snapshot in memory.
//!
//! A region with a million artifacts has a state machine of a few GiB; a node that builds or
//! installs its snapshot must not need that much RAM. This test fills a state machine with
//! 200k pairs of 1 KiB (about 210 MB of snapshot), then builds the snapshot and installs it into
//! a fresh database, each phase in its own process so that the kernel's peak-RSS counter
//! (`VmHWM`) measures that phase alone, and requires each peak to stay well below the snapshot
//! size.
//!
//! The phases run as this same test binary, re-executed with `ARCA_SNAPSHOT_MEMORY_PHASE` set:
//! the `phase` test does nothing unless that variable names a phase.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arca_raft::storage::{CF_RAFT_LOG, CF_RAFT_META, CF_STATE_MACHINE};
use arca_raft::types::LogId;
use arca_raft::{ApplyBatch, ApplyHandler, StateMachineStore};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, RaftSnapshotBuilder};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use tokio::io::AsyncSeekExt;

const ENV_PHASE: &str = "ARCA_SNAPSHOT_MEMORY_PHASE";
const ENV_DIR: &str = "ARCA_SNAPSHOT_MEMORY_DIR";
const PAIRS: usize = 200_000;
const VALUE_LEN: usize = 1024;
/// Memtable size of each column family in the phase processes. RocksDB's default (64 MiB, two
/// of them per column family) is by itself more than half this test's snapshot, and it does
/// not grow with the snapshot; what is measured here is the driver.
const WRITE_BUFFER: usize = 8 << 20;

struct NoApp;

impl ApplyHandler for NoApp {
    fn apply(
        &self,
        _batch: &mut ApplyBatch<'_>,
        _log_id: &LogId,
        _command: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

fn open(path: &Path) -> Arc<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let cfs = [CF_RAFT_LOG, CF_RAFT_META, CF_STATE_MACHINE].map(|name| {
        let mut cf_options = Options::default();
        cf_options.set_write_buffer_size(WRITE_BUFFER);
        ColumnFamilyDescriptor::new(name, cf_options)
    });
    Arc::new(DB::open_cf_descriptors(&options, path, cfs).expect("open rocksdb"))
}

fn store(dir: &Path, name: &str) -> (Arc<DB>, StateMachineStore) {
    let db = open(&dir.join(format!("{name}-db")));
    let sm = StateMachineStore::new(
        db.clone(),
        Arc::new(NoApp),
        dir.join(format!("{name}-snapshots")),
    )
    .expect("open state machine");
    (db, sm)
}

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Deterministic incompressible bytes (xorshift), so LZ4 cannot shrink the state machine.
fn value(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(VALUE_LEN);
    while out.len() < VALUE_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(VALUE_LEN);
    out
}

fn key(i: usize) -> Vec<u8> {
    format!("kv/{i:08}").into_bytes()
}

async fn fill(dir: &Path) {
    let (db, mut sm) = store(dir, "source");
    let cf = db.cf_handle(CF_STATE_MACHINE).expect("sm column family");
    let mut batch = rocksdb::WriteBatch::default();
    for i in 0..PAIRS {
        batch.put_cf(cf, key(i), value(i as u64));
        if batch.len() == 1000 {
            db.write(std::mem::take(&mut batch)).expect("write pairs");
        }
    }
    db.write(batch).expect("write pairs");
    // One applied entry, so the snapshot has a real last log id.
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Blank,
    };
    sm.apply([entry]).await.expect("apply");
    db.flush_wal(true).expect("flush wal");
}

async fn build(dir: &Path) -> u64 {
    let (_db, mut sm) = store(dir, "source");
    let mut snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    snapshot
        .snapshot
        .seek(std::io::SeekFrom::End(0))
        .await
        .expect("seek snapshot end")
}

/// Returns the snapshot's size and the peak RSS right after the install (before the check,
/// whose full scan fills RocksDB's block cache).
async fn install(dir: &Path) -> (u64, u64) {
    let (_source_db, mut source) = store(dir, "source");
    let mut snapshot = source
        .get_current_snapshot()
        .await
        .expect("read current snapshot")
        .expect("a current snapshot");
    let (db, mut target) = store(dir, "target");
    let mut received = target
        .begin_receiving_snapshot()
        .await
        .expect("begin receiving");
    let bytes = tokio::io::copy(&mut *snapshot.snapshot, &mut *received)
        .await
        .expect("copy snapshot");
    target
        .install_snapshot(&snapshot.meta, received)
        .await
        .expect("install snapshot");
    let peak = vm_hwm_kib();
    let (last_applied, _) = target.applied_state().await.expect("applied state");
    assert_eq!(last_applied, snapshot.meta.last_log_id);
    let cf = db.cf_handle(CF_STATE_MACHINE).expect("sm column family");
    let mut count = 0;
    for item in db.prefix_iterator_cf(cf, b"kv/") {
        let (k, _) = item.expect("iterate");
        if !k.starts_with(b"kv/") {
            break;
        }
        count += 1;
    }
    assert_eq!(count, PAIRS, "every pair installed");
    let probe = PAIRS / 2;
    assert_eq!(
        db.get_cf(cf, key(probe)).expect("get").as_deref(),
        Some(value(probe as u64).as_slice())
    );
    (bytes, peak)
}

/// Runs one phase in a child process and returns (peak RSS in KiB, snapshot bytes).
fn run_phase(dir: &Path, phase: &str) -> (u64, u64) {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "phase", "--nocapture", "--test-threads=1"])
        .env(ENV_PHASE, phase)
        .env(ENV_DIR, dir)
        .output()
        .expect("run phase process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "phase {phase} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|line| line.split_once("PHASE_RESULT ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("phase {phase} printed no result: {stdout}"));
    let mut fields = line.split_whitespace().map(|f| f.parse::<u64>());
    match (fields.next(), fields.next()) {
        (Some(Ok(hwm)), Some(Ok(bytes))) => (hwm, bytes),
        _ => panic!("bad phase result {line:?}"),
    }
}

#[test]
fn building_and_installing_a_snapshot_stays_in_bounded_memory() {
    if std::env::var_os(ENV_PHASE).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    run_phase(dir.path(), "fill");
    let (build_kib, snapshot_bytes) = run_phase(dir.path(), "build");
    let (install_kib, installed_bytes) = run_phase(dir.path(), "install");
    assert_eq!(snapshot_bytes, installed_bytes);
    assert!(
        snapshot_bytes > (PAIRS * VALUE_LEN) as u64,
        "snapshot holds every pair ({snapshot_bytes} bytes)"
    );
    // Half the snapshot: far above what streaming needs (RocksDB's caches and memtables plus a
    // few MiB of buffers), far below one in-memory copy of the snapshot.
    let limit_kib = snapshot_bytes / 1024 / 2;
    eprintln!(
        "snapshot {snapshot_bytes} bytes; peak RSS: build {build_kib} KiB, install {install_kib} KiB; limit {limit_kib} KiB"
    );
    assert!(
        build_kib < limit_kib,
        "building a {snapshot_bytes}-byte snapshot peaked at {build_kib} KiB RSS (limit {limit_kib} KiB)"
    );
    assert!(
        install_kib < limit_kib,
        "installing a {snapshot_bytes}-byte snapshot peaked at {install_kib} KiB RSS (limit {limit_kib} KiB)"
    );
}

/// One phase of the test above, when re-executed as a child process.
#[test]
fn phase() {
    let Ok(phase) = std::env::var(ENV_PHASE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(ENV_DIR).expect("phase directory"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (bytes, peak) = runtime.block_on(async {
        match phase.as_str() {
            "fill" => {
                fill(&dir).await;
                (0, vm_hwm_kib())
            }
            "build" => (build(&dir).await, vm_hwm_kib()),
            "install" => install(&dir).await,
            other => panic!("unknown phase {other}"),
        }
    });
    // On a line of its own: the test harness prints "test phase ... " before it.
    println!("\nPHASE_RESULT {peak} {bytes}");
}
