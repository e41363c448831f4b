//! Replication metrics and the mirror's lag accounting.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `arca_replication_lag_entries` | gauge | `region`, `primary` | primary entries not applied here |
//! | `arca_replication_lag_seconds` | gauge | `region`, `primary` | age of the oldest primary change not applied here (0 when caught up); while the primary is silent, at least the time since it was last heard |
//! | `arca_replication_pending_bytes` | gauge | `region`, `primary` | bytes of chunks this mirror still has to fetch for entries it received |
//! | `arca_replication_connected` | gauge | `region`, `primary` | 1 while subscribed to the primary |
//! | `arca_replication_bytes_total` | counter | `region`, `primary` | chunk bytes received from the primary |
//! | `arca_replication_chunks_skipped_total` | counter | `region`, `primary` | referenced chunks not transferred because this region already held them |
//! | `arca_replication_entries_applied_total` | counter | `region`, `primary` | primary entries applied here |
//! | `arca_replication_snapshot_catch_ups_total` | counter | `region`, `primary` | catch-ups from a snapshot of the primary (fell behind the retained log, an entry named a chunk the primary no longer had, or this region's history diverged) |

use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use parking_lot::Mutex;
use serde::Serialize;

use crate::protocol::Head;

/// Beyond this silence from the primary, lag in seconds is at least the silence.
const SILENCE_GRACE: Duration = Duration::from_secs(3);

/// A mirror's view of how far behind its primary it is.
pub struct MirrorLag {
    region: String,
    state: Mutex<LagState>,
}

#[derive(Default)]
struct LagState {
    primary: String,
    connected: bool,
    primary_head: Head,
    applied: Head,
    /// The oldest change not yet applied here: its sequence and commit time.
    next: Option<(u64, i64)>,
    last_contact: Option<Instant>,
    pending_bytes: u64,
    /// When this node started running the subscription (it became its region's leader) and
    /// has not heard from the primary since: until it does, its lag is unknown, at least the
    /// time it has been waiting.
    active_since: Option<Instant>,
}

