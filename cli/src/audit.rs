//! `arca audit ls|export|verify`: the audit log, a page at a time, as JSON lines, and its
//! hash chain recomputed.

use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;

use crate::auth::print_rows;
use crate::client::Client;
use crate::output::{print_json, OutputFormat};

#[derive(clap::Args, Clone)]
pub struct AuditFilter {
    /// RFC 3339 time or milliseconds since the epoch.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    principal: Option<String>,
    #[arg(long)]
    repo: Option<String>,
    #[arg(long)]
    action: Option<String>,
    /// ok, denied, error (a prefix of the outcome).
    #[arg(long)]
    outcome: Option<String>,
}

impl AuditFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        for (key, value) in [
            ("since", &self.since),
            ("principal", &self.principal),
            ("repo", &self.repo),
            ("action", &self.action),
            ("outcome", &self.outcome),
        ] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        query
    }
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit records (a page; --limit).
    Ls {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Write every matching record as JSON lines (for a SIEM).
    Export {
        #[command(flatten)]
        filter: AuditFilter,
    },
    /// Recompute the hash chain; names the first broken record.
    Verify,
}

async fn audit_page(
    client: &Client,
    filter: &AuditFilter,
    after: u64,
    limit: usize,
) -> anyhow::Result<Value> {
    let mut query = filter.query();
    query.push(("after", after.to_string()));
    query.push(("limit", limit.to_string()));
    let response = client
        .http
        .get(client.url("/api/v1/audit"))
        .query(&query)
        .send()
        .await?;
    Ok(Client::check(response).await?.json().await?)
}

pub async fn audit(
    client: &Client,
    command: AuditCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::Ls { filter, limit } => {
            let value = audit_page(client, &filter, 0, limit.clamp(1, 1000)).await?;
            print_rows(
                output,
                &value,
                "records",
                &[
                    ("SEQ", "seq"),
                    ("TIME", "time"),
                    ("PRINCIPAL", "principal"),
                    ("SOURCE", "source"),
                    ("ACTION", "action"),
                    ("RESOURCE", "resource"),
                    ("OUTCOME", "outcome"),
                    ("COUNT", "count"),
                ],
            )
        }
        AuditCommand::Export { filter } => {
            let mut after = 0;
            loop {
                let page = audit_page(client, &filter, after, 1000).await?;
                for record in page["records"].as_array().into_iter().flatten() {
                    println!("{}", serde_json::to_string(record)?);
                }
                match page["next"].as_u64() {
                    Some(next) => after = next,
                    None => return Ok(()),
                }
            }
        }
        AuditCommand::Verify => {
            let value = client.get_json::<Value>("/api/v1/audit/verify").await?;
            let ok = value["ok"].as_bool().unwrap_or(false);
            match output {
                OutputFormat::Json => print_json(&value)?,
                OutputFormat::Table => {
                    if ok {
                        println!(
                            "audit chain intact: {} records ({}..{})",
                            value["records"], value["first_seq"], value["last_seq"]
                        );
                    } else {
                        println!(
                            "audit chain BROKEN at record {}: {}",
                            value["broken_at"],
                            value["reason"].as_str().unwrap_or("?")
                        );
                    }
                }
            }
            if !ok {
                bail!("the audit chain does not verify");
            }
            Ok(())
        }
    }
}
