//! The invariants of `design.md` ("Invariants the chaos checker holds the system to") checked
//! against the recorded history and what the healed, quiet cluster serves.
//!
//! What is checkable from outside, and how an operation whose outcome is unknown counts:
//!
//! 1. **No acknowledged write is lost.** For each key, the acceptable final states are the
//!    state left by its last acknowledged write or delete (absent if none), plus the state of
//!    every write or delete with an unknown outcome (it may have applied, at any time). Every
//!    node of every region must serve one of them. A key named in `arca cluster divergent`
//!    (writes an old primary took after the fork point of a forced failover) is excused.
//! 2. **No read returns bytes whose digest differs from the artifact's digest.** Every GET that
//!    returned 200 during the run has the sha256 of a version written to that key whose write
//!    was acknowledged or unknown (never one that was refused).
//! 3. **Regions converge.** After faults heal, `arca cluster verify` reports every region at the
//!    same sequence with the same state digest (and no node missing referenced chunks) within
//!    the convergence timeout.
//! 4. **A mirror never commits a client write.** Every write sent to a mirror that got an
//!    answer was refused with `307 READ_ONLY_MIRROR`; none of those keys exists anywhere at the
//!    end; exactly one region reports itself primary.
//! 5. **An immutable artifact never changes once acknowledged.** Every 200 read of an
//!    immutable key returns one content, the acknowledged one if any was; no second content is
//!    ever acknowledged.
//! 6. **No artifact references a chunk its region cannot produce.** Every file listed on every
//!    node of every region reads back in full with the listed sha256. For OCI: every tag in
//!    `GET /v2/<name>/tags/list` on every node resolves to a manifest whose bytes have the
//!    digest the node names (`Docker-Content-Digest`), and every blob it references (config
//!    and layer) reads back by digest with that digest; every tag a node serves at the end is
//!    in its listing.
//!
//! OCI tags are keys `oci:img/<image>:<tag>` whose content is the manifest's sha256, so 1, 2
//! and 4 apply to them as to files: a push is a write of the manifest (its outcome is the
//! manifest PUT's), a tag delete is a delete, a pull is a read, and a pull that read a blob
//! whose bytes lack its digest violates 2. A push to a mirror must be refused at its first
//! request (the config blob's upload) with `403 DENIED` naming `READ_ONLY_MIRROR` (registry
//! clients do not follow redirects on writes).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::history::{is_immutable_key, is_mirror_probe, Op, OpKind, Outcome};
use crate::oci::{is_oci_key, MIRROR_REFUSAL, OCI_KEY_PREFIX};
use crate::packages::{is_package_key, unprefixed};
use crate::workload::INTRUDER_PREFIX;

/// A key's content at the end: `None` is absent, `Some(sha256)` is that content.
pub type State = Option<String>;

