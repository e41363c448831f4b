//! The encodings of before the format envelope (command version 4), and how they map onto it.
//!
//! Before the envelope, generic file writes were `Command::PutArtifact`/`DeleteArtifact` and
//! registry changes `Command::Oci`. Old Raft logs, change logs, divergent writes and older
//! primaries still carry them, and older voters still need them: they decode as [`Legacy`]
//! values, apply as their format's version 1 payload, answer in the old encoding, and a
//! format command is turned back into one while some voter is older than the envelope.

use serde::{Deserialize, Serialize};

use super::{Command, FormatName, Outcome, ReplicatedEntry, ENVELOPE_VERSION};

/// A command of an earlier encoding, kept as the MessagePack value it was: the core never
/// looks inside, it only moves it into the format envelope (see [`Command::envelope`]).
/// It encodes back to exactly the value it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Legacy(pub Vec<u8>);

impl Serialize for Legacy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value =
            rmpv::decode::read_value(&mut self.0.as_slice()).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Legacy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = rmpv::Value::deserialize(deserializer)?;
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).map_err(serde::de::Error::custom)?;
        Ok(Legacy(bytes))
    }
}

/// The format that took over the generic file commands of before the envelope.
const GENERIC: &str = "generic";
/// The format that took over `Command::Oci`.
const OCI: &str = "oci";
/// The variant names of the generic commands of before the envelope: the `generic` format's
/// version 1 payload is `{name: fields}` with these names (what `Command` encoded them as).
const LEGACY_PUT: &str = "put_artifact";
const LEGACY_DELETE: &str = "delete_artifact";

/// `{name: value}`, encoded: a command enum variant as MessagePack with field names has it.
fn tagged(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + name.len() + 2);
    // A map of one entry, the variant name as a string, then the value as it was.
    let _ = rmp::encode::write_map_len(&mut out, 1);
    let _ = rmp::encode::write_str(&mut out, name);
    out.extend_from_slice(value);
    out
}

/// The `(name, value)` of a one-entry map (see [`tagged`]).
fn untag(payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = rmpv::decode::read_value(&mut &payload[..]).ok()?;
    let rmpv::Value::Map(mut entries) = value else {
        return None;
    };
    if entries.len() != 1 {
        return None;
    }
    let (name, inner) = entries.pop()?;
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &inner).ok()?;
    Some((name.as_str()?.to_string(), bytes))
}

impl Command {
    /// The format command this is, in the envelope's terms: `(format, version, payload)`.
    /// Commands of before the envelope map onto their format's version 1 payload.
    pub fn envelope(&self) -> Option<(FormatName, u32, std::borrow::Cow<'_, [u8]>)> {
        use std::borrow::Cow;
        match self {
            Command::Format {
                format,
                version,
                payload,
            } => Some((format.clone(), *version, Cow::Borrowed(payload.as_slice()))),
            Command::Oci(Legacy(bytes)) => Some((FormatName::new(OCI), 1, Cow::Borrowed(bytes))),
            Command::PutArtifact(Legacy(bytes)) => Some((
                FormatName::new(GENERIC),
                1,
                Cow::Owned(tagged(LEGACY_PUT, bytes)),
            )),
            Command::DeleteArtifact(Legacy(bytes)) => Some((
                FormatName::new(GENERIC),
                1,
                Cow::Owned(tagged(LEGACY_DELETE, bytes)),
            )),
            _ => None,
        }
    }

    /// This command as nodes before the envelope encode it, if it has such a form (version 1
    /// payloads of `generic` and `oci`); replicated batches convert every entry.
    pub fn legacy_form(&self) -> Option<Command> {
        match self {
            Command::Format {
                format,
                version: 1,
                payload,
            } if format == OCI => Some(Command::Oci(Legacy(payload.to_vec()))),
            Command::Format {
                format,
                version: 1,
                payload,
            } if format == GENERIC => match untag(payload)? {
                (name, inner) if name == LEGACY_PUT => Some(Command::PutArtifact(Legacy(inner))),
                (name, inner) if name == LEGACY_DELETE => {
                    Some(Command::DeleteArtifact(Legacy(inner)))
                }
                _ => None,
            },
            Command::Format { .. } => None,
            Command::Replicated { entries } => Some(Command::Replicated {
                entries: entries
                    .iter()
                    .map(|entry| {
                        Some(ReplicatedEntry {
                            command: match entry.command.required_version() {
                                v if v >= ENVELOPE_VERSION => entry.command.legacy_form()?,
                                _ => entry.command.clone(),
                            },
                            ..entry.clone()
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            }),
            _ => None,
        }
    }
}

impl Outcome {
    /// The answer to a command of `format`, as the format encoded it; `None` when the
    /// command did not reach the format (a mirror's refusal, an undecodable command).
    pub fn format_payload(&self, format: &str) -> Option<Vec<u8>> {
        match self {
            Outcome::Format {
                format: name,
                payload,
                ..
            } if name == format => Some(payload.to_vec()),
            Outcome::Oci(Legacy(payload)) if format == OCI => Some(payload.clone()),
            Outcome::RepoNotFound
            | Outcome::WrongFormat { .. }
            | Outcome::ArtifactStored { .. }
            | Outcome::ArtifactUnchanged
            | Outcome::ArtifactDeleted { .. }
            | Outcome::ArtifactNotFound
            | Outcome::Immutable
                if format == GENERIC =>
            {
                rmp_serde::to_vec_named(self).ok()
            }
            _ => None,
        }
    }

    /// The answer to `command` (a format command in an encoding of before the envelope) as
    /// nodes of that time gave it, from what its format answered.
    pub fn legacy(
        command: &Command,
        format: FormatName,
        changed: bool,
        payload: Vec<u8>,
    ) -> Outcome {
        let generic = match command {
            Command::Oci(_) => return Outcome::Oci(Legacy(payload)),
            Command::PutArtifact(_) | Command::DeleteArtifact(_) => {
                rmp_serde::from_slice::<Outcome>(&payload).ok()
            }
            _ => None,
        };
        generic.unwrap_or(Outcome::Format {
            format,
            changed,
            payload: serde_bytes::ByteBuf::from(payload),
        })
    }
}
