//! The gRPC chunk service: peers ask what this node lacks, push chunks to it, and read chunks
//! from it. Every chunk is verified against its blake3 name on the way in and on the way out.

use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::chunk_service_server::ChunkService;
use arca_proto::v1::{Chunk, GetChunkRequest, HasChunksReply, HasChunksRequest, PutChunksReply};
use futures::StreamExt;
use metrics::counter;
use tonic::{Request, Response, Status, Streaming};

use crate::digest::ChunkId;
use crate::error::Error;
use crate::storage::chunk_store::ChunkStore;

/// Longest lease a peer may ask for.
const MAX_LEASE: Duration = Duration::from_secs(3600);

pub struct ChunkGrpcService {
    store: Arc<ChunkStore>,
}

impl ChunkGrpcService {
    pub fn new(store: Arc<ChunkStore>) -> Self {
        Self { store }
    }
}

fn parse_id(raw: &[u8]) -> Result<ChunkId, Status> {
    ChunkId::from_slice(raw).ok_or_else(|| Status::invalid_argument("a chunk id is 32 bytes"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("storage task panicked: {e}")))?
        .map_err(crate::region::grpc_error::from_error)
}

#[tonic::async_trait]
impl ChunkService for ChunkGrpcService {
    async fn has_chunks(
        &self,
        request: Request<HasChunksRequest>,
    ) -> Result<Response<HasChunksReply>, Status> {
        let request = request.into_inner();
        let ids = request
            .ids
            .iter()
            .map(|raw| parse_id(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let lease = Duration::from_secs(u64::from(request.lease_seconds)).min(MAX_LEASE);
        let store = self.store.clone();
        let missing = blocking(move || {
            // Lease first: a chunk present now must still be here when the caller's command
            // applies, and a chunk about to arrive must not be swept as an orphan.
            if store.lease(&ids, lease).is_err() {
                return Err(Error::NotReady {
                    reason: "this node holds the most chunk leases it allows".into(),
                });
            }
            let mut missing = Vec::new();
            let mut present = Vec::new();
            for id in ids {
                if store.contains(&id)? {
                    present.push(id);
                } else {
                    missing.push(id.as_bytes().to_vec());
                }
            }
            // The caller counts a "held" toward the majority that must hold the chunks
            // *durably*: one written here a moment ago without the WAL is flushed first.
            store.make_durable(&present)?;
            Ok(missing)
        })
        .await?;
        Ok(Response::new(HasChunksReply { missing }))
    }

    async fn put_chunks(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<PutChunksReply>, Status> {
        let mut incoming = request.into_inner();
        let mut stored = 0u64;
        let mut bytes = 0u64;
        while let Some(chunk) = incoming.next().await {
            let chunk = chunk?;
            let id = parse_id(&chunk.id)?;
            let len = chunk.data.len() as u64;
            let store = self.store.clone();
            blocking(move || store.put_verified(&id, &chunk.data)).await?;
            stored += 1;
            bytes += len;
        }
        if stored > 0 {
            let store = self.store.clone();
            blocking(move || store.sync()).await?;
        }
        counter!("arca_region_chunk_replication_bytes_total", "direction" => "received")
            .increment(bytes);
        Ok(Response::new(PutChunksReply { stored, bytes }))
    }

    async fn get_chunk(
        &self,
        request: Request<GetChunkRequest>,
    ) -> Result<Response<Chunk>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        let store = self.store.clone();
        let data = blocking(move || store.read(&id)).await?;
        Ok(Response::new(Chunk {
            id: id.as_bytes().to_vec(),
            data: data.to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::chunk_store::Durability;

    #[tokio::test]
    async fn a_chunk_that_is_not_durable_here_is_not_reported_as_held() {
        // Audit D1, scenario B: a peer asking whether this node holds a chunk counts a "yes"
        // toward the majority that must hold it durably before its command commits. A chunk
        // that sits unflushed in the memtable (another upload on this node wrote it without the
        // WAL a moment ago) is lost on kill -9, so it must be made durable before the answer,
        // or be reported as missing.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("open")).expect("store");
        let data = vec![7u8; 64 << 10];
        let id = ChunkId::of(&data);
        store
            .write(&id, &data, Durability::Unlogged)
            .expect("an upload on this node writes it");
        let service = ChunkGrpcService::new(store.clone());
        let reply = service
            .has_chunks(Request::new(HasChunksRequest {
                ids: vec![id.as_bytes().to_vec()],
                lease_seconds: 60,
            }))
            .await
            .expect("has_chunks")
            .into_inner();
        let reported_missing = reply.missing.iter().any(|raw| raw == id.as_bytes());
        let flushed = store.memtable_entries_for_test().expect("memtable") == 0;
        assert!(
            reported_missing || flushed,
            "the chunk was reported as held while only in the memtable"
        );
    }
}