/// What the harness read from the healed cluster.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observations {
    /// `arca cluster verify` reported consistency (and how long after healing).
    pub verify_consistent: bool,
    pub convergence_ms: Option<u64>,
    /// The last verify report.
    pub verify_report: serde_json::Value,
    /// Regions that call themselves primary in `arca cluster status`.
    pub primaries: Vec<String>,
    /// Summaries of `arca cluster divergent` from every region.
    pub divergent: Vec<String>,
    /// Final GET of every key on every node.
    pub final_reads: Vec<FinalRead>,
    /// Every listed file on every node, read back.
    pub listed: Vec<ListedRead>,
    /// `GET /api/v1/audit/verify` on the primary: the chain recomputed.
    pub audit_verify: Option<serde_json::Value>,
    /// Denials of intruder writes the primary's audit log holds (records' counts summed).
    pub audited_intrusions: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FinalRead {
    pub region: String,
    pub node: u64,
    pub key: String,
    /// `Some(None)`: absent (404); `Some(Some(sha))`: content; `None`: no answer.
    pub state: Option<State>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListedRead {
    pub region: String,
    pub node: u64,
    pub key: String,
    pub listed_sha256: String,
    pub read_sha256: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InvariantResult {
    pub number: u32,
    pub name: &'static str,
    pub held: bool,
    /// How many observations the verdict rests on.
    pub checked: usize,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

/// Operations on each key, in the order they were issued (one writer per key).
fn by_key(history: &[Op]) -> BTreeMap<&str, Vec<&Op>> {
    let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        keys.entry(op.key.as_str()).or_default().push(op);
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|op| (op.start_ms, op.id));
    }
    keys
}

fn is_write(op: &Op) -> bool {
    matches!(
        op.kind,
        OpKind::Put | OpKind::PutImmutable | OpKind::Delete | OpKind::OciPush | OpKind::OciDelete
    )
}

fn is_read(op: &Op) -> bool {
    matches!(op.kind, OpKind::Get | OpKind::OciPull)
}

fn effect(op: &Op) -> State {
    match op.kind {
        OpKind::Delete | OpKind::OciDelete => None,
        _ => op.sha256.clone(),
    }
}

/// The final states a key may be in, given its writes.
pub fn acceptable_final(ops: &[&Op]) -> BTreeSet<State> {
    let writes: Vec<&&Op> = ops.iter().filter(|op| is_write(op)).collect();
    let immutable = ops.first().is_some_and(|op| is_immutable_key(&op.key));
    if immutable {
        if let Some(first) = writes.iter().find(|op| op.outcome == Outcome::Ok) {
            return BTreeSet::from([effect(first)]);
        }
    }
    let mut last_ok: State = None;
    let mut unknown = BTreeSet::new();
    for op in writes {
        match op.outcome {
            Outcome::Ok => last_ok = effect(op),
            Outcome::Unknown => {
                unknown.insert(effect(op));
            }
            Outcome::Failed => {}
        }
    }
    unknown.insert(last_ok);
    unknown
}

/// Whether a divergent-write summary names `key` (not merely a key it is a prefix of). The node
/// names a tag `img/<image>:<tag>` (`oci manifest img/c0:t1@sha256:…`, `oci delete tag
/// img/c0:t1`), the key without its `oci:` prefix.
fn names_key(summary: &str, key: &str) -> bool {
    let key = key
        .strip_prefix(OCI_KEY_PREFIX)
        .or_else(|| unprefixed(key))
        .unwrap_or(key);
    summary.match_indices(key).any(|(at, _)| {
        summary[at + key.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
    })
}

/// Whether `arca cluster divergent` lists a write of exactly this content to `key`: lost with
/// the old primary's history after a forced failover, and served by the old primary until it
/// has replaced its state.
fn divergent_content(observations: &Observations, key: &str, sha: &str) -> bool {
    observations
        .divergent
        .iter()
        .any(|summary| names_key(summary, key) && summary.contains(sha))
}

fn show(op: &Op) -> String {
    format!(
        "op {} client {} {:?} {} v{} on {}-{} at {}..{} ms: {:?} {} {}",
        op.id,
        op.client,
        op.kind,
        op.key,
        op.version.map(|v| v.to_string()).unwrap_or("-".into()),
        op.region,
        op.node,
        op.start_ms,
        op.end_ms,
        op.outcome,
        op.status.map(|s| s.to_string()).unwrap_or_default(),
        op.detail
    )
}

fn short(state: &State) -> String {
    match state {
        None => "absent".into(),
        Some(sha) => sha.chars().take(12).collect(),
    }
}

/// Checks every invariant.
pub fn check(history: &[Op], observations: &Observations) -> Vec<InvariantResult> {
    let keys = by_key(history);
    vec![
        no_lost_writes(&keys, observations),
        reads_match_written(&keys),
        regions_converge(observations),
        mirrors_refuse_writes(history, observations),
        immutable_never_changes(&keys, observations),
        listed_artifacts_readable(observations),
        intruders_are_refused_and_audited(history, observations),
    ]
}

fn intruders_are_refused_and_audited(
    history: &[Op],
    observations: &Observations,
) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    let mut refused = 0u64;
    let mut unanswered = 0;
    for op in history.iter().filter(|op| op.kind == OpKind::Unauthorized) {
        match (op.outcome, op.status) {
            (Outcome::Ok, _) => violations.push(format!(
                "a write without a valid credential was accepted: {}",
                show(op)
            )),
            (_, Some(401)) if op.detail == "UNAUTHORIZED" => {
                checked += 1;
                refused += 1;
            }
            (_, Some(status)) if status >= 500 => unanswered += 1,
            (_, None) => unanswered += 1,
            _ => violations.push(format!(
                "a write without a valid credential was not refused with 401 UNAUTHORIZED: {}",
                show(op)
            )),
        }
    }
    for read in &observations.final_reads {
        if read.key.starts_with(INTRUDER_PREFIX) {
            checked += 1;
            if let Some(Some(sha)) = &read.state {
                violations.push(format!(
                    "{} (written only without a credential) exists on {}-{} with {}",
                    read.key,
                    read.region,
                    read.node,
                    &sha[..12.min(sha.len())]
                ));
            }
        }
    }
    match &observations.audit_verify {
        Some(report) if report["ok"] == true => {
            checked += 1;
            notes.push(format!("audit chain intact: {} records", report["records"]));
        }
        Some(report) => violations.push(format!("the audit chain does not verify: {report}")),
        None => notes.push("the audit chain could not be read".into()),
    }
    if refused > 0 {
        // Denials are committed in batches: a node killed before its batch loses it.
        notes.push(format!(
            "{} of {refused} refused intrusions are in the audit log",
            observations.audited_intrusions
        ));
        // Denials of one principal, address and reason in one second are one record with a
        // count, whatever their paths: other refusals in that second (a rejoining node that
        // has not yet replicated the signing key refuses valid tokens too) count with them, so
        // the sum is no upper bound.
        if observations.audited_intrusions == 0 {
            violations.push(format!("none of {refused} refused intrusions was audited"));
        }
    }
    if unanswered > 0 {
        notes.push(format!("{unanswered} intrusions got no answer (faults)"));
    }
    InvariantResult {
        number: 7,
        name: "writes without a valid credential are refused, never stored, and audited",
        held: violations.is_empty(),
        checked,
        violations,
        notes,
    }
}

fn no_lost_writes(keys: &BTreeMap<&str, Vec<&Op>>, observations: &Observations) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    let mut unanswered = 0;
    for read in &observations.final_reads {
        if is_mirror_probe(&read.key) {
            continue;
        }
        let Some(ops) = keys.get(read.key.as_str()) else {
            continue;
        };
        let Some(state) = &read.state else {
            unanswered += 1;
            continue;
        };
        checked += 1;
        let acceptable = acceptable_final(ops);
        if acceptable.contains(state) {
            continue;
        }
        let divergent = observations
            .divergent
            .iter()
            .any(|summary| names_key(summary, &read.key));
        if divergent {
            notes.push(format!(
                "{} on {}-{} is {} (excused: listed as divergent)",
                read.key,
                read.region,
                read.node,
                short(state)
            ));
            continue;
        }
        let writes: Vec<String> = ops
            .iter()
            .filter(|op| is_write(op))
            .map(|op| show(op))
            .collect();
        violations.push(format!(
            "{} on {}-{} is {}, expected one of [{}]; writes: {}",
            read.key,
            read.region,
            read.node,
            short(state),
            acceptable.iter().map(short).collect::<Vec<_>>().join(", "),
            writes.join(" | ")
        ));
    }
    if unanswered > 0 {
        violations.push(format!(
            "{unanswered} final reads got no answer (5xx or connection error after healing)"
        ));
    }
    InvariantResult {
        number: 1,
        name: "no acknowledged write is lost",
        held: violations.is_empty(),
        checked,
        violations,
        notes,
    }
}

