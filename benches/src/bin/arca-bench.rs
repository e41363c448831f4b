//! `arca-bench`: load generator, machine limits, and the side-by-side comparison with a peer
//! registry. See `docs/benchmarks.md` for the results and the commands that produced them.
//!
//! ```text
//! arca-bench run --target http://127.0.0.1:7070 --workload blob-push --size 4KiB --concurrency 64 --ops 2000
//! arca-bench limits
//! arca-bench compare --arca $CARGO_TARGET_DIR/release/arca [--registry /usr/bin/docker-registry]
//! arca-bench compare-auth --arca $CARGO_TARGET_DIR/release/arca --baseline /tmp/arca-without-auth
//! ```

use std::path::PathBuf;

use anyhow::Context;
use arca_benches::compare::{self, Server};
use arca_benches::limits;
use arca_benches::load::{self, format_size, parse_size, LoadSpec, RssSampler, Workload};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "arca-bench",
    about = "Load generator and registry comparison for Arca"
)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Push or pull against any registry URL and report throughput and latency percentiles.
    Run {
        /// Registry base URL.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        target: String,
        /// blob-push, blob-pull, manifest-push, manifest-pull, file-push, file-pull.
        #[arg(long)]
        workload: Workload,
        /// Object size: 4KiB … 1GiB (manifests: the size of the layer they reference).
        #[arg(long, default_value = "4KiB", value_parser = parse_size)]
        size: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
        /// Operations to measure.
        #[arg(long, default_value_t = 200)]
        ops: u64,
        /// OCI repository name (for Arca: `<oci repository>/<image>`).
        #[arg(long, default_value = "containers/bench")]
        image: String,
        /// Arca repository for the file workloads.
        #[arg(long, default_value = "bench")]
        repo: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hash every pulled byte and compare with the digest.
        #[arg(long)]
        verify: bool,
        /// Sample this process's RSS during the run (the server's pid).
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// The machine's limits: hashing per core, the chunking pipeline, loopback TCP, synced disk.
    Limits {
        /// Directory for the disk test (put it on the registries' disk).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Start a single-node Arca and Debian's docker-registry side by side and compare them.
    Compare {
        /// The `arca` binary (a release build).
        #[arg(long)]
        arca: PathBuf,
        /// The peer: Debian's docker-registry (CNCF distribution 2.8).
        #[arg(long, default_value = "/usr/bin/docker-registry")]
        registry: PathBuf,
        /// Scratch directory for both servers' data (default: a temporary one here).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rounds per workload, alternating which server goes first; the best round counts.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Small sizes and counts (a smoke run of a few seconds).
        #[arg(long)]
        quick: bool,
        /// Skip the machine limits.
        #[arg(long)]
        no_limits: bool,
        /// Also write the JSON result here.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Small-object push and pull with authentication (a token on every request) against a
    /// build of Arca without it (its last commit before accounts), side by side.
    CompareAuth {
        /// The `arca` binary under test.
        #[arg(long)]
        arca: PathBuf,
        /// An `arca` built without authentication.
        #[arg(long)]
        baseline: PathBuf,
        /// Scratch directory for both servers' data (default: a temporary one here).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rounds per workload, alternating which server goes first; the best round counts.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Fewer operations (a smoke run).
        #[arg(long)]
        quick: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            target,
            workload,
            size,
            concurrency,
            ops,
            image,
            repo,
            seed,
            verify,
            server_pid,
        } => {
            let mut spec = LoadSpec::new(target, workload, size);
            spec.concurrency = concurrency as usize;
            spec.ops = ops;
            spec.image = image;
            spec.repo = repo;
            spec.seed = seed;
            spec.verify = verify;
            let sampler = server_pid.map(RssSampler::start);
            let result = load::run(&spec).await?;
            let peak = match sampler {
                Some(s) => Some(s.finish().await),
                None => None,
            };
            if cli.output == Output::Json {
                let mut value = serde_json::to_value(&result)?;
                value["peak_rss_bytes"] = serde_json::json!(peak);
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "{} {} × {} with {} clients against {}: {} ok, {} failed in {:.2} s",
                    result.workload,
                    format_size(result.size),
                    result.ops,
                    result.concurrency,
                    result.target,
                    result.ops - result.errors,
                    result.errors,
                    result.seconds
                );
                println!(
                    "  {:.1} MiB/s, {:.2} req/s; latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    result.mib_per_s,
                    result.ops_per_s,
                    result.p50_ms,
                    result.p95_ms,
                    result.p99_ms,
                    result.max_ms
                );
                if let Some(peak) = peak {
                    println!("  server peak RSS {}", compare::mib(peak));
                }
                if let Some(error) = &result.first_error {
                    println!("  first error: {error}");
                }
            }
            if result.errors > 0 {
                std::process::exit(1);
            }
        }
        Command::Limits { dir } => {
            let limits = limits::measure(&dir).await?;
            print_limits(cli.output, &limits)?;
        }
        Command::Compare {
            arca,
            registry,
            dir,
            rounds,
            quick,
            no_limits,
            json_out,
        } => {
            anyhow::ensure!(
                registry.exists(),
                "{} not found: install Debian's docker-registry (apt-get install docker-registry) \
                 or pass --registry",
                registry.display()
            );
            let (dir, _temp) = compare::scratch(dir)?;
            let machine = if no_limits {
                None
            } else {
                eprintln!("measuring the machine's limits …");
                Some(limits::measure(&dir).await?)
            };
            let arca = Server::arca(&arca, &dir).await.context("start arca")?;
            let peer = Server::distribution(&registry, &dir)
                .await
                .context("start docker-registry")?;
            let cases = if quick {
                compare::quick_cases()
            } else {
                compare::full_cases()
            };
            let rows = compare::compare(&arca, &peer, &cases, rounds, progress).await?;
            let report = serde_json::json!({"limits": machine, "rows": rows});
            if let Some(path) = json_out {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                if let Some(limits) = &machine {
                    print_limits(Output::Table, limits)?;
                    println!();
                }
                println!("{}", compare::table(&rows));
            }
        }
        Command::CompareAuth {
            arca,
            baseline,
            dir,
            rounds,
            quick,
        } => {
            let (dir, _temp) = compare::scratch(dir)?;
            let with = Server::arca(&arca, &dir).await.context("start arca")?;
            anyhow::ensure!(with.token.is_some(), "{} has no accounts", arca.display());
            let without = Server::arca_named(&baseline, &dir, "no-auth")
                .await
                .context("start the baseline")?;
            anyhow::ensure!(
                without.token.is_none(),
                "the baseline {} has accounts: build one from before them",
                baseline.display()
            );
            let cases = compare::auth_cases(quick);
            let rows = compare::compare(&with, &without, &cases, rounds, progress).await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{}", compare::table_against(&rows, "no auth"));
            }
        }
    }
    Ok(())
}

