//! The orphan sweep must page through the chunk index, not load it (audit P4).
//!
//! A node with millions of chunks sweeps for orphans every ten minutes; loading the whole index
//! into memory for each sweep costs about 48 bytes a chunk (half a gigabyte at ten million).
//! This test writes three million index entries, then sweeps them in a process of its own so
//! that the kernel's peak-RSS counter (`VmHWM`, reset through `/proc/self/clear_refs` just
//! before the sweep) measures the sweep alone, and requires the sweep's peak to stay well below
//! what holding the index would take (144 MB).
//!
//! The phases run as this same test binary, re-executed with `ARCA_SWEEP_MEMORY_PHASE` set:
//! the `phase` test does nothing unless that variable names a phase.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ENV_PHASE: &str = "ARCA_SWEEP_MEMORY_PHASE";
const ENV_DIR: &str = "ARCA_SWEEP_MEMORY_DIR";
const ENTRIES: u32 = 3_000_000;
/// What holding the index in memory would take: a 32-byte id and a 16-byte entry per chunk.
const HELD_BYTES: u64 = ENTRIES as u64 * 48;

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc/self/status")
}

/// Index entries as the chunk store writes them (length, write time in ms; big-endian), for
/// chunks written just now, so that none is old enough to be a candidate: the sweep only reads.
fn fill(dir: &Path) {
    let db = arca_node::db::open_db(&dir.join("db")).expect("open");
    let index = db
        .cf_handle(arca_node::storage::chunk_store::CF_CHUNK_INDEX)
        .expect("index");
    let now = arca_node::metadata::model::now_ms();
    let mut entry = [0u8; 12];
    entry[..4].copy_from_slice(&65_536u32.to_be_bytes());
    entry[4..].copy_from_slice(&now.to_be_bytes());
    for start in (0..ENTRIES).step_by(100_000) {
        let mut batch = rocksdb::WriteBatch::default();
        for n in start..(start + 100_000).min(ENTRIES) {
            batch.put_cf(index, blake3::hash(&n.to_le_bytes()).as_bytes(), entry);
        }
        db.write(batch).expect("write");
    }
    db.flush_cf(index).expect("flush");
}

fn sweep(dir: &Path) {
    let db = arca_node::db::open_db(&dir.join("db")).expect("open");
    let store = arca_node::storage::chunk_store::ChunkStore::new(db.clone()).expect("store");
    let collector = arca_node::storage::gc::Collector::new(
        store,
        arca_node::metadata::catalog::Catalog::new(db.clone()),
    );
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let before = vm_kib("VmRSS:");
    let deleted = collector.sweep(Duration::from_secs(3600)).expect("sweep");
    assert_eq!(deleted, 0);
    println!(
        "SWEEP_PEAK_GROWTH_KIB {}",
        vm_kib("VmHWM:").saturating_sub(before)
    );
}

#[test]
fn phase() {
    let Ok(phase) = std::env::var(ENV_PHASE) else {
        return;
    };
    let dir = std::env::var(ENV_DIR).expect("phase directory");
    match phase.as_str() {
        "fill" => fill(Path::new(&dir)),
        "sweep" => sweep(Path::new(&dir)),
        other => panic!("unknown phase {other}"),
    }
}

fn run_phase(phase: &str, dir: &Path) -> String {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "phase", "--nocapture", "--test-threads", "1"])
        .env(ENV_PHASE, phase)
        .env(ENV_DIR, dir)
        .output()
        .expect("run phase");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "phase {phase} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_orphan_sweep_pages_through_the_chunk_index_in_bounded_memory() {
    if std::env::var(ENV_PHASE).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    run_phase("fill", dir.path());
    let out = run_phase("sweep", dir.path());
    let growth_kib: u64 = out
        .lines()
        .find_map(|line| line.split("SWEEP_PEAK_GROWTH_KIB ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no measurement in {out}"));
    eprintln!(
        "sweep over {ENTRIES} index entries: peak RSS grew by {} MB (holding the index: {} MB)",
        growth_kib / 1024,
        HELD_BYTES >> 20
    );
    assert!(
        growth_kib * 1024 < HELD_BYTES / 2,
        "the sweep's peak RSS grew by {} MB over {ENTRIES} index entries: it holds the index",
        growth_kib / 1024
    );
}
