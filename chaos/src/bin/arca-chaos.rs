//! `arca-chaos`: runs a named fault scenario against real `arca` processes on loopback and
//! ends with a verdict on the invariants of `design.md`. Exit code 0: every invariant held;
//! 1: one was violated; 2: the harness could not run the scenario.

use std::path::PathBuf;
use std::time::Duration;

use arca_chaos::cluster::Topology;
use arca_chaos::run::{run, summary, RunOptions};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "arca-chaos",
    about = "Fault-injection runs against a loopback Arca cluster"
)]
struct Args {
    /// leader-kill, region-partition, flaky-wan, disk-corruption, primary-loss-promote,
    /// rolling-restart or mixed.
    #[arg(long)]
    scenario: String,
    /// Seed of the fault plan and of the workload (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of workload and faults (healing and checking come after).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Nodes per region, primary first: `3,1` is a primary of 3 nodes and a mirror of 1.
    #[arg(long, default_value = "3,1")]
    topology: Topology,
    /// Report directory (result.json, summary.txt, timeline.svg, history.jsonl).
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// The `arca` binary (default: `arca` beside this binary).
    #[arg(long)]
    arca: Option<PathBuf>,
    /// Concurrent workload clients.
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Seconds to wait for the regions to converge after healing.
    #[arg(long, default_value_t = 90)]
    converge_timeout: u64,
    /// Keep the nodes' data under OUT/data.
    #[arg(long)]
    keep_data: bool,
}

fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let arca = args.arca.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("arca")))
            .filter(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from("arca"))
    });
    let options = RunOptions {
        scenario: args.scenario.clone(),
        seed,
        duration: Duration::from_secs(args.duration),
        topology: args.topology.clone(),
        arca,
        out: args.out.clone(),
        clients: args.clients.max(1),
        converge_timeout: Duration::from_secs(args.converge_timeout),
        keep_data: args.keep_data,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(result) => {
            print!("{}", summary(&result));
            println!("report in {}", args.out.display());
            runtime.shutdown_timeout(Duration::from_secs(5));
            std::process::exit(if result.held() { 0 } else { 1 });
        }
        Err(error) => {
            eprintln!("arca-chaos: {error:#}");
            runtime.shutdown_timeout(Duration::from_secs(5));
            std::process::exit(2);
        }
    }
}
