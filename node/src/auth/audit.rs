//! The audit log: events reported by every part of a node, batched into Raft commands (the
//! state machine chains them, see [`super::apply::AuditApply`]), read back with filters, and
//! verified link by link.
//!
//! Recording never blocks a request: events go into a bounded queue that a background task
//! drains every [`FLUSH_INTERVAL`]. Denials are aggregated there (one record per principal,
//! source, reason and second, with a count), so a flood of refused requests cannot grow the
//! log faster than one record per second per attacker address. An event that cannot be
//! recorded (the queue is full, the region is a read-only mirror, no quorum for long) is
//! counted in `arca_audit_unrecorded_total{reason}` and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::keys;
use super::model::{
    chain_hash, AuditCommand, AuditEvent, AuditHead, AuditRecord, AuthCommand, AuthOp, AuthOutcome,
};
use crate::metadata::catalog::Catalog;
use crate::metadata::model::{now_ms, RegionRole};
use crate::service::{ArtifactService, FormatCommand};

/// Events waiting for the flusher, at most.
pub const QUEUE: usize = 8192;
/// How often queued events are committed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Events one command carries, at most.
const BATCH: usize = 1000;
/// Events kept for a retry while the region cannot commit, at most.
const MAX_PENDING: usize = 20_000;
/// Distinct denial keys aggregated per flush, at most (the rest collapse into one record).
const MAX_DENIAL_KEYS: usize = 1000;
/// How often token use is recorded, and retention applied.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

impl FormatCommand for AuditCommand {
    type Outcome = AuthOutcome;
    const FORMAT: crate::metadata::format::FormatName = super::model::AUDIT_NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &AuthOutcome) -> bool {
        outcome.changed()
    }
}

impl FormatCommand for AuthCommand {
    type Outcome = AuthOutcome;
    const FORMAT: crate::metadata::format::FormatName = super::model::NAME;
    const VERSION: u32 = 1;

    fn changed(outcome: &AuthOutcome) -> bool {
        outcome.changed()
    }
}

/// Where a node's parts report audit events.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
    region: String,
    node: u64,
    /// This process's id and the number of the next event (see [`AuditEvent::origin`]).
    origin: String,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The flusher's end of an [`AuditSink`].
pub struct AuditQueue(mpsc::Receiver<AuditEvent>);

/// The parts of an event a caller knows (the sink adds the time, region and node).
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub principal: String,
    pub token_id: Option<String>,
    pub source: String,
    pub action: String,
    pub resource: String,
    pub repo: Option<String>,
    pub outcome: String,
    pub request_id: String,
}

impl AuditSink {
    pub fn new(region: String, node: u64) -> (Self, AuditQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
        (
            Self {
                tx,
                region,
                node,
                origin,
                next,
            },
            AuditQueue(rx),
        )
    }

    pub fn record(&self, event: Event) {
        let event = AuditEvent {
            at_ms: now_ms(),
            principal: event.principal,
            token_id: event.token_id,
            source: event.source,
            region: self.region.clone(),
            node: self.node,
            action: truncate(event.action, 64),
            resource: truncate(event.resource, 512),
            repo: event.repo,
            outcome: truncate(event.outcome, 64),
            request_id: truncate(event.request_id, 128),
            count: 1,
            origin: self.origin.clone(),
            number: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        if self.tx.try_send(event).is_err() {
            unrecorded("queue_full", 1);
        }
    }
}

fn truncate(text: String, max: usize) -> String {
    if text.len() <= max {
        text
    } else {
        text.chars().take(max).collect()
    }
}

fn unrecorded(reason: &'static str, count: usize) {
    metrics::counter!("arca_audit_unrecorded_total", "reason" => reason).increment(count as u64);
}

/// Folds denials of the same principal, source and reason within one second into one event.
fn aggregate(events: Vec<AuditEvent>) -> Vec<AuditEvent> {
    let mut out = Vec::with_capacity(events.len());
    let mut denials: BTreeMap<(String, String, String, i64), usize> = BTreeMap::new();
    for event in events {
        if !event.outcome.starts_with("denied") {
            out.push(event);
            continue;
        }
        let key = (
            event.principal.clone(),
            event.source.clone(),
            event.outcome.clone(),
            event.at_ms / 1000,
        );
        match denials.get(&key) {
            Some(&index) => {
                let slot: &mut AuditEvent = &mut out[index];
                slot.count = slot.count.saturating_add(event.count);
            }
            None if denials.len() < MAX_DENIAL_KEYS => {
                denials.insert(key, out.len());
                out.push(event);
            }
            None => {
                // Past the key limit: one record stands for the rest of this flush.
                let overflow = ("*".to_string(), "*".to_string(), event.outcome.clone(), 0);
                match denials.get(&overflow) {
                    Some(&index) => out[index].count = out[index].count.saturating_add(event.count),
                    None => {
                        denials.insert(overflow, out.len());
                        out.push(AuditEvent {
                            principal: "*".into(),
                            source: "*".into(),
                            resource: "*".into(),
                            ..event
                        });
                    }
                }
            }
        }
    }
    out
}

/// Commits queued events until `cancel`, records token use, and applies retention.
pub async fn run(
    service: Arc<ArtifactService>,
    auth: Arc<super::Auth>,
    queue: AuditQueue,
    cancel: CancellationToken,
) {
    let AuditQueue(mut rx) = queue;
    let mut pending: Vec<AuditEvent> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_touch = tokio::time::Instant::now();
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        while pending.len() < MAX_PENDING {
            match rx.try_recv() {
                Ok(event) => pending.push(event),
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            flush(&service, &mut pending).await;
        }
        if last_touch.elapsed() >= TOUCH_INTERVAL {
            last_touch = tokio::time::Instant::now();
            touch_tokens(&service, &auth).await;
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            last_prune = Some(tokio::time::Instant::now());
            prune(&service, &auth).await;
        }
    }
    // A last flush of what is queued, bounded in time.
    while let Ok(event) = rx.try_recv() {
        if pending.len() >= MAX_PENDING {
            break;
        }
        pending.push(event);
    }
    if !pending.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), flush(&service, &mut pending)).await;
    }
}

