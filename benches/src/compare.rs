//! Arca against a peer registry on the same machine in the same run: Debian's `docker-registry`
//! (CNCF distribution 2.8, filesystem storage) next to a single-node Arca, the same OCI workloads
//! against both in alternation, and a table of ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arca_chaos::{ArcaProcess, ProcessOptions};
use serde::Serialize;

use crate::load::{self, format_size, LoadResult, LoadSpec, RssSampler, Workload};

/// One workload of the comparison.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Case {
    pub workload: Workload,
    pub size: usize,
    pub concurrency: usize,
    pub ops: u64,
}

const fn case(workload: Workload, size: usize, concurrency: usize, ops: u64) -> Case {
    Case {
        workload,
        size,
        concurrency,
        ops,
    }
}

/// The comparison the issue asks for: 1 GiB push and pull, 16 MiB with a little concurrency,
/// and 64 clients on 4 KiB blobs and on manifests.
pub fn full_cases() -> Vec<Case> {
    use Workload::*;
    vec![
        case(BlobPush, 1 << 30, 1, 2),
        case(BlobPull, 1 << 30, 1, 4),
        case(BlobPush, 16 << 20, 4, 48),
        case(BlobPull, 16 << 20, 4, 96),
        case(BlobPush, 4 << 10, 64, 3000),
        case(BlobPull, 4 << 10, 64, 6000),
        case(ManifestPush, 4 << 10, 64, 2000),
        case(ManifestPull, 4 << 10, 64, 4000),
    ]
}

/// A smoke-sized comparison (seconds, for tests).
pub fn quick_cases() -> Vec<Case> {
    use Workload::*;
    vec![
        case(BlobPush, 1 << 20, 2, 6),
        case(BlobPull, 1 << 20, 2, 12),
        case(BlobPush, 4 << 10, 8, 64),
        case(BlobPull, 4 << 10, 8, 128),
        case(ManifestPush, 4 << 10, 8, 32),
        case(ManifestPull, 4 << 10, 8, 64),
    ]
}

/// Small objects, where checking a credential weighs most: Arca against a build without
/// authentication (`arca-bench compare-auth`).
pub fn auth_cases(quick: bool) -> Vec<Case> {
    use Workload::*;
    let scale = if quick { 1 } else { 8 };
    vec![
        case(BlobPush, 4 << 10, 8, 64 * scale),
        case(BlobPull, 4 << 10, 8, 128 * scale),
        case(FilePush, 4 << 10, 8, 64 * scale),
        case(FilePull, 4 << 10, 8, 128 * scale),
    ]
}

/// A registry under test.
pub struct Server {
    pub name: &'static str,
    pub url: String,
    /// The session token its clients send (an Arca that has accounts).
    pub token: Option<String>,
    pid: u32,
    /// The process, stopped when the server is dropped.
    _process: Box<dyn std::any::Any + Send>,
}

/// Kills the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A single-node Arca on the embedded default, data under `dir`, with the `containers` OCI
    /// repository the workloads push to.
    pub async fn arca(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        Self::arca_named(binary, dir, "arca").await
    }

    /// [`Server::arca`] under another name (its data in `dir/<name>`). A build from before
    /// accounts existed creates no `initial-admin-password`: its clients send no token.
    pub async fn arca_named(binary: &Path, dir: &Path, name: &'static str) -> anyhow::Result<Self> {
        let data_dir = dir.join(name);
        let mut options = ProcessOptions::new(binary, data_dir.clone());
        options.env = vec![("ARCA_LOG".into(), "warn".into())];
        let process = ArcaProcess::start(options)?;
        let url = process.base_url();
        let pid = process.pid().context("arca has no pid")?;
        wait_ready(&load::client(1), &format!("{url}/readyz")).await?;
        // The sole voter writes the bootstrap password before it serves: sign in with it.
        let token = if arca_chaos::credentials::admin_password(&data_dir).is_some() {
            Some(process.admin_token().await?)
        } else {
            None
        };
        let http = load::client_with_token(1, token.as_deref());
        load::create_arca_repo(&http, &url, "containers", "oci").await?;
        Ok(Self {
            name,
            url,
            token,
            pid,
            _process: Box::new(process),
        })
    }

    /// Debian's `docker-registry` (distribution 2.8) with filesystem storage under `dir`.
    pub async fn distribution(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        let root = dir.join("distribution");
        std::fs::create_dir_all(&root)?;
        let port = free_port()?;
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                root.join("data").display()
            ),
        )?;
        let log = std::fs::File::create(root.join("registry.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id();
        let guard = ChildGuard(child);
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&load::client(1), &format!("{url}/v2/")).await?;
        Ok(Self {
            name: "distribution",
            url,
            token: None,
            pid,
            _process: Box::new(guard),
        })
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits (60 s at most) until `url` answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One measured run with the server's peak RSS during it.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub server: &'static str,
    pub round: usize,
    pub result: LoadResult,
    pub peak_rss_bytes: u64,
}

