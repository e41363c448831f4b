//! One chaos run from start to verdict: start the cluster, run the workload while the fault
//! plan executes, heal, wait for convergence, read everything back, check the invariants and
//! write the report (`result.json`, `summary.txt`, `timeline.svg`, `history.jsonl`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use serde::Serialize;

use crate::checker::{check, InvariantResult, Observations};
use crate::cluster::{Cluster, Topology};
use crate::faults::{FaultRecord, Planned};
use crate::history::{History, Op};
use crate::observe;
use crate::timeline::{self, Sample};
use crate::workload::{self, WorkloadOptions};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: String,
    pub seed: u64,
    pub duration: Duration,
    pub topology: Topology,
    pub arca: PathBuf,
    pub out: PathBuf,
    pub clients: u32,
    /// How long to wait for `arca cluster verify` to report consistency after healing.
    pub converge_timeout: Duration,
    /// Keep the nodes' data directories (under `out/data`) instead of a temporary directory.
    pub keep_data: bool,
}

#[derive(Debug, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub seed: u64,
    pub topology: String,
    pub duration_s: u64,
    pub clients: u32,
    pub arca: String,
    pub verdict: &'static str,
    pub plan: Vec<Planned>,
    pub faults: Vec<FaultRecord>,
    /// kind → outcome → count.
    pub op_counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Operations per repository format (`generic`, `oci`, `pypi`, `npm`, `maven`, `cargo`, `helm`, `nuget`).
    pub format_counts: BTreeMap<&'static str, usize>,
    pub operations: usize,
    pub convergence_ms: Option<u64>,
    pub invariants: Vec<InvariantResult>,
    /// Chunks repaired from a peer after a corrupt read, and corrupt reads refused, summed
    /// over every node at the end (from `/metrics`; restarts reset a node's counters).
    pub chunks_repaired: f64,
    pub corrupt_chunk_reads: f64,
    pub divergent: Vec<String>,
    pub final_reads: usize,
    pub listed_reads: usize,
    pub samples: Vec<Sample>,
}

impl RunResult {
    pub fn held(&self) -> bool {
        self.invariants.iter().all(|i| i.held)
    }
}

/// The format an operation's key belongs to.
fn format_of(key: &str) -> &'static str {
    if crate::oci::is_oci_key(key) {
        "oci"
    } else if let Some(format) = crate::packages::format_of(key) {
        format.format()
    } else {
        "generic"
    }
}

fn format_counts(history: &[Op]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for op in history {
        *counts.entry(format_of(&op.key)).or_default() += 1;
    }
    counts
}

