//! Replication as the operator sees it: every region's role, epoch and lag (`arca cluster
//! status`), promotion with its RPO report, divergent writes, and verification.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arca_proto::v1::{
    DivergentReply, DivergentWriteView, MirrorStatus, MirrorsReply, PromoteReply, RegionDigest,
    RegionStatus, RpoReport, VerifyReply,
};

use crate::error::{Error, Result};
use crate::geo::query::{region_digest, DigestAnswer, GeoQuery};
use crate::geo::Geo;
use crate::metadata::codec::{decode, encode};
use crate::metadata::model::{now_ms, Command, Outcome, RegionRole};

/// The mirrors subscribed to this node.
pub fn mirrors_reply(geo: &Geo) -> MirrorsReply {
    let mirrors = geo
        .mirrors
        .list()
        .into_iter()
        .map(|m| MirrorStatus {
            region: m.info.region.clone(),
            acked_seq: m.acked_seq,
            connected: m.connected,
            epoch: m.info.epoch,
            nodes: m.info.http_addrs.len() as u64,
            last_ack_ms_ago: m.last_ack.elapsed().as_millis() as u64,
        })
        .collect();
    MirrorsReply { mirrors }
}

/// Mirrors subscribed to any node of this region, by region (the most advanced report wins).
async fn all_mirrors(geo: &Geo) -> BTreeMap<String, MirrorStatus> {
    let mut all: BTreeMap<String, MirrorStatus> = BTreeMap::new();
    let mut reports = mirrors_reply(geo).mirrors;
    for peer in geo.region.peers.others() {
        let mut request = tonic::Request::new(arca_proto::v1::MirrorsRequest {});
        request.set_timeout(Duration::from_secs(1));
        if let Ok(reply) = geo
            .region
            .peers
            .cluster_client(&peer.info)
            .mirrors(request)
            .await
        {
            reports.extend(reply.into_inner().mirrors);
        }
    }
    for report in reports {
        let better = all.get(&report.region).is_none_or(|known| {
            (report.connected, report.acked_seq) > (known.connected, known.acked_seq)
        });
        if better {
            all.insert(report.region.clone(), report);
        }
    }
    all
}

fn seconds_behind(geo: &Geo, applied: u64, head: u64) -> f64 {
    if applied >= head {
        return 0.0;
    }
    match geo.catalog.change(applied + 1) {
        Ok(Some(record)) => ((now_ms() - record.at_ms).max(0) as f64) / 1000.0,
        _ => 0.0,
    }
}

/// Every region this one knows of, with role, epoch and lag.
pub async fn regions(geo: &Arc<Geo>) -> Vec<RegionStatus> {
    let info = geo.region_info();
    let voters = geo.region.raft.membership().voters.len() as u64;
    let mut regions = Vec::new();
    match geo.role() {
        RegionRole::Primary => {
            regions.push(RegionStatus {
                name: info.region.clone(),
                role: "primary".into(),
                epoch: info.epoch,
                nodes: voters,
                seq: info.head.seq,
                lag_entries: 0,
                lag_seconds: 0.0,
                pending_bytes: 0,
                connected: true,
                local: true,
            });
            for (name, mirror) in all_mirrors(geo).await {
                regions.push(RegionStatus {
                    name,
                    role: "mirror".into(),
                    epoch: mirror.epoch,
                    nodes: mirror.nodes,
                    seq: mirror.acked_seq,
                    lag_entries: info.head.seq.saturating_sub(mirror.acked_seq),
                    lag_seconds: seconds_behind(geo, mirror.acked_seq, info.head.seq),
                    pending_bytes: 0,
                    connected: mirror.connected,
                    local: false,
                });
            }
        }
        RegionRole::Mirror {
            primary,
            http_addrs,
            ..
        } => {
            let lag = geo.lag.report();
            regions.push(RegionStatus {
                name: info.region.clone(),
                role: "mirror".into(),
                epoch: info.epoch,
                nodes: voters,
                seq: info.head.seq,
                lag_entries: lag.lag_entries,
                lag_seconds: lag.lag_seconds,
                pending_bytes: lag.pending_bytes,
                connected: lag.connected,
                local: true,
            });
            regions.push(RegionStatus {
                name: if primary.is_empty() {
                    lag.primary.clone()
                } else {
                    primary
                },
                role: "primary".into(),
                epoch: info.epoch,
                nodes: http_addrs.len() as u64,
                seq: lag.primary_seq,
                lag_entries: 0,
                lag_seconds: 0.0,
                pending_bytes: 0,
                connected: lag.connected,
                local: false,
            });
        }
    }
    regions
}

async fn primary_reachable(geo: &Geo) -> bool {
    let Some(endpoint) = geo.endpoint.clone() else {
        return false;
    };
    for addr in geo.primary_addrs() {
        let hello = tokio::time::timeout(
            Duration::from_secs(1),
            arca_replication::client::hello(&endpoint, &addr, geo.region_info()),
        )
        .await;
        if matches!(hello, Ok(Ok(_))) {
            return true;
        }
    }
    false
}

