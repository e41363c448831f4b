//! A data directory's identity (`node.json`): which node of which region, of which cluster, it
//! belongs to; a directory is never reused for another.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Which node and region a data directory belongs to; a directory is never reused for another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Identity {
    pub(super) node_id: u64,
    pub(super) region: String,
    /// The region's cluster id, once this node knows it (absent in directories written before
    /// cluster ids, and on a node not yet added to its region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cluster_id: Option<String>,
}

pub(super) fn check_identity(
    data_dir: &Path,
    node_id: u64,
    region: &str,
) -> anyhow::Result<Identity> {
    let path = data_dir.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes)
                .with_context(|| format!("parse {}", path.display()))?;
            if found.node_id != node_id || found.region != region {
                bail!(
                    "data directory {} belongs to node {} of region {:?}, not node {} of region {:?}",
                    data_dir.display(),
                    found.node_id,
                    found.region,
                    node_id,
                    region
                );
            }
            Ok(found)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                node_id,
                region: region.to_string(),
                cluster_id: None,
            };
            save_identity(data_dir, &identity)?;
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Replaces `node.json` atomically.
pub(super) fn save_identity(data_dir: &Path, identity: &Identity) -> anyhow::Result<()> {
    let path = data_dir.join("node.json");
    let tmp = data_dir.join("node.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(identity)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Records the region's cluster id in `node.json` (once) and in the Raft layer.
pub(super) fn adopt_cluster_id(
    data_dir: &Path,
    cluster_id: &arca_raft::ClusterId,
    id: &str,
) -> anyhow::Result<()> {
    let mut identity: Identity =
        serde_json::from_slice(&std::fs::read(data_dir.join("node.json"))?)?;
    match &identity.cluster_id {
        Some(known) if known == id => {}
        Some(known) => {
            bail!("this node belongs to cluster {known}, but its region's state names cluster {id}")
        }
        None => {
            identity.cluster_id = Some(id.to_string());
            save_identity(data_dir, &identity)?;
            tracing::info!(cluster_id = id, "recorded the region's cluster id");
        }
    }
    cluster_id.set(id.to_string());
    Ok(())
}
