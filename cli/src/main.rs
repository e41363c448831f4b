//! `arca`: run a node, push and pull artifacts, manage repositories.

mod certs;
mod client;
mod cluster;
mod files;
mod output;
mod repos;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::OutputFormat;

#[derive(Parser)]
#[command(
    name = "arca",
    version,
    about = "Arca: a geo-replicated artifact repository"
)]
struct Cli {
    /// The Arca server to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "ARCA_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// The admin (gRPC) address of any node of the region, for `cluster` commands.
    #[arg(
        long,
        global = true,
        env = "ARCA_ADMIN",
        default_value = "http://127.0.0.1:7071"
    )]
    admin: String,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (single-node region by default: data in ./arca-data, HTTP on 127.0.0.1:7070).
    Serve(Box<serve::ServeArgs>),
    /// Manage repositories.
    #[command(subcommand)]
    Repo(repos::RepoCommand),
    /// Inspect and change the region's membership; replication between regions.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Certificates for replication between regions.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Upload a file to REPO/PATH.
    Push {
        /// The local file to upload.
        file: PathBuf,
        /// Destination, as REPO/PATH.
        target: String,
    },
    /// Download REPO/PATH, verifying its sha256.
    Pull {
        /// Source, as REPO/PATH.
        target: String,
        /// Where to write (default: the last path segment, in the current directory).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// List the files of REPO, optionally under a path prefix.
    Ls {
        /// REPO or REPO/PREFIX.
        target: String,
    },
    /// Show a file's size, digests and times.
    Stat {
        /// REPO/PATH.
        target: String,
    },
    /// Delete REPO/PATH.
    Rm {
        /// REPO/PATH.
        target: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let output = cli.output;
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Cluster(command) => cluster::run(&cli.admin, command, output).await,
        Command::Certs(command) => certs::run(command, output),
        command => {
            let client = client::Client::new(&cli.server)?;
            match command {
                Command::Serve(_) | Command::Cluster(_) | Command::Certs(_) => {
                    unreachable!("handled above")
                }
                Command::Repo(command) => repos::run(&client, command, output).await,
                Command::Push { file, target } => {
                    files::push(&client, &file, &target, output).await
                }
                Command::Pull { target, out } => files::pull(&client, &target, out, output).await,
                Command::Ls { target } => files::ls(&client, &target, output).await,
                Command::Stat { target } => files::stat(&client, &target, output).await,
                Command::Rm { target } => files::rm(&client, &target, output).await,
            }
        }
    }
}
