//! Content-defined chunking of a byte stream with FastCDC (2020).
//!
//! Boundaries depend only on the bytes since the previous boundary, so the same content always
//! cuts the same way however it arrives in frames, and an edit moves only the boundaries near it.
//! The chunker keeps at most `max_size` plus one frame buffered.

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::FastCDC;
use serde::{Deserialize, Serialize};

/// Chunk size bounds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkerConfig {
    /// No boundary is placed before this many bytes (the last chunk may be shorter).
    pub min_size: u32,
    /// The target average chunk size.
    pub avg_size: u32,
    /// A boundary is forced after this many bytes.
    pub max_size: u32,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerConfig {
    /// Checks the bounds FastCDC accepts and that `min <= avg <= max`.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MINIMUM_MIN};
        if self.min_size < MINIMUM_MIN {
            return Err(format!("chunking.min_size must be at least {MINIMUM_MIN}"));
        }
        if !(AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size) {
            return Err(format!(
                "chunking.avg_size must be within {AVERAGE_MIN}..={AVERAGE_MAX}"
            ));
        }
        if self.max_size > MAXIMUM_MAX {
            return Err(format!("chunking.max_size must be at most {MAXIMUM_MAX}"));
        }
        if !(self.min_size <= self.avg_size && self.avg_size <= self.max_size) {
            return Err("chunking sizes must satisfy min_size <= avg_size <= max_size".into());
        }
        Ok(())
    }
}

/// Cuts a stream fed in arbitrary frames into content-defined chunks.
pub struct Chunker {
    config: ChunkerConfig,
    buffer: BytesMut,
}

impl Chunker {
    /// The config must have passed [`ChunkerConfig::validate`].
    pub fn new(config: ChunkerConfig) -> Self {
        Self {
            config,
            buffer: BytesMut::with_capacity(config.max_size as usize * 2),
        }
    }

    /// Adds bytes and returns every chunk whose boundary is now certain.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.buffer.extend_from_slice(data);
        let mut chunks = Vec::new();
        while self.buffer.len() >= self.config.max_size as usize {
            chunks.push(self.cut_one());
        }
        chunks
    }

    /// Ends the stream and returns the remaining chunks (none for an empty stream).
    pub fn finish(mut self) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while !self.buffer.is_empty() {
            chunks.push(self.cut_one());
        }
        chunks
    }

    fn cut_one(&mut self) -> Bytes {
        let cdc = FastCDC::new(
            &self.buffer,
            self.config.min_size,
            self.config.avg_size,
            self.config.max_size,
        );
        let (_, end) = cdc.cut(0, self.buffer.len());
        let end = end.clamp(1, self.buffer.len());
        self.buffer.split_to(end).freeze()
    }
}

/// Chunks a whole buffer at once (for tests and benchmarks).
pub fn chunk_all(config: ChunkerConfig, data: &[u8]) -> Vec<Bytes> {
    let mut chunker = Chunker::new(config);
    let mut chunks = chunker.push(data);
    chunks.extend(chunker.finish());
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerConfig {
        ChunkerConfig {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        }
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_all(small(), &[]).is_empty());
    }

    #[test]
    fn default_config_is_valid_and_bad_configs_are_refused() {
        assert!(ChunkerConfig::default().validate().is_ok());
        let mut bad = ChunkerConfig::default();
        bad.min_size = bad.avg_size + 1;
        assert!(bad.validate().is_err());
        bad = ChunkerConfig::default();
        bad.max_size = 64 * 1024 * 1024;
        assert!(bad.validate().is_err());
        bad = ChunkerConfig::default();
        bad.min_size = 1;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn default_sizes_average_near_one_mebibyte() {
        let data = pseudo_random(64 << 20, 7);
        let chunks = chunk_all(ChunkerConfig::default(), &data);
        let avg = data.len() / chunks.len();
        assert!(
            (512 << 10..=2 << 20).contains(&avg),
            "average chunk {avg} bytes over {} chunks",
            chunks.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn chunks_reassemble_and_respect_bounds(len in 0usize..200_000, seed: u64) {
            let data = pseudo_random(len, seed);
            let chunks = chunk_all(small(), &data);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            prop_assert_eq!(&joined, &data);
            for (i, chunk) in chunks.iter().enumerate() {
                prop_assert!(chunk.len() <= 16384);
                if i + 1 < chunks.len() {
                    prop_assert!(chunk.len() >= 1024, "non-final chunk of {} bytes", chunk.len());
                }
            }
        }

        #[test]
        fn boundaries_do_not_depend_on_framing(len in 1usize..150_000, seed: u64, frame in 1usize..20_000) {
            let data = pseudo_random(len, seed);
            let whole = chunk_all(small(), &data);
            let mut chunker = Chunker::new(small());
            let mut framed = Vec::new();
            for piece in data.chunks(frame) {
                framed.extend(chunker.push(piece));
            }
            framed.extend(chunker.finish());
            prop_assert_eq!(whole, framed);
        }

        #[test]
        fn an_edit_in_the_middle_changes_only_nearby_chunks(seed: u64, at in 0.3f64..0.7) {
            let data = pseudo_random(400_000, seed);
            let mut edited = data.clone();
            let pos = (data.len() as f64 * at) as usize;
            edited.splice(pos..pos + 10, [0xAB; 37]);
            let before = chunk_all(small(), &data);
            let after = chunk_all(small(), &edited);
            let before_ids: std::collections::HashSet<_> = before.iter().collect();
            // Every chunk that changed lies in one window around the edit: boundaries realign
            // within a few chunks of it and the rest of the file is cut exactly as before.
            let mut offset = 0usize;
            let mut changed = Vec::new();
            for chunk in &after {
                if !before_ids.contains(chunk) {
                    changed.push(offset..offset + chunk.len());
                }
                offset += chunk.len();
            }
            prop_assert!(!changed.is_empty(), "the edited chunk must change");
            let window = 8 * small().max_size as usize;
            let first = changed.first().map(|r| r.start).unwrap_or(pos);
            let last = changed.last().map(|r| r.end).unwrap_or(pos);
            prop_assert!(
                first + window >= pos && last <= pos + 37 + window,
                "changed bytes {first}..{last} reach far from the edit at {pos}"
            );
            let changed_bytes: usize = changed.iter().map(|r| r.len()).sum();
            prop_assert!(changed_bytes <= window, "{changed_bytes} bytes of chunks changed for a 37-byte edit");
            prop_assert!(after.len() > 20);
        }
    }
}