/// One line per measured round, on stderr.
fn progress(m: &compare::Measured) {
    eprintln!(
        "  round {} {:<12} {:<13} {:>7} ×{:<5} {:>14}  p99 {:>8.1} ms  peak RSS {}",
        m.round,
        m.server,
        m.result.workload,
        format_size(m.result.size),
        m.result.concurrency,
        compare::throughput(&m.result),
        m.result.p99_ms,
        compare::mib(m.peak_rss_bytes)
    );
}

fn print_limits(output: Output, limits: &limits::Limits) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(limits)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header(["machine limit", "measured"]);
    let rows = [
        (
            "blake3, one core",
            format!("{:.2} GiB/s", limits.blake3_gib_s),
        ),
        (
            "sha256, one core",
            format!("{:.2} GiB/s", limits.sha256_gib_s),
        ),
        (
            "FastCDC boundaries, one core",
            format!("{:.2} GiB/s", limits.fastcdc_gib_s),
        ),
        (
            "Arca ingest pipeline (FastCDC + blake3 + sha256), one core",
            format!(
                "{:.2} GiB/s ({:.0} % of blake3)",
                limits.ingest_pipeline_gib_s,
                100.0 * limits.ingest_pipeline_gib_s / limits.blake3_gib_s
            ),
        ),
        (
            "TCP copy over loopback",
            format!("{:.2} GiB/s", limits.tcp_loopback_gib_s),
        ),
        (
            "disk, sequential 1 MiB writes + fdatasync",
            format!("{:.0} MiB/s", limits.disk_write_synced_mib_s),
        ),
        (
            "disk, 4 KiB append + fdatasync",
            format!("{:.0} /s", limits.disk_fsync_4k_per_s),
        ),
    ];
    for (what, value) in rows {
        table.add_row([what.to_string(), value]);
    }
    println!("{table}");
    Ok(())
}