/// One case against both servers, the best round of each.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: Case,
    pub arca: Measured,
    pub peer: Measured,
    /// Arca's throughput over the peer's (higher is better for Arca).
    pub throughput_ratio: f64,
    /// Arca's p99 over the peer's (lower is better for Arca).
    pub p99_ratio: f64,
    /// Every round, for the record.
    pub rounds: Vec<Measured>,
}

pub async fn measure(
    server: &Server,
    case: &Case,
    round: usize,
    seed: u64,
) -> anyhow::Result<Measured> {
    let mut spec = LoadSpec::new(&server.url, case.workload, case.size);
    spec.token = server.token.clone();
    spec.concurrency = case.concurrency;
    spec.ops = case.ops;
    spec.seed = seed;
    let sampler = RssSampler::start(server.pid());
    let result = load::run(&spec).await;
    let peak_rss_bytes = sampler.finish().await;
    let result = result.with_context(|| format!("{} {}", server.name, case.workload))?;
    if result.errors > 0 {
        bail!(
            "{} {} {}: {} of {} operations failed, first: {}",
            server.name,
            case.workload,
            format_size(case.size),
            result.errors,
            result.ops,
            result.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(Measured {
        server: server.name,
        round,
        result,
        peak_rss_bytes,
    })
}

/// Runs every case against both servers, `rounds` times, alternating which goes first.
pub async fn compare(
    arca: &Server,
    peer: &Server,
    cases: &[Case],
    rounds: usize,
    mut progress: impl FnMut(&Measured),
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let mut all = Vec::new();
        for round in 0..rounds.max(1) {
            let order = if round % 2 == 0 {
                [arca, peer]
            } else {
                [peer, arca]
            };
            for server in order {
                let measured = measure(server, case, round, 1 + index as u64).await?;
                progress(&measured);
                all.push(measured);
            }
        }
        let best = |name: &str| {
            all.iter()
                .filter(|m| m.server == name)
                .max_by(|a, b| a.result.ops_per_s.total_cmp(&b.result.ops_per_s))
                .cloned()
                .expect("at least one round")
        };
        let (a, p) = (best(arca.name), best(peer.name));
        rows.push(Row {
            case: *case,
            throughput_ratio: a.result.ops_per_s / p.result.ops_per_s,
            p99_ratio: a.result.p99_ms / p.result.p99_ms.max(0.001),
            arca: a,
            peer: p,
            rounds: all,
        });
    }
    Ok(rows)
}

/// `173.2 MiB/s` for large objects, `1520 req/s` for small ones.
pub fn throughput(result: &LoadResult) -> String {
    if result.size >= 1 << 20 && matches!(result.workload, Workload::BlobPush | Workload::BlobPull)
    {
        format!("{:.1} MiB/s", result.mib_per_s)
    } else {
        format!("{:.0} req/s", result.ops_per_s)
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The comparison as a table.
pub fn table(rows: &[Row]) -> comfy_table::Table {
    table_against(rows, "distribution")
}

/// [`table`], naming the peer's column.
pub fn table_against(rows: &[Row], peer: &str) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header([
        "workload",
        "size",
        "clients",
        "arca",
        peer,
        "ratio",
        "arca p99",
        "peer p99",
        "p99 ratio",
        "arca peak RSS",
        "peer peak RSS",
    ]);
    for row in rows {
        table.add_row([
            row.case.workload.to_string(),
            format_size(row.case.size),
            row.case.concurrency.to_string(),
            throughput(&row.arca.result),
            throughput(&row.peer.result),
            format!("{:.2}", row.throughput_ratio),
            format!("{:.1} ms", row.arca.result.p99_ms),
            format!("{:.1} ms", row.peer.result.p99_ms),
            format!("{:.2}", row.p99_ratio),
            mib(row.arca.peak_rss_bytes),
            mib(row.peer.peak_rss_bytes),
        ]);
    }
    table
}

/// The scratch directory for a comparison: `dir`, or a fresh one under the current directory
/// (not `/tmp`, which may be memory).
pub fn scratch(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("arca-compare-")
                .tempdir_in(".")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}
