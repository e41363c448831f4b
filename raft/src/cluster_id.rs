//! The cluster id: which cluster a node belongs to, sent and checked on every Raft RPC, and
//! where the node stands in it.
//!
//! Two clusters can share a region name and, over time, addresses (a node rebuilt with an old
//! address, a test cluster next to production). The region name in each Raft message does not
//! tell them apart; the cluster id does. A node may not know its id yet (it is joining and
//! learns the id from the cluster), so the id is shared, settable state.
//!
//! A node's *standing* closes the amnesia hole: a node whose data directory was wiped has
//! forgotten its log and its vote, so until it has been added to the region as a new member it
//! must not vote (it would vote for a candidate lacking committed entries), and a node with no
//! data that was told neither to create a region nor to join one serves no Raft RPC at all.

use std::sync::Arc;

/// Where a node stands in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It holds the region's state (or created the region): every RPC of its cluster.
    Member,
    /// It asked to join and is being added: log replication and snapshots, but no votes.
    Joining,
    /// It holds nothing and was not told to create or join a region: nothing.
    Blank,
}

#[derive(Debug)]
struct State {
    id: Option<String>,
    standing: Standing,
}

impl Default for State {
    fn default() -> Self {
        Self {
            id: None,
            standing: Standing::Member,
        }
    }
}

/// This node's cluster id and standing, shared by the Raft network client (which sends the id)
/// and server (which checks it). Cheap to clone; clones share the value. The id is unknown
/// until [`set`](Self::set).
#[derive(Clone, Default, Debug)]
pub struct ClusterId(Arc<parking_lot::RwLock<State>>);

/// Which Raft RPC a check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    Replication,
    Vote,
}

impl ClusterId {
    /// The id, if known.
    pub fn get(&self) -> Option<String> {
        self.0.read().id.clone()
    }

    /// Sets (or replaces) the id. An empty id means unknown.
    pub fn set(&self, id: String) {
        self.0.write().id = if id.is_empty() { None } else { Some(id) };
    }

    pub fn standing(&self) -> Standing {
        self.0.read().standing
    }

    pub fn set_standing(&self, standing: Standing) {
        self.0.write().standing = standing;
    }

    /// Whether a message carrying `theirs` may be served: not on a blank node, not a vote on a
    /// joining one; then yes if it carries no id (a node of an older version), if this node
    /// does not know its own yet, or if they match. Otherwise the refusal names both.
    pub fn check(&self, theirs: &str, kind: RpcKind) -> Result<(), String> {
        let state = self.0.read();
        match (state.standing, kind) {
            (Standing::Blank, _) => {
                return Err(
                    "this node holds no region data and was not told to create a region \
                     (--init-region) or to join one (--join)"
                        .into(),
                )
            }
            (Standing::Joining, RpcKind::Vote) => {
                return Err(
                    "this node is joining the region and does not vote until it has been added"
                        .into(),
                )
            }
            _ => {}
        }
        if theirs.is_empty() {
            return Ok(());
        }
        match state.id.as_deref() {
            Some(mine) if mine != theirs => Err(format!(
                "message from cluster {theirs:?} sent to a node of cluster {mine:?}"
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
            id.check("b", RpcKind::Replication).is_ok(),
            "a node that does not know its id serves any"
        );
        id.set("a".into());
        assert_eq!(id.get().as_deref(), Some("a"));
        assert!(id.check("a", RpcKind::Replication).is_ok());
        assert!(
            id.check("", RpcKind::Vote).is_ok(),
            "a message without an id is served"
        );
        let refusal = id
            .check("b", RpcKind::Replication)
            .expect_err("another cluster is refused");
        assert!(
            refusal.contains("\"a\"") && refusal.contains("\"b\""),
            "{refusal}"
        );
    }

    #[test]
    fn a_joining_node_does_not_vote_and_a_blank_one_serves_nothing() {
        let id = ClusterId::default();
        id.set("a".into());
        id.set_standing(Standing::Joining);
        assert!(id.check("a", RpcKind::Replication).is_ok());
        assert!(id.check("a", RpcKind::Vote).is_err());
        id.set_standing(Standing::Blank);
        assert!(id.check("a", RpcKind::Replication).is_err());
        id.set_standing(Standing::Member);
        assert!(id.check("a", RpcKind::Vote).is_ok());
    }
}