fn reads_match_written(keys: &BTreeMap<&str, Vec<&Op>>) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    let mut blobs_unread = 0;
    for ops in keys.values() {
        let written: BTreeSet<&str> = ops
            .iter()
            .filter(|op| is_write(op) && op.outcome != Outcome::Failed)
            .filter_map(|op| op.sha256.as_deref())
            .collect();
        for op in ops {
            if let Some(mismatch) = &op.blob_mismatch {
                violations.push(format!("{}: {mismatch}", show(op)));
            }
            if !is_read(op) || op.status != Some(200) {
                continue;
            }
            let Some(sha) = op.sha256.as_deref() else {
                continue;
            };
            if op.kind == OpKind::OciPull && op.outcome == Outcome::Failed {
                blobs_unread += 1;
            }
            checked += 1;
            if !written.contains(sha) {
                violations.push(format!(
                    "{} returned {} which no acknowledged or unknown write of the key had",
                    show(op),
                    &sha[..12.min(sha.len())]
                ));
            }
        }
    }
    if blobs_unread > 0 {
        notes.push(format!(
            "{blobs_unread} OCI pulls got the manifest but could not read a blob it references \
             (not judged here: the read-back after healing checks every tagged image's blobs)"
        ));
    }
    InvariantResult {
        number: 2,
        name: "no read returns bytes that were not written",
        held: violations.is_empty(),
        checked,
        violations,
        notes,
    }
}

