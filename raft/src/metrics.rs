//! Raft metrics, exported through the `metrics` facade.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `arca_raft_term` | gauge | current term |
//! | `arca_raft_leader_id` | gauge | id of the known leader, -1 when none |
//! | `arca_raft_is_leader` | gauge | 1 on the leader |
//! | `arca_raft_last_log_index` | gauge | index of the last log entry on this node |
//! | `arca_raft_applied_index` | gauge | index of the last applied entry |
//! | `arca_raft_leader_changes_total` | counter | times this node saw the leader change |
//! | `arca_raft_commit_index` | gauge | highest log index known committed on this node |
//! | `arca_raft_snapshots_built_total` | counter | snapshots this node built |
//! | `arca_raft_snapshots_installed_total` | counter | snapshots this node installed from its leader |

use metrics::{counter, gauge};
use openraft::ServerState;

use crate::Raft;

pub(crate) fn set_commit_index(index: u64) {
    gauge!("arca_raft_commit_index").set(index as f64);
}

/// Mirrors openraft's metrics watch channel into gauges until Raft stops.
pub(crate) fn spawn_exporter(raft: Raft, region: String) {
    let mut watch = raft.metrics();
    tokio::spawn(async move {
        let mut last_leader = None;
        loop {
            {
                let m = watch.borrow_and_update();
                let labels = [("region", region.clone())];
                gauge!("arca_raft_term", &labels).set(m.current_term as f64);
                gauge!("arca_raft_leader_id", &labels)
                    .set(m.current_leader.map(|id| id as f64).unwrap_or(-1.0));
                gauge!("arca_raft_is_leader", &labels).set(if m.state == ServerState::Leader {
                    1.0
                } else {
                    0.0
                });
                gauge!("arca_raft_last_log_index", &labels)
                    .set(m.last_log_index.unwrap_or(0) as f64);
                gauge!("arca_raft_applied_index", &labels)
                    .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
                if m.current_leader != last_leader {
                    if m.current_leader.is_some() {
                        counter!("arca_raft_leader_changes_total", &labels).increment(1);
                    }
                    last_leader = m.current_leader;
                }
            }
            if watch.changed().await.is_err() {
                break;
            }
        }
    });
}
