//! `arca cache …`: what remote (pull-through) repositories hold, and purging it.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{human_bytes, print_json, table, OutputFormat};

#[derive(Subcommand)]
pub enum CacheCommand {
    /// The remote repositories with their upstreams and what they cache.
    Ls,
    /// Remove what a remote repository cached (all of it, or the paths / images under PATH):
    /// the next request fetches it from the upstream again.
    Purge {
        /// REPO or REPO/PATH.
        target: String,
    },
}

pub async fn run(
    client: &Client,
    command: CacheCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        CacheCommand::Ls => {
            let list: Value = client.get_json("/api/v1/repos").await?;
            let remotes: Vec<Value> = list["repositories"]
                .as_array()
                .map(|repos| {
                    repos
                        .iter()
                        .filter(|repo| repo["kind"] == "remote")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            match output {
                OutputFormat::Json => print_json(&json!({ "remotes": remotes })),
                OutputFormat::Table => {
                    let rows = remotes
                        .iter()
                        .map(|repo| {
                            vec![
                                repo["name"].as_str().unwrap_or_default().to_string(),
                                repo["format"].as_str().unwrap_or_default().to_string(),
                                repo["remote"]["url"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                repo["remote"]["metadata_ttl_secs"]
                                    .as_u64()
                                    .map(|s| format!("{s}s"))
                                    .unwrap_or_default(),
                                repo["artifacts"].as_u64().unwrap_or_default().to_string(),
                                human_bytes(repo["logical_bytes"].as_u64().unwrap_or_default()),
                                human_bytes(repo["physical_bytes"].as_u64().unwrap_or_default()),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &[
                                "NAME", "FORMAT", "UPSTREAM", "TTL", "CACHED", "LOGICAL",
                                "PHYSICAL"
                            ],
                            rows
                        )
                    );
                    Ok(())
                }
            }
        }
        CacheCommand::Purge { target } => {
            let (repo, path) = target.split_once('/').unwrap_or((target.as_str(), ""));
            let mut total = 0u64;
            // Each call removes a bounded batch: repeat until the server says it is done.
            let answer = loop {
                let response = client
                    .http
                    .delete(client.url(&format!("/api/v1/repos/{repo}/cache")))
                    .query(&[("path", path)])
                    .send()
                    .await?;
                let answer: Value = Client::check(response).await?.json().await?;
                total += answer["removed"].as_u64().unwrap_or_default();
                if !answer["more"].as_bool().unwrap_or(false) {
                    break answer;
                }
            };
            match output {
                OutputFormat::Json => print_json(&json!({
                    "repo": repo, "path": path, "removed": total, "last": answer,
                })),
                OutputFormat::Table => {
                    println!(
                        "purged {total} cached item{} from {repo}{}",
                        if total == 1 { "" } else { "s" },
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!("/{path}")
                        }
                    );
                    Ok(())
                }
            }
        }
    }
}
