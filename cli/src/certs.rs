//! `arca certs …`: the cluster CA, node certificates (intra-region gRPC and replication between
//! regions) and operator certificates (the admin RPCs).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use arca_replication::tls::Role;

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
    /// Issue a certificate signed by the cluster CA: a node certificate of one region
    /// (--region, with the names it is reached by), or an operator certificate (--operator).
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long, default_value = "arca-certs")]
        ca_dir: PathBuf,
        /// The holder's name (certificate common name).
        #[arg(long)]
        name: String,
        /// The region of the node: its certificate speaks for this region only.
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        region: Option<String>,
        /// An operator certificate: the admin RPCs (status, membership, promote, …), no node role.
        #[arg(long)]
        operator: bool,
        /// DNS name or IP address the node is reached by (repeatable).
        #[arg(long = "host", required_unless_present = "operator")]
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
            region,
            operator,
            hosts,
            out,
            days,
        } => {
            let out = out.unwrap_or_else(|| ca_dir.join(&name));
            let role = match (&region, operator) {
                (_, true) => Role::Operator,
                (Some(region), false) => Role::Node { region },
                (None, false) => anyhow::bail!("give --region (a node) or --operator"),
            };
            let (cert, key) =
                arca_replication::tls::issue(&ca_dir, &name, role, &hosts, &out, day * days as u32)
                    .context("issue the certificate")?;
            let what = match &region {
                Some(region) if !operator => format!("node of region {region}"),
                _ => "operator".to_string(),
            };
            match output {
                OutputFormat::Json => print_json(&json!({
                    "cert": cert,
                    "key": key,
                    "hosts": hosts,
                    "region": region.filter(|_| !operator),
                    "operator": operator,
                })),
                OutputFormat::Table => {
                    println!(
                        "issued {} for {} ({what}; {})",
                        cert.display(),
                        name,
                        if hosts.is_empty() {
                            "client only".to_string()
                        } else {
                            hosts.join(", ")
                        }
                    );
                    Ok(())
                }
            }
        }
    }
}
