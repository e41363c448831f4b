//! The binary encoding of state-machine values and Raft commands (MessagePack with field
//! names, so records can gain fields without breaking old data).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::internal("encode record", e))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::internal("decode record", e))
}
