//! Protobuf definitions and generated gRPC code for Arca. No logic lives here: the types are
//! converted to domain types at the network edge (`arca-raft`, `arca-node`).

/// `arca.v1`: the intra-region services.
pub mod v1 {
    #![allow(clippy::all, missing_docs, unused_qualifications)]
    tonic::include_proto!("arca.v1");
}
