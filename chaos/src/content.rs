//! Artifact content derived from the run's seed: the bytes of version `v` of `key` are a pure
//! function of `(seed, key, v)`, so the workload never stores what it wrote; it keeps only the
//! sha256 of each version it sent, and any read is checked against those.

use sha2::{Digest, Sha256};

/// Sizes span one to several chunks at the chaos cluster's chunking (16–128 KiB).
const MIN_LEN: u64 = 1_000;
const MAX_LEN: u64 = 300_000;

/// The bytes of `version` of `key`.
pub fn content(seed: u64, key: &str, version: u64) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(&version.to_le_bytes());
    hasher.update(key.as_bytes());
    let mut reader = hasher.finalize_xof();
    let mut len_bytes = [0u8; 8];
    reader.fill(&mut len_bytes);
    let len = MIN_LEN + u64::from_le_bytes(len_bytes) % (MAX_LEN - MIN_LEN);
    let mut out = vec![0u8; len as usize];
    reader.fill(&mut out);
    out
}

/// `len` bytes of incompressible, non-repeating content determined by `seed` (the test suites'
/// generator).
pub fn seeded(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A gzipped tar of `files` (path, bytes) with fixed headers (mode 0644, time 0) and a fixed
/// compression level: the same bytes for the same files, every time (empty if it cannot be
/// built).
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        if builder.append_data(&mut header, path, *data).is_err() {
            return Vec::new();
        }
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_function_of_seed_key_and_version() {
        assert_eq!(content(1, "a/b", 1), content(1, "a/b", 1));
        assert_ne!(content(1, "a/b", 1), content(1, "a/b", 2));
        assert_ne!(content(1, "a/b", 1), content(2, "a/b", 1));
        assert_ne!(content(1, "a/b", 1), content(1, "a/c", 1));
        let len = content(7, "x", 3).len() as u64;
        assert!((MIN_LEN..MAX_LEN).contains(&len));
    }
}