fn regions_converge(observations: &Observations) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    if observations.verify_consistent {
        notes.push(format!(
            "cluster verify consistent {} ms after healing",
            observations.convergence_ms.unwrap_or_default()
        ));
    } else {
        violations.push(format!(
            "cluster verify never reported the regions consistent; last report: {}",
            observations.verify_report
        ));
    }
    InvariantResult {
        number: 3,
        name: "regions converge to the same state digest",
        held: violations.is_empty(),
        checked: 1,
        violations,
        notes,
    }
}

fn mirrors_refuse_writes(history: &[Op], observations: &Observations) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    let mut unanswered = 0;
    for op in history.iter().filter(|op| op.kind == OpKind::MirrorWrite) {
        match (op.outcome, op.status) {
            (Outcome::Ok, _) => violations.push(format!("a mirror accepted a write: {}", show(op))),
            (_, Some(307))
                if op.detail == "READ_ONLY_MIRROR"
                    && !is_oci_key(&op.key)
                    && !is_package_key(&op.key) =>
            {
                checked += 1
            }
            // Package formats refuse with a 403 naming the mirror: twine aborts on a redirect,
            // npm, Maven, cargo and helm's uploaders do not resend a body to one.
            (_, Some(403))
                if op.detail == crate::packages::MIRROR_REFUSAL && is_package_key(&op.key) =>
            {
                checked += 1
            }
            // The registry refuses (clients do not follow redirects on writes): `403 DENIED`
            // naming `READ_ONLY_MIRROR` in its detail.
            (_, Some(403)) if op.detail == MIRROR_REFUSAL && is_oci_key(&op.key) => checked += 1,
            (_, Some(status)) if status >= 500 => unanswered += 1,
            (_, None) => unanswered += 1,
            _ => violations.push(format!(
                "a write to a mirror was not refused with READ_ONLY_MIRROR (307 for files, 403 \
                 for /v2/ and packages): {}",
                show(op)
            )),
        }
    }
    for read in &observations.final_reads {
        if is_mirror_probe(&read.key) {
            checked += 1;
            if let Some(Some(sha)) = &read.state {
                violations.push(format!(
                    "{} (written only to a mirror) exists on {}-{} with {}",
                    read.key,
                    read.region,
                    read.node,
                    &sha[..12.min(sha.len())]
                ));
            }
        }
    }
    if observations.primaries.len() != 1 {
        violations.push(format!(
            "regions reporting themselves primary at the end: {:?}",
            observations.primaries
        ));
    }
    if unanswered > 0 {
        notes.push(format!(
            "{unanswered} writes to mirrors got no answer (node down or 5xx) and were not judged"
        ));
    }
    InvariantResult {
        number: 4,
        name: "a mirror never commits a client write; one primary",
        held: violations.is_empty(),
        checked,
        violations,
        notes,
    }
}

