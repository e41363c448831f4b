//! Benchmarks for Arca (see `benches/`): chunking and hashing throughput against the raw
//! hashers, HTTP push/pull round trips through a real node, a load generator for any OCI
//! registry, the machine's limits, and the comparison with a peer registry. Results and the
//! commands that produced them live in `docs/benchmarks.md`.

pub mod compare;
pub mod limits;
pub mod load;
pub mod packages;

/// `len` bytes of incompressible data, different for every `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    arca_chaos::content::seeded(seed, len)
}
