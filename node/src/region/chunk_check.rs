//! Counting the referenced chunks this node lacks (`arca cluster verify`, `CheckChunks`).

use arca_proto::v1::CheckChunksReply;

use super::Region;

/// Counts the referenced chunks this node lacks (a full scan of the reference counts).
pub async fn check_chunks(region: &Region) -> Result<CheckChunksReply, crate::error::Error> {
    let catalog = region.resync.catalog().clone();
    let store = region.chunks.clone();
    let node_id = region.node_id;
    tokio::task::spawn_blocking(move || {
        let mut referenced = 0;
        let mut missing = 0;
        catalog.for_each_referenced_chunk(|id| {
            referenced += 1;
            if !store.contains(&id)? {
                missing += 1;
            }
            Ok(())
        })?;
        Ok(CheckChunksReply {
            node_id,
            referenced,
            missing,
        })
    })
    .await
    .map_err(|e| crate::error::Error::internal("chunk check panicked", e))?
}