fn immutable_never_changes(
    keys: &BTreeMap<&str, Vec<&Op>>,
    observations: &Observations,
) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    let mut finals: BTreeMap<&str, Vec<&FinalRead>> = BTreeMap::new();
    for read in &observations.final_reads {
        finals.entry(read.key.as_str()).or_default().push(read);
    }
    for (key, ops) in keys {
        if !is_immutable_key(key) {
            continue;
        }
        let divergent = |op: &&&Op| {
            op.sha256
                .as_deref()
                .is_some_and(|sha| divergent_content(observations, key, sha))
        };
        let first_ok = ops.iter().find(|op| {
            op.kind == OpKind::PutImmutable && op.outcome == Outcome::Ok && !divergent(op)
        });
        if let Some(first) = first_ok {
            // A divergent write (lost with a former primary's history, and listed) does not
            // count, before or after: the path may legitimately get other content since.
            for later in ops.iter().filter(|op| {
                op.kind == OpKind::PutImmutable
                    && op.outcome == Outcome::Ok
                    && op.id != first.id
                    && op.sha256 != first.sha256
                    && !divergent(op)
            }) {
                violations.push(format!(
                    "{key}: a second content was acknowledged: {} after {}",
                    show(later),
                    show(first)
                ));
            }
        }
        let mut seen: Option<&str> = first_ok.and_then(|op| op.sha256.as_deref());
        for op in ops
            .iter()
            .filter(|op| op.kind == OpKind::Get && op.status == Some(200))
        {
            checked += 1;
            if divergent(&op) {
                notes.push(format!(
                    "{key}: read the content of a divergent write (excused): {}",
                    show(op)
                ));
                continue;
            }
            let sha = op.sha256.as_deref().unwrap_or_default();
            match seen {
                None => seen = Some(sha),
                Some(expected) if expected != sha => violations.push(format!(
                    "{key}: read {} but the artifact's content is {}: {}",
                    &sha[..12.min(sha.len())],
                    &expected[..12.min(expected.len())],
                    show(op)
                )),
                Some(_) => {}
            }
        }
        if let (Some(expected), Some(reads)) = (seen, finals.get(key)) {
            for read in reads {
                checked += 1;
                if let Some(Some(sha)) = &read.state {
                    if sha != expected {
                        violations.push(format!(
                            "{key} on {}-{} ended as {}, not {}",
                            read.region,
                            read.node,
                            &sha[..12.min(sha.len())],
                            &expected[..12.min(expected.len())]
                        ));
                    }
                }
            }
        }
    }
    InvariantResult {
        number: 5,
        name: "an immutable artifact never changes once acknowledged",
        held: violations.is_empty(),
        checked,
        violations,
        notes,
    }
}

