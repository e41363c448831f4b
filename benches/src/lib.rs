//! Benchmarks for Arca (see `benches/`): chunking and hashing throughput against the raw
//! hashers, and HTTP push/pull round trips through a real node. Results and the commands that
//! produced them live in `docs/benchmarks.md`.

/// `len` bytes of incompressible data, different for every `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}