/// Other mirrors of the same primary that applied more of its log than this region: promoting
/// this one would lose what they hold (sync-replicated writes they acknowledged among it).
async fn regions_ahead(geo: &Geo) -> Vec<(String, u64)> {
    let Some(endpoint) = geo.endpoint.clone() else {
        return Vec::new();
    };
    let me = geo.region_info();
    let mut ahead = Vec::new();
    for addr in &geo.config.peers {
        let hello = tokio::time::timeout(
            Duration::from_secs(1),
            arca_replication::client::hello(&endpoint, addr, me.clone()),
        )
        .await;
        let Ok(Ok(peer)) = hello else {
            continue;
        };
        let same_lineage = peer.role == arca_replication::Role::Mirror
            && peer.primary.is_some()
            && peer.primary == me.primary;
        if same_lineage
            && peer.region != me.region
            && (peer.head.epoch, peer.head.seq) > (me.head.epoch, me.head.seq)
            && !ahead.iter().any(|(region, _)| *region == peer.region)
        {
            ahead.push((peer.region.clone(), peer.head.seq));
        }
    }
    ahead
}

/// Makes this mirror region the primary, unless data is at risk, the primary still answers,
/// the state is being replaced, or another mirror holds more, and `force` is not given.
pub async fn promote(geo: &Arc<Geo>, force: bool) -> Result<PromoteReply> {
    let head = geo.head();
    if geo.role() == RegionRole::Primary {
        return Ok(PromoteReply {
            promoted: false,
            epoch: head.epoch,
            report: None,
            message: format!(
                "region {} is already the primary (epoch {})",
                geo.region.name, head.epoch
            ),
        });
    }
    let lag = geo.lag.report();
    let reachable = primary_reachable(geo).await;
    let report = RpoReport {
        primary: lag.primary.clone(),
        primary_seq: lag.primary_seq,
        applied_seq: head.last_seq,
        missing_entries: lag.lag_entries,
        pending_bytes: lag.pending_bytes,
        primary_reachable: reachable,
        last_contact_seconds: lag.last_contact_seconds.unwrap_or(-1.0),
    };
    let at_risk = report.missing_entries > 0 || report.pending_bytes > 0;
    // A state being replaced (a demoted primary, a catch-up under way) is not one to promote.
    let replacing = head.needs_snapshot || geo.catalog.staging()?.is_some();
    let ahead = regions_ahead(geo).await;
    // What the primary committed since it was last heard from is unknown: the figures above
    // are then a lower bound.
    let silent = lag.last_contact_seconds.is_none_or(|s| s > 3.0);
    if !force && (at_risk || reachable || silent || replacing || !ahead.is_empty()) {
        let mut reasons = Vec::new();
        if replacing {
            reasons.push("this region's state is being replaced by a snapshot of its primary (it was demoted, or a catch-up is under way): promoted now, a partial or divergent state would take writes".into());
        }
        for (region, seq) in &ahead {
            reasons.push(format!(
                "region {region} has applied entry {seq} of the primary and this one only {}: writes acknowledged there (sync-replicated ones too) would be lost; promote {region} instead",
                head.last_seq
            ));
        }
        if at_risk {
            reasons.push(format!(
                "{} entries of the primary ({} bytes of chunks pending) have not been applied here and would be lost",
                report.missing_entries, report.pending_bytes
            ));
        }
        if silent && !reachable {
            reasons.push(match lag.last_contact_seconds {
                Some(seconds) => format!(
                    "the primary was last heard from {seconds:.1} s ago: writes it accepted since then are unknown and would be lost"
                ),
                None => "the primary has not been heard from since this node started: what it holds is unknown".into(),
            });
        }
        if reachable {
            reasons.push("the primary still answers: promoting now makes two regions take writes until it learns the new epoch".into());
        }
        return Ok(PromoteReply {
            promoted: false,
            epoch: head.epoch,
            report: Some(report),
            message: format!(
                "not promoted: {}; use --force to promote anyway",
                reasons.join("; ")
            ),
        });
    }
    match geo
        .region
        .propose_local(&Command::Promote { at_ms: now_ms() })
        .await?
    {
        Outcome::Promoted { epoch, after_seq } => {
            tracing::warn!(
                epoch,
                after_seq,
                forced = force,
                "this region is now the primary"
            );
            Ok(PromoteReply {
                promoted: true,
                epoch,
                report: Some(report),
                message: format!(
                    "region {} is the primary at epoch {epoch}; its epoch begins after entry {after_seq} of the previous primary",
                    geo.region.name
                ),
            })
        }
        Outcome::SnapshotInstalling { .. } => Err(Error::NotReady {
            reason: "this region is installing a snapshot of the primary (half its state is the old one); promote it once that is done".into(),
        }),
        other => Err(Error::Internal(format!(
            "unexpected outcome {other:?} for promote"
        ))),
    }
}