fn listed_artifacts_readable(observations: &Observations) -> InvariantResult {
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    for listed in &observations.listed {
        if listed.read_sha256.as_deref() != Some(listed.listed_sha256.as_str()) {
            violations.push(format!(
                "{} listed on {}-{} with {} but read {} {}",
                listed.key,
                listed.region,
                listed.node,
                &listed.listed_sha256[..12.min(listed.listed_sha256.len())],
                listed
                    .read_sha256
                    .as_deref()
                    .map(|s| &s[..12.min(s.len())])
                    .unwrap_or("nothing"),
                listed.detail
            ));
        }
    }
    // Every tag a node serves must be in its tag listing (which is how its blobs were read).
    for read in &observations.final_reads {
        let Some(Some(sha)) = &read.state else {
            continue;
        };
        if !is_oci_key(&read.key) || is_mirror_probe(&read.key) {
            continue;
        }
        let listed = observations.listed.iter().any(|listed| {
            listed.key == read.key && listed.region == read.region && listed.node == read.node
        });
        if !listed {
            violations.push(format!(
                "{} resolves to {} on {}-{} but is not in that node's tag listing",
                read.key,
                &sha[..12.min(sha.len())],
                read.region,
                read.node
            ));
        }
    }
    // The largest count any verify answer gives (each region's verify sees every region it
    // knows of, so the same node is counted by several answers).
    let mut missing = 0;
    for answer in observations.verify_report["reports"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut in_answer = 0;
        for region in answer["report"]["regions"].as_array().into_iter().flatten() {
            for node in region["nodes"].as_array().into_iter().flatten() {
                in_answer += node["missing"].as_u64().unwrap_or_default();
            }
        }
        missing = missing.max(in_answer);
    }
    if missing > 0 {
        violations.push(format!(
            "cluster verify reports {missing} referenced chunks missing on nodes"
        ));
    } else {
        notes.push("cluster verify reports no node missing a referenced chunk".into());
    }
    InvariantResult {
        number: 6,
        name: "every listed artifact is readable with its digest",
        held: violations.is_empty(),
        checked: observations.listed.len(),
        violations,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, kind: OpKind, key: &str, sha: Option<&str>, outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            kind,
            key: key.into(),
            version: Some(id),
            sha256: sha.map(str::to_string),
            region: "us".into(),
            node: 1,
            start_ms: id,
            end_ms: id,
            outcome,
            status: Some(if matches!(kind, OpKind::Get | OpKind::OciPull) {
                200
            } else {
                201
            }),
            detail: String::new(),
            blob_mismatch: None,
        }
    }

    #[test]
    fn a_package_publish_to_a_mirror_must_be_refused_with_a_403_naming_it() {
        let observations = Observations {
            primaries: vec!["us".into()],
            ..Default::default()
        };
        for format in crate::packages::formats() {
            let key = &format.mirror_probe_key(0, 1);
            let mut refused = op(1, OpKind::MirrorWrite, key, Some("aa"), Outcome::Failed);
            refused.status = Some(403);
            refused.detail = crate::packages::MIRROR_REFUSAL.into();
            let result = mirrors_refuse_writes(std::slice::from_ref(&refused), &observations);
            assert!(result.held, "{key}: {:?}", result.violations);
            assert_eq!(result.checked, 1);
            let mut redirected = refused.clone();
            redirected.status = Some(307);
            let result = mirrors_refuse_writes(&[redirected], &observations);
            assert!(
                !result.held,
                "{key}: a redirect is not a refusal a package client understands"
            );
            let mut accepted = refused;
            accepted.outcome = Outcome::Ok;
            accepted.status = Some(201);
            assert!(!mirrors_refuse_writes(&[accepted], &observations).held);
        }
    }

    #[test]
    fn unknown_writes_widen_the_acceptable_final_states() {
        let ops = [
            op(1, OpKind::Put, "mut/a", Some("aa"), Outcome::Ok),
            op(2, OpKind::Put, "mut/a", Some("bb"), Outcome::Unknown),
            op(3, OpKind::Put, "mut/a", Some("cc"), Outcome::Failed),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert_eq!(
            acceptable_final(&refs),
            BTreeSet::from([Some("aa".to_string()), Some("bb".to_string())])
        );
        let deleted = [
            op(1, OpKind::Put, "mut/a", Some("aa"), Outcome::Ok),
            op(2, OpKind::Delete, "mut/a", None, Outcome::Ok),
        ];
        let refs: Vec<&Op> = deleted.iter().collect();
        assert_eq!(acceptable_final(&refs), BTreeSet::from([None]));
    }

    #[test]
    fn a_lost_write_and_a_foreign_read_are_reported() {
        let history = vec![
            op(1, OpKind::Put, "mut/a", Some("aa"), Outcome::Ok),
            op(2, OpKind::Get, "mut/a", Some("zz"), Outcome::Ok),
            op(3, OpKind::PutImmutable, "imm/b", Some("11"), Outcome::Ok),
            op(4, OpKind::PutImmutable, "imm/b", Some("22"), Outcome::Ok),
        ];
        let observations = Observations {
            verify_consistent: true,
            primaries: vec!["us".into()],
            final_reads: vec![FinalRead {
                region: "eu".into(),
                node: 1,
                key: "mut/a".into(),
                state: Some(None),
                detail: String::new(),
            }],
            ..Default::default()
        };
        let results = check(&history, &observations);
        assert!(!results[0].held, "lost write");
        assert!(!results[1].held, "foreign read");
        assert!(results[2].held);
        assert!(results[3].held);
        assert!(!results[4].held, "second immutable content");
        let excused = Observations {
            divergent: vec!["put mut/a (2 chunks)".into()],
            ..observations
        };
        assert!(check(&history, &excused)[0].held);
        assert!(!names_key("put mut/a-1", "mut/a"));
    }

    #[test]
    fn reading_a_divergent_immutable_write_on_the_old_primary_is_excused() {
        let history = vec![
            op(
                1,
                OpKind::PutImmutable,
                "imm/b",
                Some("11"),
                Outcome::Unknown,
            ),
            op(2, OpKind::PutImmutable, "imm/b", Some("22"), Outcome::Ok),
            op(3, OpKind::Get, "imm/b", Some("11"), Outcome::Ok),
            op(4, OpKind::Get, "imm/b", Some("22"), Outcome::Ok),
        ];
        let mut observations = Observations {
            verify_consistent: true,
            primaries: vec!["eu".into()],
            ..Default::default()
        };
        assert!(!check(&history, &observations)[4].held);
        observations.divergent = vec!["put imm/b sha256:11 (10 bytes)".into()];
        let results = check(&history, &observations);
        assert!(results[4].held, "{:?}", results[4]);
        assert_eq!(results[4].notes.len(), 1);
    }

    #[test]
    fn an_acknowledged_immutable_write_lost_in_a_failover_may_be_written_again() {
        // After a forced failover the new primary never had the divergent write, and a client
        // may write other content to the path: the divergent one was reported as lost.
        let history = vec![
            op(1, OpKind::PutImmutable, "imm/c", Some("11"), Outcome::Ok),
            op(2, OpKind::PutImmutable, "imm/c", Some("22"), Outcome::Ok),
        ];
        let mut observations = Observations {
            verify_consistent: true,
            primaries: vec!["ap".into()],
            ..Default::default()
        };
        assert!(!check(&history, &observations)[4].held);
        observations.divergent = vec!["put imm/c sha256:11 (10 bytes)".into()];
        assert!(check(&history, &observations)[4].held);
    }

    #[test]
    fn oci_tags_are_checked_like_files() {
        let tag = "oci:img/c0:t0";
        let mut mismatched = op(5, OpKind::OciPull, tag, Some("aa"), Outcome::Ok);
        mismatched.blob_mismatch = Some("blob sha256:11 read back with sha256:22".into());
        let mut probe = op(
            6,
            OpKind::MirrorWrite,
            "oci:img/mirror-probe-c0:p1",
            Some("ee"),
            Outcome::Failed,
        );
        probe.status = Some(403);
        probe.detail = MIRROR_REFUSAL.into();
        let history = vec![
            op(1, OpKind::OciPush, tag, Some("aa"), Outcome::Ok),
            op(2, OpKind::OciPull, tag, Some("aa"), Outcome::Ok),
            op(3, OpKind::OciDelete, tag, None, Outcome::Ok),
            op(4, OpKind::OciPush, tag, Some("bb"), Outcome::Unknown),
            probe.clone(),
        ];
        let refs: Vec<&Op> = history.iter().filter(|op| op.key == tag).collect();
        assert_eq!(
            acceptable_final(&refs),
            BTreeSet::from([None, Some("bb".to_string())])
        );
        let final_read = |state: State| FinalRead {
            region: "eu".into(),
            node: 1,
            key: tag.into(),
            state: Some(state),
            detail: String::new(),
        };
        let mut observations = Observations {
            verify_consistent: true,
            primaries: vec!["us".into()],
            final_reads: vec![final_read(Some("bb".into()))],
            ..Default::default()
        };
        let results = check(&history, &observations);
        assert!(results[0].held && results[1].held && results[3].held);
        assert!(!results[5].held, "a served tag missing from the listing");
        observations.listed.push(ListedRead {
            region: "eu".into(),
            node: 1,
            key: tag.into(),
            listed_sha256: "bb".into(),
            read_sha256: Some("bb".into()),
            detail: String::new(),
        });
        assert!(check(&history, &observations)[5].held);
        observations.final_reads = vec![final_read(Some("aa".into()))];
        assert!(
            !check(&history, &observations)[0].held,
            "a deleted tag came back"
        );
        let mut excused = observations.clone();
        excused.divergent = vec!["oci manifest img/c0:t0@sha256:aa".into()];
        assert!(check(&history, &excused)[0].held, "a divergent push");
        excused.divergent = vec!["oci manifest img/c0:t00@sha256:aa".into()];
        assert!(
            !check(&history, &excused)[0].held,
            "another tag's divergent push"
        );

        let mut bad = history.clone();
        bad.push(mismatched);
        assert!(
            !check(&bad, &observations)[1].held,
            "a blob with the wrong bytes"
        );
        let mut accepted = probe;
        accepted.status = Some(307);
        bad = vec![accepted];
        assert!(
            !check(&bad, &observations)[3].held,
            "an OCI probe answered like a file"
        );
    }
}
