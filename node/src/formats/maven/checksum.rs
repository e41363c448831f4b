//! The digests Maven's checksum siblings carry (`.sha1`, `.md5`, `.sha256`, `.sha512`):
//! computed while a file streams in, or over a rendered metadata document, and read from what
//! a client PUTs (bare hex, or `hex  filename` as some tools write it).

use md5::Digest as _;

use super::coords::Checksum;

/// SHA-1, MD5 and SHA-512 of a stream (ingest computes SHA-256 itself).
#[derive(Default)]
pub struct Hashers {
    sha1: sha1::Sha1,
    md5: md5::Md5,
    sha512: sha2::Sha512,
}

/// What [`Hashers`] computed, as lowercase hex.
pub struct Digests {
    pub sha1: String,
    pub md5: String,
    pub sha512: String,
}

impl Hashers {
    pub fn update(&mut self, data: &[u8]) {
        self.sha1.update(data);
        self.md5.update(data);
        self.sha512.update(data);
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha1: hex::encode(self.sha1.finalize()),
            md5: hex::encode(self.md5.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
        }
    }
}

/// The digest of `bytes` as lowercase hex.
pub fn of(algo: Checksum, bytes: &[u8]) -> String {
    match algo {
        Checksum::Sha1 => hex::encode(sha1::Sha1::digest(bytes)),
        Checksum::Md5 => hex::encode(md5::Md5::digest(bytes)),
        Checksum::Sha256 => hex::encode(sha2::Sha256::digest(bytes)),
        Checksum::Sha512 => hex::encode(sha2::Sha512::digest(bytes)),
    }
}

/// The digest a checksum PUT carries: its first word, hex of the algorithm's length.
pub fn parse_body(algo: Checksum, body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body)
        .map_err(|_| format!("a .{} file is text (hex digits)", algo.name()))?;
    let word = text.split_whitespace().next().unwrap_or_default();
    if word.len() != algo.hex_len() || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a .{} file holds {} hex digits, not {:?}",
            algo.name(),
            algo.hex_len(),
            word.chars().take(140).collect::<String>()
        ));
    }
    Ok(word.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_digests_match_one_shot_ones() {
        let mut hashers = Hashers::default();
        hashers.update(b"hel");
        hashers.update(b"lo");
        let digests = hashers.finish();
        assert_eq!(digests.sha1, of(Checksum::Sha1, b"hello"));
        assert_eq!(digests.md5, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(digests.sha512, of(Checksum::Sha512, b"hello"));
    }

    #[test]
    fn checksum_bodies() {
        let sha1 = of(Checksum::Sha1, b"x");
        assert_eq!(
            parse_body(Checksum::Sha1, sha1.to_uppercase().as_bytes()).as_deref(),
            Ok(sha1.as_str())
        );
        let with_name = format!("{sha1}  hello-1.0.0.jar\n");
        assert!(parse_body(Checksum::Sha1, with_name.as_bytes()).is_ok());
        assert!(parse_body(Checksum::Md5, sha1.as_bytes()).is_err());
        assert!(parse_body(Checksum::Sha1, b"").is_err());
        assert!(parse_body(Checksum::Sha1, &[0xff; 40]).is_err());
    }
}