async fn flush(service: &ArtifactService, pending: &mut Vec<AuditEvent>) {
    if !matches!(service.geo.role(), RegionRole::Primary) {
        // A mirror commits nothing of its own: its events are logged (folded like the chain
        // folds them) and counted.
        let events = aggregate(std::mem::take(pending));
        for event in &events {
            tracing::info!(
                principal = %event.principal,
                action = %event.action,
                resource = %event.resource,
                outcome = %event.outcome,
                count = event.count,
                "audit event at a mirror region (not in the chain)"
            );
        }
        unrecorded("mirror", events.len());
        return;
    }
    if !service.geo.write_gate_open() {
        // A primary waiting to hear from its peer regions: keep them (bounded) until it may write.
        if pending.len() > MAX_PENDING {
            let drop = pending.len() - MAX_PENDING;
            pending.drain(..drop);
            unrecorded("no_quorum", drop);
        }
        return;
    }
    let events = aggregate(std::mem::take(pending));
    let mut rest = events.as_slice();
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(rest.len().min(BATCH));
        let command = AuditCommand::Append {
            at_ms: now_ms(),
            events: batch.to_vec(),
        };
        match service.propose_format(&command, None).await {
            Ok(_) => rest = tail,
            Err(e) => {
                tracing::warn!(error = %e, events = rest.len(), "could not commit audit events; retrying");
                pending.extend_from_slice(rest);
                if pending.len() > MAX_PENDING {
                    let drop = pending.len() - MAX_PENDING;
                    pending.drain(..drop);
                    unrecorded("no_quorum", drop);
                }
                return;
            }
        }
    }
}

async fn touch_tokens(service: &ArtifactService, auth: &super::Auth) {
    let used = auth.take_used();
    if used.is_empty() || service.geo.read_only_error().is_some() {
        return;
    }
    let command = AuthCommand {
        at_ms: now_ms(),
        op: AuthOp::TouchTokens { used },
    };
    if let Err(e) = service.propose_format(&command, None).await {
        tracing::debug!(error = %e, "could not record token use");
    }
}

async fn prune(service: &ArtifactService, auth: &super::Auth) {
    let days = auth.config.audit_retention_days;
    if days == 0 || service.geo.read_only_error().is_some() {
        return;
    }
    let command = AuditCommand::Prune {
        at_ms: now_ms(),
        before_ms: now_ms() - (days as i64) * 86_400_000,
        max: 10_000,
    };
    if let Err(e) = service.propose_format(&command, None).await {
        tracing::debug!(error = %e, "could not apply audit retention");
    }
}

/// A filter over audit records.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub since_ms: Option<i64>,
    pub principal: Option<String>,
    pub repo: Option<String>,
    pub action: Option<String>,
    /// `ok`, `denied`, `error`: a prefix of the outcome.
    pub outcome: Option<String>,
}

impl Filter {
    fn matches(&self, event: &AuditEvent) -> bool {
        self.since_ms.is_none_or(|since| event.at_ms >= since)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| event.principal == *p)
            && self
                .repo
                .as_ref()
                .is_none_or(|r| event.repo.as_deref() == Some(r.as_str()))
            && self
                .action
                .as_ref()
                .is_none_or(|a| event.action.starts_with(a.as_str()))
            && self
                .outcome
                .as_ref()
                .is_none_or(|o| event.outcome.starts_with(o.as_str()))
    }
}

