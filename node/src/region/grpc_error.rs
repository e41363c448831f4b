//! The one mapping from the node's and the Raft layer's errors to gRPC statuses, for every
//! service a node serves (`ClusterService`, `ChunkService`). The status code tells the caller
//! what it can do (retry elsewhere, give up, fix its request), the message says what happened
//! (internal details stay in this node's log), and the `arca-code` metadata carries the error's
//! stable code (`NO_QUORUM`, `NOT_LEADER`, `CORRUPT_CHUNK`, …).

use arca_raft::{ConsensusError, RaftGroupError};
use axum::http::StatusCode;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::Error;

/// The metadata key of the stable error code.
pub const CODE_KEY: &str = "arca-code";

fn status(code: Code, stable: &'static str, message: String) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(CODE_KEY, MetadataValue::from_static(stable));
    status
}

/// A node error as a gRPC status, chosen by what its HTTP status means.
pub fn from_error(e: Error) -> Status {
    let code = match e.status() {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::BAD_REQUEST | StatusCode::RANGE_NOT_SATISFIABLE => Code::InvalidArgument,
        StatusCode::CONFLICT => Code::AlreadyExists,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE => Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::TEMPORARY_REDIRECT | StatusCode::FORBIDDEN => Code::FailedPrecondition,
        StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        _ => Code::Internal,
    };
    let message = match (&e, code) {
        // A peer asking for a chunk this node lacks tries another (over HTTP it is a 500:
        // the node itself failed to serve content it references).
        (Error::MissingChunk { chunk }, _) => {
            return status(
                Code::NotFound,
                e.code(),
                format!("chunk {chunk} is not here"),
            )
        }
        (Error::CorruptChunk { chunk }, _) => {
            return status(
                Code::DataLoss,
                e.code(),
                format!("chunk {chunk} does not match its name"),
            )
        }
        (_, Code::Internal) => {
            tracing::error!(error = %e, "internal error answering a peer");
            "internal error; see the node's log".to_string()
        }
        _ => e.to_string(),
    };
    status(code, e.code(), message)
}

/// A consensus failure as a gRPC status; a refusal by a follower names the leader.
pub fn from_consensus(e: ConsensusError) -> Status {
    let code = e.code();
    match &e {
        ConsensusError::NotLeader { leader } => status(
            Code::FailedPrecondition,
            code,
            match leader {
                Some((id, info)) => format!(
                    "not the leader; the leader is node {id} at {}",
                    info.grpc_addr
                ),
                None => "not the leader; no leader is known".to_string(),
            },
        ),
        ConsensusError::NoQuorum { .. } | ConsensusError::Stopped { .. } => {
            status(Code::Unavailable, code, e.to_string())
        }
    }
}

/// A Raft group failure (membership, start-up, storage) as a gRPC status.
pub fn from_group(e: RaftGroupError) -> Status {
    let code = e.code();
    match e {
        RaftGroupError::Consensus(e) => from_consensus(e),
        RaftGroupError::Membership(message) => status(Code::FailedPrecondition, code, message),
        RaftGroupError::Timeout(..) => status(Code::DeadlineExceeded, code, e.to_string()),
        RaftGroupError::Stopped(_) => status(Code::Unavailable, code, e.to_string()),
        RaftGroupError::Config(_) | RaftGroupError::Storage(_) => {
            tracing::error!(error = %e, "raft failure answering a peer");
            status(
                Code::Internal,
                code,
                "internal raft error; see the node's log".into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stable_code(status: &Status) -> Option<&str> {
        status.metadata().get(CODE_KEY)?.to_str().ok()
    }

    #[test]
    fn statuses_carry_the_stable_code_and_hide_internal_details() {
        let corrupt = from_error(Error::CorruptChunk { chunk: "ab".into() });
        assert_eq!(corrupt.code(), Code::DataLoss);
        assert_eq!(stable_code(&corrupt), Some("CORRUPT_CHUNK"));
        let missing = from_error(Error::MissingChunk { chunk: "ab".into() });
        assert_eq!(missing.code(), Code::NotFound);
        let busy = from_error(Error::NotReady {
            reason: "the lease table is full".into(),
        });
        assert_eq!(
            (busy.code(), stable_code(&busy)),
            (Code::Unavailable, Some("NOT_READY"))
        );
        let internal = from_error(Error::Internal("rocksdb: /secret/path".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("/secret/path"));
        let follower = from_consensus(ConsensusError::NotLeader { leader: None });
        assert_eq!(
            (follower.code(), stable_code(&follower)),
            (Code::FailedPrecondition, Some("NOT_LEADER"))
        );
        let storage = from_group(RaftGroupError::Storage("disk /secret".into()));
        assert_eq!(stable_code(&storage), Some("RAFT_STORAGE"));
        assert!(!storage.message().contains("/secret"));
    }
}