fn op_counts(history: &[Op]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for op in history {
        let kind = serde_json::to_value(op.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let outcome = serde_json::to_value(op.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut outcome_key = outcome;
        if matches!(
            op.kind,
            crate::history::OpKind::Get | crate::history::OpKind::OciPull
        ) && op.status == Some(404)
        {
            outcome_key.push_str(" (404)");
        }
        *counts
            .entry(kind)
            .or_default()
            .entry(outcome_key)
            .or_default() += 1;
    }
    counts
}

/// Runs the scenario and writes the report into `options.out`.
pub async fn run(options: RunOptions) -> anyhow::Result<RunResult> {
    let plan = crate::scenario::plan(
        &options.scenario,
        options.seed,
        options.duration.as_millis() as u64,
        &options.topology,
    )?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("create {}", options.out.display()))?;
    let temp = tempfile::tempdir().context("create a temporary directory")?;
    let root = match options.keep_data {
        true => options.out.join("data"),
        false => temp.path().to_path_buf(),
    };
    eprintln!(
        "arca-chaos: scenario {} seed {} topology {} duration {} s; starting the cluster",
        options.scenario,
        options.seed,
        options.topology,
        options.duration.as_secs()
    );
    let mut cluster = Cluster::start(&options.arca, &root, &options.topology).await?;
    workload::create_repos(&cluster.endpoints).await?;

    let started = Instant::now();
    let history = History::new(started);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(timeline::sample(
        cluster.endpoints.clone(),
        history.clone(),
        stop.clone(),
        Duration::from_millis(500),
        samples.clone(),
    ));
    let workload = tokio::spawn(workload::run(
        WorkloadOptions {
            seed: options.seed,
            clients: options.clients,
            think_ms: (10, 60),
        },
        cluster.endpoints.clone(),
        history.clone(),
        stop.clone(),
    ));

    let mut records = Vec::new();
    let end = options.duration;
    for planned in &plan {
        let at = Duration::from_millis(planned.at_ms);
        if at >= end {
            break;
        }
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        eprintln!(
            "arca-chaos: {:>6.1} s {}",
            started.elapsed().as_secs_f64(),
            planned.fault.describe()
        );
        let record = crate::faults::run(&mut cluster, planned, &history).await;
        if let Some(error) = &record.error {
            eprintln!("arca-chaos: fault failed: {error}");
        }
        records.push(record);
    }
    tokio::time::sleep(end.saturating_sub(started.elapsed())).await;

    // Stop the clients, heal everything, let the cluster settle.
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(30), workload).await;
    let run_end_ms = history.now_ms();
    eprintln!(
        "arca-chaos: {:>6.1} s workload stopped after {} operations; healing",
        started.elapsed().as_secs_f64(),
        history.len()
    );
    cluster.heal_network();
    cluster.heal_processes().await;
    for index in cluster.endpoints.up() {
        if crate::faults::leader_of(&cluster, index, Duration::from_secs(30))
            .await
            .is_none()
        {
            eprintln!("arca-chaos: no leader in region {index} after healing");
        }
    }

    let ops = history.snapshot();
    let mut observations = Observations::default();
    observe::wait_converged(&cluster, options.converge_timeout, &mut observations).await;
    eprintln!(
        "arca-chaos: {:>6.1} s converged: {} ({:?} ms); reading everything back",
        started.elapsed().as_secs_f64(),
        observations.verify_consistent,
        observations.convergence_ms
    );
    observe::roles_and_divergence(&cluster, &mut observations).await;
    observe::final_reads(&cluster, &ops, &mut observations).await;
    observe::listed_reads(&cluster, &mut observations).await;
    observe::listed_oci_reads(&cluster, &ops, &mut observations).await;
    observe::audit(&cluster, &mut observations).await;
    let invariants = check(&ops, &observations);
    eprintln!(
        "arca-chaos: {:>6.1} s checked {} final reads and {} listed files",
        started.elapsed().as_secs_f64(),
        observations.final_reads.len(),
        observations.listed.len()
    );

    let http = reqwest::Client::new();
    let mut chunks_repaired = 0.0;
    let mut corrupt_chunk_reads = 0.0;
    for region in &cluster.endpoints.regions {
        for (_, url) in &region.nodes {
            chunks_repaired += observe::scrape(
                &http,
                url,
                "arca_region_chunks_fetched_total",
                "reason=\"repair\"",
            )
            .await
            .unwrap_or_default();
            corrupt_chunk_reads +=
                observe::scrape(&http, url, "arca_storage_corrupt_chunks_total", "")
                    .await
                    .unwrap_or_default();
        }
    }
    let sampler_stop = stop.clone();
    sampler_stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), sampler).await;
    let samples = samples.lock().clone();

    let mut result = RunResult {
        scenario: options.scenario.clone(),
        seed: options.seed,
        topology: options.topology.to_string(),
        duration_s: options.duration.as_secs(),
        clients: options.clients,
        arca: options.arca.display().to_string(),
        verdict: "",
        plan,
        faults: records,
        op_counts: op_counts(&ops),
        format_counts: format_counts(&ops),
        operations: ops.len(),
        convergence_ms: observations.convergence_ms,
        invariants,
        chunks_repaired,
        corrupt_chunk_reads,
        divergent: observations.divergent.clone(),
        final_reads: observations.final_reads.len(),
        listed_reads: observations.listed.len(),
        samples,
    };
    result.verdict = if result.held() { "held" } else { "violated" };
    write_report(&options.out, &result, &ops, &observations, run_end_ms)?;
    if !result.held() {
        // Keep the nodes' logs of a failing run.
        copy_logs(&root, &options.out.join("logs"));
    }
    drop(cluster);
    Ok(result)
}

fn copy_logs(root: &Path, to: &Path) {
    let Ok(regions) = std::fs::read_dir(root) else {
        return;
    };
    let _ = std::fs::create_dir_all(to);
    for region in regions.flatten() {
        let Ok(files) = std::fs::read_dir(region.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "log") {
                let name = format!(
                    "{}-{}",
                    region.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                let _ = std::fs::copy(&path, to.join(name));
            }
        }
    }
}