/// Records after seq `after` matching `filter`, at most `limit`, and the cursor to go on from.
pub fn list(
    catalog: &Catalog,
    filter: &Filter,
    after: u64,
    limit: usize,
) -> crate::error::Result<(Vec<AuditRecord>, Option<u64>)> {
    let mut out = Vec::new();
    let mut cursor = after;
    // Scan in pages, so a selective filter over a long log stays bounded per page.
    const PAGE: usize = 1000;
    const MAX_SCANNED: usize = 100_000;
    let mut scanned = 0;
    loop {
        let start = keys::audit(cursor);
        let (records, more) = catalog.scan(keys::AUDIT, Some(&start), PAGE, |_, value| {
            crate::metadata::codec::decode::<AuditRecord>(value)
        })?;
        for record in records {
            scanned += 1;
            cursor = record.seq;
            if filter.matches(&record.event) {
                out.push(record);
                if out.len() == limit {
                    return Ok((out, Some(cursor)));
                }
            }
        }
        if !more {
            return Ok((out, None));
        }
        if scanned >= MAX_SCANNED {
            return Ok((out, Some(cursor)));
        }
    }
}

/// The result of recomputing the chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub ok: bool,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The first record whose link does not hold, and why.
    pub broken_at: Option<u64>,
    pub reason: Option<String>,
}

/// Recomputes every link from the oldest kept record to the head.
pub fn verify(catalog: &Catalog) -> crate::error::Result<Verification> {
    let head: AuditHead = catalog.get(keys::AUDIT_HEAD)?.unwrap_or_default();
    let mut report = Verification {
        ok: true,
        records: 0,
        first_seq: head.first_seq,
        last_seq: head.last_seq,
        broken_at: None,
        reason: None,
    };
    if head.last_seq == 0 {
        return Ok(report);
    }
    let broken = |report: &mut Verification, seq: u64, reason: String| {
        report.ok = false;
        report.broken_at = Some(seq);
        report.reason = Some(reason);
    };
    let mut expected_seq = head.first_seq;
    let mut prev = head.anchor_hash.clone();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (items, more) = catalog.scan(keys::AUDIT, after.as_deref(), 1000, |key, value| {
            Ok((key.to_vec(), value.to_vec()))
        })?;
        for (key, value) in items {
            let seq = key[keys::AUDIT.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            after = Some(key);
            let record: AuditRecord = match crate::metadata::codec::decode(&value) {
                Ok(record) => record,
                Err(e) => {
                    broken(
                        &mut report,
                        seq,
                        format!("record {seq} does not decode: {e}"),
                    );
                    return Ok(report);
                }
            };
            if record.seq != seq || seq != expected_seq {
                broken(
                    &mut report,
                    seq,
                    format!("record {seq} is out of place (expected {expected_seq})"),
                );
                return Ok(report);
            }
            if record.prev != prev {
                broken(
                    &mut report,
                    seq,
                    format!("record {seq} does not follow the record before it"),
                );
                return Ok(report);
            }
            let hash = chain_hash(&record.prev, record.seq, &record.event);
            if hash != record.hash {
                broken(
                    &mut report,
                    seq,
                    format!("record {seq} was changed: its content does not match its hash"),
                );
                return Ok(report);
            }
            prev = record.hash;
            expected_seq += 1;
            report.records += 1;
        }
        if !more {
            break;
        }
    }
    if expected_seq != head.last_seq + 1 || prev != head.last_hash {
        broken(
            &mut report,
            expected_seq,
            format!(
                "the chain ends at {} but its head names {}",
                expected_seq - 1,
                head.last_seq
            ),
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(principal: &str, outcome: &str, at_ms: i64) -> AuditEvent {
        AuditEvent {
            at_ms,
            principal: principal.into(),
            token_id: None,
            source: "127.0.0.1".into(),
            region: "r".into(),
            node: 1,
            action: "PUT".into(),
            resource: "/files/x".into(),
            repo: None,
            outcome: outcome.into(),
            request_id: "id".into(),
            count: 1,
            origin: "o".into(),
            number: at_ms as u64,
        }
    }

    #[test]
    fn denials_in_one_second_become_one_record_with_a_count() {
        let mut events = Vec::new();
        for i in 0..500 {
            events.push(event("anonymous", "denied:no_credential", 1000 + i % 900));
        }
        events.push(event("user:a", "ok", 1000));
        events.push(event("anonymous", "denied:no_credential", 2500));
        let out = aggregate(events);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].count, 500);
        assert_eq!(out[1].outcome, "ok");
        assert_eq!(out[2].count, 1);
    }

    #[test]
    fn past_the_key_limit_denials_collapse_into_one_record() {
        let events = (0..(MAX_DENIAL_KEYS + 50))
            .map(|i| event(&format!("user:u{i}"), "denied:bad_credential", 1000))
            .collect();
        let out = aggregate(events);
        assert_eq!(out.len(), MAX_DENIAL_KEYS + 1);
        assert_eq!(out.last().map(|e| e.count), Some(50));
    }
}
