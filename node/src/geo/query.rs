//! Questions one region asks another over the replication connection: a file for read-through,
//! and the state digest for verification.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::geo::Geo;
use crate::metadata::codec::{decode, encode};
use crate::metadata::model::{Artifact, BlobDescriptor};
use crate::names::{ArtifactPath, RepoName};

/// A query, MessagePack-encoded inside the replication protocol's opaque `Query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GeoQuery {
    /// A file and its blob, for a mirror reading through to the primary.
    File { repo: RepoName, path: ArtifactPath },
    /// The answering region's state digest and chunk check.
    RegionDigest,
}

/// A file found at the primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileAnswer {
    pub artifact: Artifact,
    pub blob: BlobDescriptor,
    pub immutable: bool,
}

/// A region's digest, as `arca cluster verify` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestAnswer {
    pub region: String,
    pub role: String,
    pub epoch: u64,
    pub seq: u64,
    pub digest: String,
    pub referenced_chunks: u64,
    /// Per node: (node id, referenced chunks, missing chunks).
    pub nodes: Vec<(u64, u64, u64)>,
    pub errors: Vec<String>,
}

fn storage(e: impl std::fmt::Display) -> arca_replication::Error {
    arca_replication::Error::storage(e)
}

/// Answers a query from another region.
pub async fn answer(geo: &Arc<Geo>, request: Vec<u8>) -> arca_replication::Result<Vec<u8>> {
    let query: GeoQuery = decode(&request).map_err(storage)?;
    match query {
        GeoQuery::File { repo, path } => {
            // A read-through asks the primary for what a mirror lacks: a stale answer only
            // means "not found yet".
            let _ = geo.region.read_barrier(true).await;
            let found = match (geo.catalog.repo(&repo), geo.catalog.artifact(&repo, &path)) {
                (Ok(Some(repo)), Ok(Some(artifact))) => match geo.catalog.blob(&artifact.blob) {
                    Ok(Some(blob)) => Some(FileAnswer {
                        artifact,
                        blob: blob.descriptor,
                        immutable: repo.immutable,
                    }),
                    _ => None,
                },
                _ => None,
            };
            encode(&found).map_err(storage)
        }
        GeoQuery::RegionDigest => {
            let answer = region_digest(geo).await;
            encode(&answer).map_err(storage)
        }
    }
}

/// This region's digest at its current position, with every node's chunk check.
pub async fn region_digest(geo: &Arc<Geo>) -> DigestAnswer {
    if let Err(e) = geo.region.read_barrier(false).await {
        return DigestAnswer {
            region: geo.region.name.clone(),
            role: String::new(),
            epoch: 0,
            seq: 0,
            digest: String::new(),
            referenced_chunks: 0,
            nodes: Vec::new(),
            errors: vec![e.to_string()],
        };
    }
    let mut errors = Vec::new();
    let catalog = geo.catalog.clone();
    let digest = tokio::task::spawn_blocking(move || catalog.state_digest()).await;
    let (head, digest, referenced_chunks) = match digest {
        Ok(Ok(digest)) => digest,
        Ok(Err(e)) => {
            errors.push(format!("digest: {e}"));
            (Default::default(), String::new(), 0)
        }
        Err(e) => {
            errors.push(format!("digest task: {e}"));
            (Default::default(), String::new(), 0)
        }
    };
    let mut nodes = Vec::new();
    for (id, info) in geo.region.raft.membership().nodes {
        let reply = if id == geo.region.node_id {
            crate::region::chunk_check::check_chunks(&geo.region)
                .await
                .map_err(|e| e.to_string())
        } else {
            geo.region
                .peers
                .cluster_client(&info)
                .check_chunks({
                    let mut request = tonic::Request::new(arca_proto::v1::CheckChunksRequest {});
                    request.set_timeout(std::time::Duration::from_secs(120));
                    request
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.message().to_string())
        };
        match reply {
            Ok(reply) => nodes.push((id, reply.referenced, reply.missing)),
            Err(e) => errors.push(format!("node {id}: {e}")),
        }
    }
    let role = match geo.role() {
        crate::metadata::model::RegionRole::Primary => "primary",
        crate::metadata::model::RegionRole::Mirror { .. } => "mirror",
    };
    DigestAnswer {
        region: geo.region.name.clone(),
        role: role.into(),
        epoch: head.epoch,
        seq: head.last_seq,
        digest,
        referenced_chunks,
        nodes,
        errors,
    }
}
