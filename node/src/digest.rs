//! Content digests: [`Blake3`] names chunks and blobs inside Arca, [`Sha256`] is what clients
//! speak. Both are 32 bytes; in JSON they are lowercase hex, in the binary state encodings raw
//! bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const LABEL: &'static str = $label;

            /// Parses 64 hex characters (either case).
            pub fn from_hex(hex_str: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hex_str, &mut out).ok()?;
                Some(Self(out))
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Some(Self(bytes.try_into().ok()?))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}:{}", $label, self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Accept hex text and raw bytes whatever the format claims: serde's buffering
                // (untagged and internally tagged enums) loses the human-readable flag.
                struct DigestVisitor;
                impl<'de> serde::de::Visitor<'de> for DigestVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {} digest as 64 hex characters or 32 bytes", $label)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::from_hex(text).ok_or_else(|| E::custom(concat!("invalid ", $label, " hex digest")))
                    }
                    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<$name, E> {
                        $name::from_slice(bytes).ok_or_else(|| E::custom(concat!($label, " digest must be 32 bytes")))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        let mut out = [0u8; 32];
                        for byte in out.iter_mut() {
                            *byte = seq
                                .next_element()?
                                .ok_or_else(|| serde::de::Error::custom(concat!($label, " digest must be 32 bytes")))?;
                        }
                        if seq.next_element::<u8>()?.is_some() {
                            return Err(serde::de::Error::custom(concat!($label, " digest must be 32 bytes")));
                        }
                        Ok($name(out))
                    }
                }
                if d.is_human_readable() {
                    d.deserialize_str(DigestVisitor)
                } else {
                    d.deserialize_bytes(DigestVisitor)
                }
            }
        }
    };
}

digest_type!(
    /// A blake3 hash: the name of a chunk, and Arca's internal id of a blob.
    Blake3,
    "blake3"
);
digest_type!(
    /// A sha256 hash of a whole blob.
    Sha256,
    "sha256"
);

impl Blake3 {
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl From<blake3::Hash> for Blake3 {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

/// Chunks are named by the blake3 hash of their bytes.
pub type ChunkId = Blake3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let d = Blake3::of(b"hello");
        assert_eq!(Blake3::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Blake3::from_hex(&d.to_hex().to_uppercase()), Some(d));
        assert!(Sha256::from_hex("abc").is_none());
        assert!(Sha256::from_hex(&"g".repeat(64)).is_none());
    }

    #[test]
    fn json_is_hex_and_msgpack_is_bytes() {
        let d = Sha256([7u8; 32]);
        let json = serde_json::to_string(&d).expect("json");
        assert_eq!(json, format!("\"{}\"", "07".repeat(32)));
        let packed = rmp_serde::to_vec(&d).expect("msgpack");
        assert_eq!(packed.len(), 34);
        let back: Sha256 = rmp_serde::from_slice(&packed).expect("decode");
        assert_eq!(back, d);
        let from_json: Sha256 = serde_json::from_str(&json).expect("decode json");
        assert_eq!(from_json, d);
    }
}
