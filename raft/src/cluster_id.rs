//! The cluster id: which cluster a node belongs to, sent and checked on every Raft RPC.
//!
//! Two clusters can share a region name and, over time, addresses (a node rebuilt with an old
//! address, a test cluster next to production). The region name in each Raft message does not
//! tell them apart; the cluster id does. A node may not know its id yet (it is joining and
//! learns the id from the cluster), so the id is shared, settable state.

use std::sync::Arc;

/// This node's cluster id, shared by the Raft network client (which sends it) and server
/// (which checks it). Cheap to clone; clones share the value. Unknown until [`set`](Self::set).
#[derive(Clone, Default, Debug)]
pub struct ClusterId(Arc<parking_lot::RwLock<Option<String>>>);

impl ClusterId {
    /// The id, if known.
    pub fn get(&self) -> Option<String> {
        self.0.read().clone()
    }

    /// Sets (or replaces) the id. An empty id means unknown.
    pub fn set(&self, id: String) {
        *self.0.write() = if id.is_empty() { None } else { Some(id) };
    }

    /// Whether a message carrying `theirs` may be served: yes if it carries none (a node of an
    /// older version), if this node does not know its own yet (joining), or if they match.
    /// Otherwise the refusal names both.
    pub(crate) fn check(&self, theirs: &str) -> Result<(), String> {
        if theirs.is_empty() {
            return Ok(());
        }
        match self.0.read().as_deref() {
            Some(mine) if mine != theirs => Err(format!(
                "raft message from cluster {theirs:?} sent to a node of cluster {mine:?}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_or_absent_ids_pass_and_different_ones_do_not() {
        let id = ClusterId::default();
        assert_eq!(id.get(), None);
        assert!(
            id.check("b").is_ok(),
            "a node that does not know its id serves any"
        );
        let clone = id.clone();
        clone.set("a".into());
        assert_eq!(id.get().as_deref(), Some("a"), "clones share the id");
        assert!(id.check("a").is_ok());
        assert!(id.check("").is_ok(), "a message without an id is served");
        let refusal = id.check("b").expect_err("another cluster is refused");
        assert!(
            refusal.contains("\"a\"") && refusal.contains("\"b\""),
            "{refusal}"
        );
        id.set(String::new());
        assert_eq!(id.get(), None);
    }
}
