//! Reading a stored distribution: the core metadata file (a wheel's
//! `<name>-<version>.dist-info/METADATA`, an sdist's `<name>-<version>/PKG-INFO`) and the
//! fields of it the index needs.
//!
//! The file was just ingested into this node's chunk store; [`BlobReader`] reads it back from
//! there with `Read + Seek`, so a wheel's zip directory is read from its end without holding
//! the file in memory, and an sdist is decompressed as a stream until `PKG-INFO` is found.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;

use super::names::DistKind;
use crate::metadata::model::ChunkRef;
use crate::storage::chunk_store::ChunkStore;

/// Largest core metadata file accepted (descriptions can be long; this is far beyond any
/// real one, and every index page lists its hash).
pub const MAX_METADATA: u64 = 1 << 20;
/// Entries of an sdist read before giving up on finding `PKG-INFO`.
const MAX_SDIST_ENTRIES: usize = 100_000;

/// Why a distribution's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("the file is not a valid {kind}: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("the {kind} has no {wanted}")]
    NoMetadata {
        kind: &'static str,
        wanted: &'static str,
    },
    #[error("the core metadata file is larger than {MAX_METADATA} bytes")]
    TooLarge,
    #[error("the stored file could not be read back: {0}")]
    Storage(String),
}

/// A stored blob as `Read + Seek`, chunk by chunk from the local chunk store.
pub struct BlobReader {
    store: Arc<ChunkStore>,
    chunks: Vec<ChunkRef>,
    /// Offset of each chunk's first byte.
    starts: Vec<u64>,
    size: u64,
    position: u64,
    current: Option<(usize, Bytes)>,
}

impl BlobReader {
    pub fn new(store: Arc<ChunkStore>, chunks: Vec<ChunkRef>) -> Self {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut size = 0u64;
        for chunk in &chunks {
            starts.push(size);
            size += u64::from(chunk.len);
        }
        Self {
            store,
            chunks,
            starts,
            size,
            position: 0,
            current: None,
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let index = match self.starts.binary_search(&self.position) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        if self.current.as_ref().map(|(i, _)| *i) != Some(index) {
            let data = self
                .store
                .read(&self.chunks[index].id)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.current = Some((index, data));
        }
        let Some((_, data)) = &self.current else {
            return Ok(0);
        };
        let offset = (self.position - self.starts[index]) as usize;
        let available = data.get(offset..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.position)
    }
}

/// Reads at most [`MAX_METADATA`] bytes of `reader`.
fn read_limited(reader: impl Read) -> Result<Vec<u8>, DistError> {
    let mut out = Vec::new();
    reader
        .take(MAX_METADATA + 1)
        .read_to_end(&mut out)
        .map_err(|e| DistError::Storage(e.to_string()))?;
    if out.len() as u64 > MAX_METADATA {
        return Err(DistError::TooLarge);
    }
    Ok(out)
}

/// The core metadata file of a distribution, byte for byte.
pub fn core_metadata(kind: DistKind, reader: BlobReader) -> Result<Vec<u8>, DistError> {
    match kind {
        DistKind::Wheel => from_zip(reader, "wheel", |name| {
            let mut parts = name.split('/');
            matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(dir), Some("METADATA"), None) if dir.ends_with(".dist-info")
            )
        }),
        DistKind::SdistZip => from_zip(reader, "zip sdist", is_pkg_info),
        DistKind::SdistTar => from_tar(reader),
    }
}

/// `<dir>/PKG-INFO`, one level down.
fn is_pkg_info(name: &str) -> bool {
    let mut parts = name.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(dir), Some("PKG-INFO"), None) if !dir.is_empty()
    )
}

fn from_zip(
    reader: BlobReader,
    kind: &'static str,
    wanted: fn(&str) -> bool,
) -> Result<Vec<u8>, DistError> {
    let malformed = |e: zip::result::ZipError| DistError::Malformed {
        kind,
        reason: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(malformed)?;
    let Some(index) = (0..archive.len()).find(|&i| archive.name_for_index(i).is_some_and(wanted))
    else {
        return Err(DistError::NoMetadata {
            kind,
            wanted: if kind == "wheel" {
                "*.dist-info/METADATA"
            } else {
                "PKG-INFO"
            },
        });
    };
    let entry = archive.by_index(index).map_err(malformed)?;
    if entry.size() > MAX_METADATA {
        return Err(DistError::TooLarge);
    }
    read_limited(entry)
}

fn from_tar(reader: BlobReader) -> Result<Vec<u8>, DistError> {
    let malformed = |e: std::io::Error| DistError::Malformed {
        kind: "sdist (.tar.gz)",
        reason: e.to_string(),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    for entry in archive
        .entries()
        .map_err(malformed)?
        .take(MAX_SDIST_ENTRIES)
    {
        let entry = entry.map_err(malformed)?;
        let path = entry.path().map_err(malformed)?;
        if is_pkg_info(&path.to_string_lossy()) {
            if entry.size() > MAX_METADATA {
                return Err(DistError::TooLarge);
            }
            return read_limited(entry);
        }
    }
    Err(DistError::NoMetadata {
        kind: "sdist",
        wanted: "<name>-<version>/PKG-INFO",
    })
}

/// The fields of a core metadata file the index needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMetadata {
    pub name: String,
    pub version: String,
    pub requires_python: Option<String>,
}

/// Parses the header of a core metadata file (RFC 822 style: `Key: value` lines with
/// indented continuations, up to the first blank line).
pub fn parse_core_metadata(bytes: &[u8]) -> Result<CoreMetadata, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the metadata is not UTF-8".to_string())?;
    let (mut name, mut version, mut requires_python) = (None, None, None);
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("the metadata line {line:?} is not 'Key: value'"));
        };
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(value),
            "version" => version = Some(value),
            "requires-python" if !value.is_empty() => requires_python = Some(value),
            _ => {}
        }
    }
    Ok(CoreMetadata {
        name: name.ok_or("the metadata has no Name")?,
        version: version.ok_or("the metadata has no Version")?,
        requires_python,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_metadata_header() {
        let text = b"Metadata-Version: 2.4\nName: Arca-Hello\nVersion: 0.1.0\nSummary: hi\n  more\nRequires-Python: >=3.8\nRequires-Dist: a\n\nName: body, not a header\n";
        let parsed = parse_core_metadata(text).expect("parse");
        assert_eq!(parsed.name, "Arca-Hello");
        assert_eq!(parsed.version, "0.1.0");
        assert_eq!(parsed.requires_python.as_deref(), Some(">=3.8"));
        assert!(parse_core_metadata(b"Version: 1\n").is_err());
        assert!(parse_core_metadata(b"garbage line\n").is_err());
        assert!(parse_core_metadata(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn pkg_info_is_one_level_down() {
        assert!(is_pkg_info("arca-hello-0.1.0/PKG-INFO"));
        assert!(!is_pkg_info("PKG-INFO"));
        assert!(!is_pkg_info("a/b/PKG-INFO"));
        assert!(!is_pkg_info("a/src/x.egg-info"));
    }
}