/// Lag figures at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LagReport {
    pub primary: String,
    pub connected: bool,
    pub primary_seq: u64,
    pub applied_seq: u64,
    pub lag_entries: u64,
    pub lag_seconds: f64,
    pub pending_bytes: u64,
    /// Seconds since the primary was last heard from, if ever.
    pub last_contact_seconds: Option<f64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl MirrorLag {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            state: Mutex::new(LagState::default()),
        }
    }

    pub fn set_primary(&self, primary: &str) {
        self.state.lock().primary = primary.to_string();
    }

    pub fn set_applied(&self, applied: Head) {
        let mut state = self.state.lock();
        state.applied = applied;
        if state.primary_head.seq < applied.seq {
            state.primary_head = applied;
        }
        if state.next.is_some_and(|(seq, _)| seq <= applied.seq) {
            state.next = None;
        }
        drop(state);
        self.publish();
    }

    /// The primary said where it stands, and which change (sequence, commit time) is the first
    /// this mirror has not acknowledged. A hint for a change already applied here (the
    /// acknowledgement crossed the heartbeat) is stale and ignored.
    pub fn heard(&self, primary_head: Head, next: Option<(u64, i64)>) {
        let mut state = self.state.lock();
        state.connected = true;
        state.last_contact = Some(Instant::now());
        if primary_head.seq >= state.primary_head.seq {
            state.primary_head = primary_head;
        }
        let applied = state.applied.seq;
        state.next = next.filter(|(seq, _)| *seq > applied);
        drop(state);
        self.publish();
    }

    /// Entries arrived: the first one's commit time is the oldest unapplied change.
    pub fn received(&self, first: (u64, i64), last: Head) {
        let mut state = self.state.lock();
        state.connected = true;
        state.last_contact = Some(Instant::now());
        if last.seq > state.primary_head.seq {
            state.primary_head = last;
        }
        let applied = state.applied.seq;
        if first.0 > applied && state.next.is_none_or(|(seq, _)| seq > first.0) {
            state.next = Some(first);
        }
    }

    pub fn set_pending_bytes(&self, bytes: u64) {
        self.state.lock().pending_bytes = bytes;
        self.publish();
    }

    /// This node starts running the subscription (it leads its mirror region).
    pub fn activate(&self) {
        let mut state = self.state.lock();
        if state.active_since.is_none() {
            state.active_since = Some(Instant::now());
            // A new term of running the subscription: what an earlier one heard is history.
            state.last_contact = None;
        }
    }

    /// This node stopped running the subscription.
    pub fn deactivate(&self) {
        self.state.lock().active_since = None;
    }

    pub fn set_connected(&self, connected: bool) {
        self.state.lock().connected = connected;
        self.publish();
    }

    fn labels(&self, primary: &str) -> [(&'static str, String); 2] {
        [
            ("region", self.region.clone()),
            ("primary", primary.to_string()),
        ]
    }

    pub fn count_snapshot(&self) {
        let primary = self.state.lock().primary.clone();
        counter!(
            "arca_replication_snapshot_catch_ups_total",
            &self.labels(&primary)
        )
        .increment(1);
    }

    pub fn count_bytes(&self, bytes: u64) {
        let primary = self.state.lock().primary.clone();
        counter!("arca_replication_bytes_total", &self.labels(&primary)).increment(bytes);
    }

    pub fn count_skipped(&self, chunks: u64) {
        let primary = self.state.lock().primary.clone();
        counter!(
            "arca_replication_chunks_skipped_total",
            &self.labels(&primary)
        )
        .increment(chunks);
    }

    pub fn count_applied(&self, entries: u64) {
        let primary = self.state.lock().primary.clone();
        counter!(
            "arca_replication_entries_applied_total",
            &self.labels(&primary)
        )
        .increment(entries);
    }

    pub fn report(&self) -> LagReport {
        let state = self.state.lock();
        let lag_entries = state.primary_head.seq.saturating_sub(state.applied.seq);
        let behind = match (lag_entries, state.next.map(|(_, at)| at)) {
            (0, _) | (_, None) => 0.0,
            (_, Some(at)) => ((now_ms() - at).max(0) as f64) / 1000.0,
        };
        // Silence counts from the last word of the primary, or, on a leader that never heard
        // from it, from when it started waiting: a new leader in a partition is not "0 s".
        let silence = state
            .last_contact
            .or(state.active_since)
            .map(|t| t.elapsed());
        let stale = match silence {
            Some(s) if s > SILENCE_GRACE => s.as_secs_f64(),
            _ => 0.0,
        };
        LagReport {
            primary: state.primary.clone(),
            connected: state.connected,
            primary_seq: state.primary_head.seq,
            applied_seq: state.applied.seq,
            lag_entries,
            lag_seconds: behind.max(stale),
            pending_bytes: state.pending_bytes,
            last_contact_seconds: state.last_contact.map(|t| t.elapsed().as_secs_f64()),
        }
    }

    /// Sets the gauges from the current state (also called periodically, so seconds keep
    /// counting while nothing happens).
    pub fn publish(&self) {
        if self.state.lock().active_since.is_none() {
            return;
        }
        let report = self.report();
        let labels = self.labels(&report.primary);
        gauge!("arca_replication_lag_entries", &labels).set(report.lag_entries as f64);
        gauge!("arca_replication_lag_seconds", &labels).set(report.lag_seconds);
        gauge!("arca_replication_pending_bytes", &labels).set(report.pending_bytes as f64);
        gauge!("arca_replication_connected", &labels).set(if report.connected { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_that_never_reached_the_primary_does_not_report_zero_lag() {
        // Audit P9: a new mirror leader that never reached the primary reported 0 s of lag, so
        // a partition that coincided with a leader change looked healthy.
        let lag = MirrorLag::new("eu");
        {
            let mut state = lag.state.lock();
            state.active_since = Some(Instant::now() - Duration::from_secs(10));
        }
        let report = lag.report();
        assert!(report.lag_seconds >= 9.0, "{report:?}");
        assert_eq!(report.last_contact_seconds, None);
    }

    #[test]
    fn lag_follows_heartbeats_and_applies() {
        let lag = MirrorLag::new("eu");
        lag.set_primary("us");
        lag.set_applied(Head {
            epoch: 1,
            seq: 10,
            at_ms: 0,
        });
        lag.heard(
            Head {
                epoch: 1,
                seq: 10,
                at_ms: 0,
            },
            None,
        );
        assert_eq!(lag.report().lag_entries, 0);
        assert_eq!(lag.report().lag_seconds, 0.0);
        let five_seconds_ago = now_ms() - 5000;
        lag.heard(
            Head {
                epoch: 1,
                seq: 14,
                at_ms: now_ms(),
            },
            Some((11, five_seconds_ago)),
        );
        let report = lag.report();
        assert_eq!(report.lag_entries, 4);
        assert!(report.lag_seconds >= 4.9, "{report:?}");
        lag.set_applied(Head {
            epoch: 1,
            seq: 14,
            at_ms: 0,
        });
        assert_eq!(lag.report().lag_entries, 0);
        assert_eq!(lag.report().lag_seconds, 0.0);

        // A heartbeat sent before the mirror's acknowledgement arrived names an entry that is
        // applied by now: it must not bring back the old commit time.
        lag.heard(
            Head {
                epoch: 1,
                seq: 15,
                at_ms: now_ms(),
            },
            Some((12, five_seconds_ago)),
        );
        let report = lag.report();
        assert_eq!(report.lag_entries, 1);
        assert_eq!(report.lag_seconds, 0.0, "{report:?}");
        // Entries arrive: the first unapplied one's commit time counts.
        let two_seconds_ago = now_ms() - 2000;
        lag.received(
            (15, two_seconds_ago),
            Head {
                epoch: 1,
                seq: 15,
                at_ms: two_seconds_ago,
            },
        );
        assert!(lag.report().lag_seconds >= 1.9, "{:?}", lag.report());
        lag.set_applied(Head {
            epoch: 1,
            seq: 15,
            at_ms: two_seconds_ago,
        });
        assert_eq!(lag.report().lag_seconds, 0.0);
    }
}
