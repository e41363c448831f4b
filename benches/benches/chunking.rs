//! Chunking + hashing throughput, next to blake3 and sha256 alone on the same data.
//!
//! `cargo bench -p arca-benches --bench chunking`

use arca_benches::limits::ingest_pipeline;
use arca_benches::random_bytes;
use arca_node::storage::chunker::{Chunker, ChunkerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::Digest;

const SIZE: usize = 64 << 20;

fn benches(c: &mut Criterion) {
    let data = random_bytes(SIZE, 1);
    let mut group = c.benchmark_group("hashing_64MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("blake3_alone", |b| {
        b.iter(|| blake3::hash(std::hint::black_box(&data)))
    });
    group.bench_function("sha256_alone", |b| {
        b.iter(|| sha2::Sha256::digest(std::hint::black_box(&data)))
    });
    group.bench_function("fastcdc_boundaries_alone", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(ChunkerConfig::default());
            let mut n = chunker.push(std::hint::black_box(&data)).len();
            n += chunker.finish().len();
            n
        })
    });
    group.bench_function("ingest_pipeline", |b| {
        b.iter(|| ingest_pipeline(std::hint::black_box(&data)))
    });
    group.finish();
}

criterion_group!(chunking, benches);
criterion_main!(chunking);
