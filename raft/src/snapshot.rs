//! Snapshot encoding and the file that keeps the current snapshot.
//!
//! A snapshot is every key/value pair of the state-machine column family, length-prefixed. It
//! holds metadata only (chunk bytes never travel through Raft), so it is built in memory. The
//! current snapshot lives in one file, replaced atomically (write, fsync, rename, fsync dir).

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::storage::{decode, encode};
use crate::types::SnapshotMeta;

const FILE_NAME: &str = "current.snapshot";
const MAGIC: &[u8; 8] = b"ARCASNP1";

/// Appends one key/value pair to a snapshot body.
pub(crate) fn encode_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Splits a snapshot body into its key/value pairs, refusing a truncated body.
pub(crate) fn decode_pairs(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    fn take<'a>(data: &mut &'a [u8]) -> io::Result<&'a [u8]> {
        if data.len() < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated snapshot",
            ));
        }
        let (len, rest) = data.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated snapshot",
            ));
        }
        let (value, rest) = rest.split_at(len);
        *data = rest;
        Ok(value)
    }
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let key = take(&mut data)?.to_vec();
        let value = take(&mut data)?.to_vec();
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The directory holding the current snapshot file.
#[derive(Clone)]
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    pub(crate) fn new(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub(crate) fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let meta_bytes = encode(meta).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&(meta_bytes.len() as u32).to_be_bytes())?;
            file.write_all(&meta_bytes)?;
            file.write_all(data)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        fs::File::open(&self.dir)?.sync_all()
    }

    pub(crate) fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let bytes = match fs::read(self.dir.join(FILE_NAME)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, "corrupt snapshot file");
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(invalid)?;
        if rest.len() < 4 {
            return Err(invalid());
        }
        let meta_len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        if rest.len() < meta_len {
            return Err(invalid());
        }
        let meta: SnapshotMeta = decode(&rest[..meta_len]).map_err(io::Error::other)?;
        Ok(Some((meta, rest[meta_len..].to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_truncation_is_refused() {
        let mut body = Vec::new();
        encode_pair(&mut body, b"a", b"1");
        encode_pair(&mut body, b"", b"");
        encode_pair(&mut body, b"key", &[0u8; 300]);
        let pairs = decode_pairs(&body).expect("decodes");
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2].1.len(), 300);
        assert!(decode_pairs(&body[..body.len() - 1]).is_err());
    }
}