/// Writes this region accepted as a primary after the fork point of the region that replaced it.
pub fn divergent(geo: &Geo) -> Result<DivergentReply> {
    let writes = geo
        .catalog
        .divergent_writes()?
        .into_iter()
        .map(|w| DivergentWriteView {
            epoch: w.epoch,
            seq: w.seq,
            at_ms: w.at_ms,
            summary: match (&w.command, w.through_seq) {
                (Some(command), _) => geo.formats.describe(command),
                (None, Some(through)) => format!(
                    "entries {}-{through}: trimmed from the change log before the demotion; what they did is unknown",
                    w.seq
                ),
                (None, None) => "unknown".into(),
            },
            recorded_at_ms: w.recorded_at_ms,
            content_bytes: w
                .command
                .as_ref()
                .and_then(|command| geo.formats.content(command))
                .map_or(0, |blob| blob.size),
        })
        .collect();
    Ok(DivergentReply { writes })
}

fn to_proto(answer: DigestAnswer) -> RegionDigest {
    RegionDigest {
        region: answer.region,
        role: answer.role,
        epoch: answer.epoch,
        seq: answer.seq,
        digest: answer.digest,
        referenced_chunks: answer.referenced_chunks,
        nodes: answer
            .nodes
            .into_iter()
            .map(
                |(node_id, referenced, missing)| arca_proto::v1::CheckChunksReply {
                    node_id,
                    referenced,
                    missing,
                },
            )
            .collect(),
        error: answer.errors.join("; "),
    }
}

/// Replication addresses of the other regions to compare with, one list per region.
async fn other_regions(geo: &Geo) -> Vec<Vec<String>> {
    let mut regions: Vec<Vec<String>> = Vec::new();
    match geo.role() {
        RegionRole::Mirror { .. } => regions.push(geo.primary_addrs()),
        RegionRole::Primary => {
            for mirror in geo.mirrors.list() {
                if !mirror.info.replication_addrs.is_empty() {
                    regions.push(mirror.info.replication_addrs.clone());
                }
            }
            for peer in &geo.config.peers {
                if !regions.iter().any(|r| r.contains(peer)) {
                    regions.push(vec![peer.clone()]);
                }
            }
        }
    }
    regions
}

/// Where another region's change log stands (the first of its nodes that answers).
async fn remote_head(geo: &Geo, addrs: &[String]) -> Option<u64> {
    let endpoint = geo.endpoint.clone()?;
    for addr in addrs {
        let hello = tokio::time::timeout(
            Duration::from_secs(2),
            arca_replication::client::hello(&endpoint, addr, geo.region_info()),
        )
        .await;
        if let Ok(Ok(info)) = hello {
            return Some(info.head.seq);
        }
    }
    None
}

async fn ask_digest(geo: &Geo, addrs: &[String]) -> std::result::Result<DigestAnswer, String> {
    let Some(endpoint) = geo.endpoint.clone() else {
        return Err("replication is not configured on this node".into());
    };
    let request = encode(&GeoQuery::RegionDigest).map_err(|e| e.to_string())?;
    let mut last = String::from("no address");
    for addr in addrs {
        match arca_replication::client::query(&endpoint, addr, request.clone()).await {
            Ok(answer) => return decode(&answer).map_err(|e| e.to_string()),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Compares this region with the regions it replicates with: the metadata digest at the same
/// change-log position, and every node's referenced chunks against the chunks it holds.
pub async fn verify(geo: &Arc<Geo>) -> VerifyReply {
    let others = other_regions(geo).await;
    // Regions applying a stream are rarely at the same entry: give a quiet system a moment to
    // line up, comparing heads only (a hello each), before the one full comparison (a digest
    // of the state and a chunk check on every node of every region).
    for _ in 0..20 {
        let local = geo.head().last_seq;
        let mut aligned = true;
        for addrs in &others {
            if remote_head(geo, addrs).await != Some(local) {
                aligned = false;
                break;
            }
        }
        if aligned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let local = region_digest(geo).await;
    let mut remote = Vec::new();
    for addrs in &others {
        remote.push(ask_digest(geo, addrs).await);
    }
    let mut differences = Vec::new();
    let mut regions = vec![to_proto(local.clone())];
    for answer in remote {
        match answer {
            Ok(answer) => {
                if answer.seq != local.seq {
                    differences.push(format!(
                        "region {} is at entry {}, region {} at {}: compare again when replication is idle",
                        local.region, local.seq, answer.region, answer.seq
                    ));
                } else if answer.digest != local.digest {
                    differences.push(format!(
                        "regions {} and {} differ in metadata at entry {}",
                        local.region, answer.region, local.seq
                    ));
                }
                regions.push(to_proto(answer));
            }
            Err(e) => differences.push(format!("could not reach a region: {e}")),
        }
    }
    for region in &regions {
        if !region.error.is_empty() {
            differences.push(format!("region {}: {}", region.region, region.error));
        }
        for node in &region.nodes {
            if node.missing > 0 {
                differences.push(format!(
                    "region {} node {} lacks {} of {} referenced chunks",
                    region.region, node.node_id, node.missing, node.referenced
                ));
            }
        }
    }
    VerifyReply {
        consistent: differences.is_empty(),
        regions,
        differences,
    }
}
