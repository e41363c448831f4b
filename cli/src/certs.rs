//! `arca certs …`: the cluster CA and node certificates for replication between regions.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use crate::output::{print_json, OutputFormat};

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory for the CA files.
        #[arg(long, default_value = "arca-certs")]
        dir: PathBuf,
        /// Validity, in days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a node certificate signed by the cluster CA.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long, default_value = "arca-certs")]
        ca_dir: PathBuf,
        /// The node's name (certificate common name).
        #[arg(long)]
        name: String,
        /// DNS name or IP address the node is reached by (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Output path without extension (default: CA_DIR/NAME): writes .pem and .key.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity, in days.
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
}

pub fn run(command: CertsCommand, output: OutputFormat) -> anyhow::Result<()> {
    let day = Duration::from_secs(24 * 3600);
    match command {
        CertsCommand::Init { dir, days } => {
            let (cert, key) = arca_replication::tls::init_ca(&dir, day * days as u32)
                .context("create the cluster CA")?;
            match output {
                OutputFormat::Json => print_json(&json!({ "ca_cert": cert, "ca_key": key })),
                OutputFormat::Table => {
                    println!(
                        "created cluster CA {} (key {}; keep it secret)",
                        cert.display(),
                        key.display()
                    );
                    Ok(())
                }
            }
        }
        CertsCommand::Issue {
            ca_dir,
            name,
            hosts,
            out,
            days,
        } => {
            let out = out.unwrap_or_else(|| ca_dir.join(&name));
            let (cert, key) =
                arca_replication::tls::issue(&ca_dir, &name, &hosts, &out, day * days as u32)
                    .context("issue the node certificate")?;
            match output {
                OutputFormat::Json => {
                    print_json(&json!({ "cert": cert, "key": key, "hosts": hosts }))
                }
                OutputFormat::Table => {
                    println!(
                        "issued {} for {} ({})",
                        cert.display(),
                        name,
                        hosts.join(", ")
                    );
                    Ok(())
                }
            }
        }
    }
}
