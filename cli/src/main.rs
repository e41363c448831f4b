//! `arca`: run a node, push and pull artifacts, manage repositories.

mod accounts;
mod audit;
mod auth;
mod cache;
mod certs;
mod client;
mod cluster;
mod files;
mod output;
mod packages;
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
    /// An access or session token for client commands (default: the one `arca login`
    /// stored for this server).
    #[arg(long, global = true, env = "ARCA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// An operator certificate (PEM, `arca certs issue --operator`) for `cluster` commands over
    /// mutual TLS (`--admin https://…`, the cluster CA in ARCA_CA_CERT), instead of a token.
    #[arg(long, global = true, env = "ARCA_ADMIN_CERT", requires = "admin_key")]
    admin_cert: Option<std::path::PathBuf>,
    /// The operator certificate's key (PEM).
    #[arg(long, global = true, env = "ARCA_ADMIN_KEY", requires = "admin_cert")]
    admin_key: Option<std::path::PathBuf>,
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
    /// The caches of remote (pull-through) repositories.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Inspect and change the region's membership; replication between regions.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Certificates for replication between regions.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Sign in to the server (a password, prompted or from stdin, or an access token).
    Login(auth::LoginArgs),
    /// Forget the stored credentials of the server.
    Logout,
    /// Show who the stored credentials sign in as, and their roles.
    Whoami,
    /// Manage users and service accounts.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage teams.
    #[command(subcommand)]
    Team(accounts::TeamCommand),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(auth::TokenCommand),
    /// Grant, revoke and list roles.
    #[command(subcommand)]
    Role(accounts::RoleCommand),
    /// Read, export and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
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
    /// List the files of REPO, optionally under a path prefix; for a package repository
    /// (pypi), its packages, or one package's versions and files.
    Ls {
        /// REPO or REPO/PREFIX (REPO/PACKAGE for a package repository).
        target: String,
    },
    /// Show a file's size, digests and times; for a package repository, a package's (or one
    /// version's) files.
    Stat {
        /// REPO/PATH (REPO/PACKAGE or REPO/PACKAGE/VERSION for a package repository).
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
        Command::Cluster(command) => {
            let access = cluster::AdminAccess {
                address: cli.admin,
                token: cli.token.or_else(|| auth::stored_token(&cli.server)),
                cert: cli.admin_cert.zip(cli.admin_key),
            };
            cluster::run(&access, command, output).await
        }
        Command::Certs(command) => certs::run(command, output),
        Command::Login(args) => auth::login(&cli.server, args, output).await,
        Command::Logout => auth::logout(&cli.server, output),
        command => {
            let token = cli.token.or_else(|| auth::stored_token(&cli.server));
            let client = client::Client::new(&cli.server, token)?;
            match command {
                Command::Serve(_)
                | Command::Cluster(_)
                | Command::Certs(_)
                | Command::Login(_)
                | Command::Logout => {
                    unreachable!("handled above")
                }
                Command::Whoami => auth::whoami(&client, output).await,
                Command::User(command) => accounts::user(&client, command, output).await,
                Command::Team(command) => accounts::team(&client, command, output).await,
                Command::Token(command) => auth::token(&client, command, output).await,
                Command::Role(command) => accounts::role(&client, command, output).await,
                Command::Audit(command) => audit::audit(&client, command, output).await,
                Command::Repo(command) => repos::run(&client, command, output).await,
                Command::Cache(command) => cache::run(&client, command, output).await,
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
