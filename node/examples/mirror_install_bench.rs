//! Time and peak memory of a mirror installing a snapshot of its primary (the end of a
//! catch-up), through the node's real state machine and Raft log.
//!
//! ```text
//! cargo run -p arca-node --example mirror_install_bench -- --artifacts N --step-keys K
//! ```
//!
//! A single-node mirror region is given N artifacts' worth of old state and N artifacts' worth
//! of a staged snapshot (generated pairs of about 2 KB per artifact, 22 keys, shaped like the
//! node's records), written straight into its state machine's column family while the node is
//! idle. Then the finish is committed: with `--step-keys 0` as one apply (what nodes before
//! command version 3 do), otherwise followed by install steps of K keys until the snapshot is
//! the state. The peak RSS printed is measured from just before the finish (`VmHWM`, reset
//! through `/proc/self/clear_refs`).

use std::time::{Duration, Instant};

use arca_node::config::NodeConfig;
use arca_node::metadata::codec::encode;
use arca_node::metadata::model::{Command, Outcome, RegionRole, Staging, StreamHead};

struct Args {
    artifacts: u64,
    step_keys: u32,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut artifacts = None;
    let mut step_keys = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--artifacts" => artifacts = Some(value.parse()?),
            "--step-keys" => step_keys = Some(value.parse()?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let usage = "usage: mirror_install_bench --artifacts N --step-keys K (0: one apply)";
    Ok(Args {
        artifacts: artifacts.ok_or_else(|| anyhow::anyhow!(usage))?,
        step_keys: step_keys.ok_or_else(|| anyhow::anyhow!(usage))?,
    })
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
struct Rng(u64);

impl Rng {
    fn vec(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn hex(&mut self, bytes: usize) -> String {
        self.vec(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The 22 pairs (about 2 KB) of one artifact: its record, its blob's record with a chunk list,
/// the digest index, and per chunk a reference count and a repository link.
fn artifact_pairs(prefix: &[u8], n: u64, rng: &mut Rng, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    let key = |rest: String| [prefix, rest.as_bytes()].concat();
    let blob = rng.hex(32);
    out.push((key(format!("a/bench/path-{n}")), rng.vec(300)));
    out.push((key(format!("b/{blob}")), rng.vec(700)));
    out.push((key(format!("h/{}", rng.hex(32))), rng.vec(32)));
    out.push((key(format!("rb/bench/{blob}")), rng.vec(8)));
    for _ in 0..9 {
        let chunk = rng.hex(32);
        out.push((key(format!("c/{chunk}")), rng.vec(12)));
        out.push((key(format!("rc/bench/{chunk}")), rng.vec(8)));
    }
}

async fn commit(node: &arca_node::RunningNode, command: &Command) -> anyhow::Result<Outcome> {
    let applied = node.service.region.raft.write(encode(command)?).await?;
    Ok(rmp_serde::from_slice(&applied.response)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let config = NodeConfig {
        data_dir: dir.path().join("data"),
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: "127.0.0.1:0".into(),
        ..NodeConfig::default()
    };
    let node = arca_node::start(config).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while node
        .service
        .region
        .raft
        .raft()
        .metrics()
        .borrow()
        .current_leader
        .is_none()
    {
        anyhow::ensure!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    commit(
        &node,
        &Command::SetRole {
            role: RegionRole::Mirror {
                primary: "primary".into(),
                replication_addrs: Vec::new(),
                http_addrs: Vec::new(),
            },
        },
    )
    .await?;

    let filled = Instant::now();
    let db = node.service.catalog.db();
    let cf = db
        .cf_handle(arca_raft::storage::CF_STATE_MACHINE)
        .ok_or_else(|| anyhow::anyhow!("no state machine column family"))?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut staged = 0u64;
    let mut bytes = 0u64;
    for (prefix, staging) in [(&b""[..], false), (&b"x/"[..], true)] {
        let mut pairs = Vec::new();
        for n in 0..args.artifacts {
            artifact_pairs(prefix, n, &mut rng, &mut pairs);
            if pairs.len() >= 20_000 || n + 1 == args.artifacts {
                let mut batch = rocksdb::WriteBatch::default();
                for (key, value) in pairs.drain(..) {
                    bytes += (key.len() + value.len()) as u64;
                    staged += u64::from(staging);
                    batch.put_cf(cf, key, value);
                }
                db.write(batch)?;
            }
        }
    }
    let staging = Staging {
        id: Some("bench".into()),
        head: StreamHead {
            epoch: 1,
            seq: 1,
            at_ms: 1,
        },
        pairs: staged,
        install: None,
    };
    db.put_cf(cf, b"m/staging", encode(&staging)?)?;
    db.flush_cf(cf)?;
    println!(
        "filled {} artifacts: {:.2} GB of old state and staged snapshot in {:.1} s",
        args.artifacts,
        bytes as f64 / 1e9,
        filled.elapsed().as_secs_f64()
    );

    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = vm_hwm_kib()?;
    let started = Instant::now();
    let finish = commit(
        &node,
        &Command::SnapshotFinish {
            head: staging.head,
            id: staging.id.clone(),
            pairs: Some(staged),
            step_keys: (args.step_keys > 0).then_some(args.step_keys),
        },
    )
    .await;
    let mut outcome = match finish {
        Ok(outcome) => outcome,
        Err(e) => {
            // One apply of the whole state outlasts a client's 10 s deadline; it goes on.
            println!(
                "the finish was not answered within a client's deadline ({e}); waiting for its apply"
            );
            while node.service.catalog.staging()?.is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Outcome::SnapshotInstalled { seq: 1 }
        }
    };
    let mut steps = 0u64;
    while matches!(outcome, Outcome::SnapshotInstalling { .. }) {
        steps += 1;
        outcome = commit(
            &node,
            &Command::SnapshotInstall {
                id: staging.id.clone(),
                max_keys: args.step_keys,
            },
        )
        .await?;
    }
    anyhow::ensure!(
        matches!(outcome, Outcome::SnapshotInstalled { .. }),
        "the install ended with {outcome:?}"
    );
    println!(
        "installed: {} steps of {} keys, {:.1} s, peak RSS {} MB (at the finish: {} MB)",
        steps,
        if args.step_keys == 0 {
            "unbounded".to_string()
        } else {
            args.step_keys.to_string()
        },
        started.elapsed().as_secs_f64(),
        vm_hwm_kib()? / 1024,
        before / 1024
    );
    node.shutdown().await;
    Ok(())
}
