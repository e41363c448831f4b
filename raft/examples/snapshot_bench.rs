//! Time, size and peak memory of building and installing a Raft snapshot of a large region.
//!
//! ```text
//! cargo run -p arca-raft --example snapshot_bench -- --artifacts N --phase fill|build|install --dir D
//! ```
//!
//! - `fill` writes N artifacts' worth of state-machine pairs (about 2 KB each, shaped like the
//!   node's: an artifact record, a blob record with a 10-chunk list, a digest index entry, 10
//!   chunk reference counters, a repo-blob link and 10 repo-chunk links; random bytes) into
//!   `D/source-db`;
//! - `build` builds a snapshot of it with the real `StateMachineStore` (kept in
//!   `D/source-snapshots`);
//! - `install` installs that snapshot into a fresh `D/target-db`, the way a follower does
//!   (`begin_receiving_snapshot`, the data copied in, `install_snapshot`).
//!
//! Run each phase as its own process: the peak RSS printed (`VmHWM`) is the process's. The
//! program uses only openraft's storage traits, so it builds against any version of the crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arca_raft::storage::{column_families, CF_STATE_MACHINE};
use arca_raft::types::LogId;
use arca_raft::{ApplyBatch, ApplyHandler, StateMachineStore};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, RaftSnapshotBuilder};
use rocksdb::{Options, WriteBatch, DB};
use tokio::io::AsyncSeekExt;

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

struct Args {
    artifacts: u64,
    phase: String,
    dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut artifacts = None;
    let mut phase = None;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--artifacts" => artifacts = Some(value.parse()?),
            "--phase" => phase = Some(value),
            "--dir" => dir = Some(PathBuf::from(value)),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let usage = "usage: snapshot_bench --artifacts N --phase fill|build|install --dir D";
    Ok(Args {
        artifacts: artifacts.ok_or_else(|| anyhow::anyhow!(usage))?,
        phase: phase.ok_or_else(|| anyhow::anyhow!(usage))?,
        dir: dir.ok_or_else(|| anyhow::anyhow!(usage))?,
    })
}

fn open(path: &Path) -> anyhow::Result<Arc<DB>> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    Ok(Arc::new(DB::open_cf_descriptors(
        &options,
        path,
        column_families(),
    )?))
}

fn store(dir: &Path, name: &str) -> anyhow::Result<(Arc<DB>, StateMachineStore)> {
    let db = open(&dir.join(format!("{name}-db")))?;
    let sm = StateMachineStore::new(
        db.clone(),
        Arc::new(NoApp),
        dir.join(format!("{name}-snapshots")),
    )?;
    Ok((db, sm))
}

fn vm_hwm_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}

/// xorshift64: random-looking, incompressible, and no dependency.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
    }

    fn vec(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        self.fill(&mut out, len);
        out
    }

    fn key(&mut self, prefix: &[u8], len: usize) -> Vec<u8> {
        let mut out = prefix.to_vec();
        out.extend_from_slice(&self.vec(len));
        out
    }
}

/// The pairs of one artifact, about 2 KB.
fn artifact_pairs(n: u64, rng: &mut Bytes, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    let blob = rng.vec(32);
    let chunks: Vec<Vec<u8>> = (0..10).map(|_| rng.vec(32)).collect();
    out.push((format!("a/repo/path-{n}").into_bytes(), rng.vec(300)));
    let mut b_key = b"b/".to_vec();
    b_key.extend_from_slice(&blob);
    // A blob record: digests, size, and its chunk list (hash + length per chunk).
    let mut b_value = rng.vec(600 - 10 * 40);
    for chunk in &chunks {
        b_value.extend_from_slice(chunk);
        b_value.extend_from_slice(&rng.vec(8));
    }
    out.push((b_key, b_value));
    out.push((rng.key(b"h/", 32), blob.clone()));
    let mut rb_key = b"rb/repo/".to_vec();
    rb_key.extend_from_slice(&blob);
    out.push((rb_key, rng.vec(8)));
    for chunk in &chunks {
        let mut c_key = b"c/".to_vec();
        c_key.extend_from_slice(chunk);
        out.push((c_key, rng.vec(12)));
        let mut rc_key = b"rc/repo/".to_vec();
        rc_key.extend_from_slice(chunk);
        out.push((rc_key, rng.vec(8)));
    }
}

async fn fill(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let (db, mut sm) = store(&args.dir, "source")?;
    let cf = db
        .cf_handle(CF_STATE_MACHINE)
        .ok_or_else(|| anyhow::anyhow!("no sm column family"))?;
    let mut rng = Bytes(0x2545_F491_4F6C_DD1D);
    let mut pairs = Vec::new();
    let mut bytes = 0u64;
    let mut batch = WriteBatch::default();
    for n in 0..args.artifacts {
        artifact_pairs(n, &mut rng, &mut pairs);
        for (key, value) in pairs.drain(..) {
            bytes += (key.len() + value.len()) as u64;
            batch.put_cf(cf, key, value);
        }
        if batch.size_in_bytes() >= 4 << 20 {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Blank,
    };
    sm.apply([entry]).await?;
    db.flush_wal(true)?;
    println!(
        "fill: {} artifacts, {bytes} bytes of pairs in {:.1} s, peak RSS {} KiB",
        args.artifacts,
        started.elapsed().as_secs_f64(),
        vm_hwm_kib()?
    );
    Ok(())
}

async fn build(args: &Args) -> anyhow::Result<()> {
    let (_db, mut sm) = store(&args.dir, "source")?;
    let started = Instant::now();
    let mut snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    let elapsed = started.elapsed();
    let bytes = snapshot.snapshot.seek(std::io::SeekFrom::End(0)).await?;
    println!(
        "build: {:.1} s, snapshot {bytes} bytes, peak RSS {} KiB",
        elapsed.as_secs_f64(),
        vm_hwm_kib()?
    );
    Ok(())
}

async fn install(args: &Args) -> anyhow::Result<()> {
    let target_db = args.dir.join("target-db");
    let target_snapshots = args.dir.join("target-snapshots");
    for dir in [&target_db, &target_snapshots] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    let (_source_db, mut source) = store(&args.dir, "source")?;
    let (_db, mut target) = store(&args.dir, "target")?;
    let started = Instant::now();
    let mut snapshot = source
        .get_current_snapshot()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no snapshot: run --phase build first"))?;
    let mut received = target.begin_receiving_snapshot().await?;
    let bytes = tokio::io::copy(&mut *snapshot.snapshot, &mut *received).await?;
    let copied = started.elapsed();
    target.install_snapshot(&snapshot.meta, received).await?;
    let elapsed = started.elapsed();
    let (last_applied, _) = target.applied_state().await?;
    anyhow::ensure!(
        last_applied == snapshot.meta.last_log_id,
        "installed state is at {last_applied:?}, the snapshot at {:?}",
        snapshot.meta.last_log_id
    );
    println!(
        "install: {:.1} s (receive {:.1} s), snapshot {bytes} bytes, peak RSS {} KiB",
        elapsed.as_secs_f64(),
        copied.as_secs_f64(),
        vm_hwm_kib()?
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.phase.as_str() {
            "fill" => fill(&args).await,
            "build" => build(&args).await,
            "install" => install(&args).await,
            other => anyhow::bail!("unknown phase {other} (fill, build or install)"),
        }
    })
}
