//! The mirrors subscribed to this node of a primary region, and how far each has applied.

use std::collections::HashMap;
use std::time::Instant;

use arca_replication::RegionInfo;
use metrics::gauge;
use parking_lot::Mutex;
use tokio::sync::watch;

/// One subscribed mirror.
#[derive(Debug, Clone)]
pub struct MirrorState {
    pub info: RegionInfo,
    pub acked_seq: u64,
    pub connected: bool,
    pub last_ack: Instant,
}

/// Mirrors known to this node.
pub struct MirrorRegistry {
    mirrors: Mutex<HashMap<String, MirrorState>>,
    changed: watch::Sender<u64>,
}

impl Default for MirrorRegistry {
    fn default() -> Self {
        Self {
            mirrors: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl MirrorRegistry {
    pub fn acked(&self, mirror: &RegionInfo, seq: u64) {
        let mut mirrors = self.mirrors.lock();
        let state = mirrors
            .entry(mirror.region.clone())
            .or_insert_with(|| MirrorState {
                info: mirror.clone(),
                acked_seq: 0,
                connected: true,
                last_ack: Instant::now(),
            });
        state.acked_seq = state.acked_seq.max(seq);
        state.connected = true;
        state.last_ack = Instant::now();
        gauge!("arca_replication_mirror_acked_seq", "mirror" => mirror.region.clone())
            .set(state.acked_seq as f64);
        gauge!("arca_replication_mirror_connected", "mirror" => mirror.region.clone()).set(1.0);
        drop(mirrors);
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn subscribed(&self, mirror: &RegionInfo, from_seq: u64) {
        self.acked(mirror, from_seq);
    }

    pub fn disconnected(&self, mirror: &RegionInfo) {
        if let Some(state) = self.mirrors.lock().get_mut(&mirror.region) {
            state.connected = false;
        }
        gauge!("arca_replication_mirror_connected", "mirror" => mirror.region.clone()).set(0.0);
    }

    pub fn max_acked(&self) -> u64 {
        self.mirrors
            .lock()
            .values()
            .map(|m| m.acked_seq)
            .max()
            .unwrap_or(0)
    }

    pub fn list(&self) -> Vec<MirrorState> {
        self.mirrors.lock().values().cloned().collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