fn write_report(
    out: &Path,
    result: &RunResult,
    ops: &[Op],
    observations: &Observations,
    run_end_ms: u64,
) -> anyhow::Result<()> {
    std::fs::write(
        out.join("result.json"),
        serde_json::to_string_pretty(result)?,
    )
    .context("write result.json")?;
    let mut history = String::new();
    for op in ops {
        history.push_str(&serde_json::to_string(op)?);
        history.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), history).context("write history.jsonl")?;
    std::fs::write(
        out.join("observations.json"),
        serde_json::to_string_pretty(observations)?,
    )
    .context("write observations.json")?;
    std::fs::write(out.join("summary.txt"), summary(result)).context("write summary.txt")?;
    let title = format!(
        "arca-chaos {} seed {} topology {}: {}",
        result.scenario, result.seed, result.topology, result.verdict
    );
    std::fs::write(
        out.join("timeline.svg"),
        timeline::svg(&title, &result.samples, &result.faults, run_end_ms),
    )
    .context("write timeline.svg")?;
    Ok(())
}

/// The human-readable report.
pub fn summary(result: &RunResult) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "scenario      {}", result.scenario);
    let _ = writeln!(text, "seed          {}", result.seed);
    let _ = writeln!(
        text,
        "topology      {} (first region is the primary)",
        result.topology
    );
    let _ = writeln!(
        text,
        "duration      {} s, {} clients",
        result.duration_s, result.clients
    );
    let _ = writeln!(text, "arca          {}", result.arca);
    let _ = writeln!(text, "verdict       {}", result.verdict.to_uppercase());
    let _ = writeln!(text, "\noperations    {}", result.operations);
    for (kind, outcomes) in &result.op_counts {
        let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        let _ = writeln!(text, "  {kind:<14} {}", parts.join(", "));
    }
    let formats: Vec<String> = result
        .format_counts
        .iter()
        .map(|(format, n)| format!("{format} {n}"))
        .collect();
    let _ = writeln!(text, "  by format      {}", formats.join(", "));
    let _ = writeln!(text, "\nfaults        {}", result.faults.len());
    for fault in &result.faults {
        let _ = writeln!(
            text,
            "  {:>7.1}..{:>7.1} s  {}{}{}",
            fault.start_ms as f64 / 1000.0,
            fault.end_ms as f64 / 1000.0,
            fault.description,
            fault
                .resolved_node
                .map(|n| format!(" (node {n})"))
                .unwrap_or_default(),
            fault
                .error
                .as_ref()
                .map(|e| format!("  FAILED TO INJECT: {e}"))
                .unwrap_or_default()
        );
        for note in &fault.notes {
            let _ = writeln!(text, "                      {note}");
        }
    }
    let _ = writeln!(
        text,
        "\nconvergence   {}",
        match result.convergence_ms {
            Some(ms) => format!("{:.1} s after healing", ms as f64 / 1000.0),
            None => "not reached".into(),
        }
    );
    let _ = writeln!(
        text,
        "chunk repair  {} chunks repaired from peers, {} corrupt reads refused (counters since each node's last start)",
        result.chunks_repaired, result.corrupt_chunk_reads
    );
    if !result.divergent.is_empty() {
        let _ = writeln!(text, "divergent     {}", result.divergent.join("; "));
    }
    let _ = writeln!(
        text,
        "final reads   {} (every key on every node), listed files read back {}",
        result.final_reads, result.listed_reads
    );
    let _ = writeln!(text, "\ninvariants");
    for invariant in &result.invariants {
        let _ = writeln!(
            text,
            "  {} {} {:<55} ({} checked)",
            invariant.number,
            if invariant.held {
                "HELD    "
            } else {
                "VIOLATED"
            },
            invariant.name,
            invariant.checked
        );
        for note in &invariant.notes {
            let _ = writeln!(text, "      note: {note}");
        }
        for violation in invariant.violations.iter().take(20) {
            let _ = writeln!(text, "      - {violation}");
        }
        if invariant.violations.len() > 20 {
            let _ = writeln!(
                text,
                "      … {} more in result.json",
                invariant.violations.len() - 20
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::format_of;

    #[test]
    fn operations_are_counted_by_the_format_of_their_key() {
        assert_eq!(format_of("mut/c0-k1"), "generic");
        assert_eq!(format_of("imm/c0-i1"), "generic");
        assert_eq!(format_of("oci:img/c0:t1"), "oci");
        assert_eq!(
            format_of("pypi:py/chaos-c0/1.0.0/chaos_c0-1.0.0-py3-none-any.whl"),
            "pypi"
        );
        assert_eq!(format_of("npm:np/chaos-c0@1.0.0"), "npm");
        assert_eq!(format_of("maven:mv/com.chaos:c0:1.0.0"), "maven");
        assert_eq!(format_of("cargo:rs/chaos-c0@1.0.0"), "cargo");
        assert_eq!(format_of("helm:hm/chaos-c0-1.0.0.tgz"), "helm");
        assert_eq!(format_of("nuget:nu/chaos-c0@1.0.0"), "nuget");
    }
}
