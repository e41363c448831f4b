//! Reclaiming the chunks overwrites and deletes freed, on the region's leader: not at once, but
//! once the change that freed them is older than the retention window (downloads of the old
//! version finish) and every mirror this region knows has applied it (a lagging mirror still
//! finds the chunks the change log names), or once it is older than the maximum retention
//! whatever the mirrors (a mirror gone for good catches up from a snapshot instead).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::GcConfig;
use crate::geo::Geo;
use crate::metadata::model::{now_ms, Command, Outcome};

/// Freed chunks one command releases at most (keeps each apply short).
const RELEASE_BATCH: u64 = 10_000;

/// Runs until `cancel`.
pub async fn run(geo: Arc<Geo>, gc: GcConfig, cancel: CancellationToken) {
    let interval = Duration::from_secs(gc.release_interval_secs);
    let mut leading_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let leads =
            geo.region.raft.raft().metrics().borrow().current_leader == Some(geo.region.node_id);
        if !leads {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_secs(gc.release_start_delay_secs) {
            continue;
        }
        if let Err(e) = release_due(&geo, &gc).await {
            tracing::debug!(error = %e, "could not reclaim freed chunks yet");
        }
    }
}

async fn release_due(geo: &Arc<Geo>, gc: &GcConfig) -> crate::error::Result<()> {
    let head = geo.head().last_seq;
    // Mirrors known to this region (those that subscribed since its nodes started).
    let watermark = geo
        .mirror_acks()
        .await
        .values()
        .copied()
        .min()
        .unwrap_or(head)
        .min(head);
    let now = now_ms();
    let rounds = [
        (watermark, now - (gc.freed_retention_secs * 1000) as i64),
        (head, now - (gc.freed_max_retention_secs * 1000) as i64),
    ];
    for (through_seq, before_ms) in rounds {
        loop {
            let command = Command::ReleaseFreed {
                through_seq,
                before_ms,
                limit: RELEASE_BATCH,
            };
            match geo.region.propose_local(&command).await? {
                Outcome::FreedReleased { released, more } => {
                    if released > 0 {
                        tracing::debug!(released, through_seq, "reclaimed freed chunks");
                    }
                    if !more {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
    Ok(())
}
