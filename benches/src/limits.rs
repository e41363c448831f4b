//! The machine's limits, measured in the same run as the registries so that every registry
//! figure can be read as a fraction of what the hardware allows: hashing per core, Arca's
//! chunking pipeline, a raw loopback TCP copy, and synced disk writes.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use arca_node::storage::chunker::{Chunker, ChunkerConfig};
use serde::Serialize;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::random_bytes;

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// blake3 of one buffer on one core (SIMD, no threads).
    pub blake3_gib_s: f64,
    /// sha256 of one buffer on one core.
    pub sha256_gib_s: f64,
    /// FastCDC boundaries alone, Arca's default parameters.
    pub fastcdc_gib_s: f64,
    /// What an upload costs on the CPU: FastCDC, blake3 per chunk, blake3 and sha256 of the
    /// whole blob, fed in 64 KiB frames (see [`ingest_pipeline`]).
    pub ingest_pipeline_gib_s: f64,
    /// One TCP connection on 127.0.0.1, 1 MiB writes, reader discarding.
    pub tcp_loopback_gib_s: f64,
    /// Sequential 1 MiB writes with one `fdatasync` at the end.
    pub disk_write_synced_mib_s: f64,
    /// 4 KiB appends, each followed by `fdatasync`: the rate of durable small commits.
    pub disk_fsync_4k_per_s: f64,
}

/// What the ingest worker does per upload, minus storage: cut, hash each chunk, hash the whole
/// blob with blake3 and sha256, fed in 64 KiB frames like an HTTP body.
pub fn ingest_pipeline(data: &[u8]) -> (usize, [u8; 32], [u8; 32]) {
    let mut chunker = Chunker::new(ChunkerConfig::default());
    let mut sha = sha2::Sha256::new();
    let mut whole = blake3::Hasher::new();
    let mut chunks = 0;
    for frame in data.chunks(64 * 1024) {
        sha.update(frame);
        whole.update(frame);
        for chunk in chunker.push(frame) {
            std::hint::black_box(blake3::hash(&chunk));
            chunks += 1;
        }
    }
    for chunk in chunker.finish() {
        std::hint::black_box(blake3::hash(&chunk));
        chunks += 1;
    }
    (chunks, sha.finalize().into(), *whole.finalize().as_bytes())
}

/// Best of `rounds` timings of `f` over `bytes`, in GiB/s.
fn best_gib_s(bytes: usize, rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        f();
        best = best.min(started.elapsed());
    }
    bytes as f64 / (1u64 << 30) as f64 / best.as_secs_f64()
}

/// CPU limits on 256 MiB of random data, best of three.
pub fn cpu() -> (f64, f64, f64, f64) {
    const SIZE: usize = 256 << 20;
    let data = random_bytes(SIZE, 7);
    let blake3 = best_gib_s(SIZE, 3, || {
        std::hint::black_box(blake3::hash(std::hint::black_box(&data)));
    });
    let sha256 = best_gib_s(SIZE, 3, || {
        std::hint::black_box(sha2::Sha256::digest(std::hint::black_box(&data)));
    });
    let fastcdc = best_gib_s(SIZE, 3, || {
        let mut chunker = Chunker::new(ChunkerConfig::default());
        let n = chunker.push(std::hint::black_box(&data)).len() + chunker.finish().len();
        std::hint::black_box(n);
    });
    let pipeline = best_gib_s(SIZE, 3, || {
        std::hint::black_box(ingest_pipeline(std::hint::black_box(&data)));
    });
    (blake3, sha256, fastcdc, pipeline)
}

/// One loopback TCP connection moving `bytes`, in GiB/s.
pub async fn tcp_loopback(bytes: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = socket.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(total);
            }
            total += n as u64;
        }
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    let buffer = random_bytes(1 << 20, 3);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        socket.write_all(&buffer).await?;
        sent += buffer.len() as u64;
    }
    socket.shutdown().await?;
    let received = reader.await.context("reader panicked")??;
    anyhow::ensure!(received == sent, "sent {sent} bytes, received {received}");
    Ok(received as f64 / (1u64 << 30) as f64 / started.elapsed().as_secs_f64())
}

/// Synced disk writes in `dir`: sequential MiB/s with one `fdatasync` at the end, and 4 KiB
/// append + `fdatasync` operations per second.
pub fn disk(dir: &Path, bytes: u64) -> anyhow::Result<(f64, f64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("arca-bench-disk.tmp");
    let buffer = random_bytes(1 << 20, 5);
    let sequential = {
        let mut file = std::fs::File::create(&path)?;
        let started = Instant::now();
        let mut written = 0u64;
        while written < bytes {
            file.write_all(&buffer)?;
            written += buffer.len() as u64;
        }
        file.sync_data()?;
        written as f64 / (1u64 << 20) as f64 / started.elapsed().as_secs_f64()
    };
    std::fs::remove_file(&path)?;
    let small = {
        let mut file = std::fs::File::create(&path)?;
        let started = Instant::now();
        let mut ops = 0u64;
        while ops < 2000 && started.elapsed() < Duration::from_secs(5) {
            file.write_all(&buffer[..4096])?;
            file.sync_data()?;
            ops += 1;
        }
        ops as f64 / started.elapsed().as_secs_f64()
    };
    std::fs::remove_file(&path)?;
    Ok((sequential, small))
}

/// All of the above; disk figures are measured in `dir` (put it on the registries' disk).
pub async fn measure(dir: &Path) -> anyhow::Result<Limits> {
    let (blake3_gib_s, sha256_gib_s, fastcdc_gib_s, ingest_pipeline_gib_s) =
        tokio::task::spawn_blocking(cpu).await?;
    let tcp_loopback_gib_s = tcp_loopback(4 << 30).await?;
    let dir = dir.to_path_buf();
    let (disk_write_synced_mib_s, disk_fsync_4k_per_s) =
        tokio::task::spawn_blocking(move || disk(&dir, 1 << 30)).await??;
    Ok(Limits {
        blake3_gib_s,
        sha256_gib_s,
        fastcdc_gib_s,
        ingest_pipeline_gib_s,
        tcp_loopback_gib_s,
        disk_write_synced_mib_s,
        disk_fsync_4k_per_s,
    })
}
