//! `arca repo …`

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{human_bytes, print_json, table, OutputFormat};

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create a repository.
    Create {
        name: String,
        /// Repository format: `generic` (files under /files/), `oci` (container images and
        /// other OCI artifacts under /v2/), `pypi` (Python packages under /pypi/NAME/, for
        /// pip, uv and twine), `npm` (under /npm/NAME/), `maven` (under /maven/NAME/),
        /// `cargo` (a sparse index at /cargo/NAME/index/), `helm` (a chart repository at
        /// /helm/NAME/) or `nuget` (a v3 feed at /nuget/NAME/v3/index.json).
        #[arg(long, default_value = "generic")]
        format: String,
        /// Paths (and OCI tags) can be written once; identical re-uploads are accepted.
        #[arg(long)]
        immutable: bool,
        /// Acknowledge a push only once a mirror region has applied it.
        #[arg(long)]
        sync_replication: bool,
        /// Let anyone pull without a credential (repositories are private by default).
        #[arg(long)]
        anonymous_read: bool,
    },
    /// Open or close anonymous pulls of a repository.
    Access {
        name: String,
        #[arg(long, action = clap::ArgAction::Set)]
        anonymous_read: bool,
    },
    /// List repositories with their sizes.
    Ls,
    /// Show one repository.
    Show { name: String },
}

pub async fn run(
    client: &Client,
    command: RepoCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        RepoCommand::Create {
            name,
            format,
            immutable,
            sync_replication,
            anonymous_read,
        } => {
            let replication = if sync_replication { "sync" } else { "async" };
            let response = client
                .http
                .post(client.url("/api/v1/repos"))
                .json(&json!({ "name": name, "format": format, "immutable": immutable, "replication": replication, "anonymous_read": anonymous_read }))
                .send()
                .await?;
            let repo: Value = Client::check(response).await?.json().await?;
            match output {
                OutputFormat::Json => print_json(&repo),
                OutputFormat::Table => {
                    println!(
                        "created repository {name} ({format}{})",
                        if immutable { ", immutable" } else { "" }
                    );
                    Ok(())
                }
            }
        }
        RepoCommand::Access {
            name,
            anonymous_read,
        } => {
            let response = client
                .http
                .put(client.url(&format!("/api/v1/repos/{name}/access")))
                .json(&json!({ "anonymous_read": anonymous_read }))
                .send()
                .await?;
            let value: Value = Client::check(response).await?.json().await?;
            match output {
                OutputFormat::Json => print_json(&value),
                OutputFormat::Table => {
                    println!(
                        "{name}: anonymous reads {}",
                        if anonymous_read { "allowed" } else { "refused" }
                    );
                    Ok(())
                }
            }
        }
        RepoCommand::Ls => {
            let list: Value = client.get_json("/api/v1/repos").await?;
            match output {
                OutputFormat::Json => print_json(&list),
                OutputFormat::Table => {
                    let rows = list["repositories"]
                        .as_array()
                        .map(|repos| repos.iter().map(repo_row).collect())
                        .unwrap_or_default();
                    println!(
                        "{}",
                        table(
                            &[
                                "NAME",
                                "FORMAT",
                                "IMMUTABLE",
                                "ARTIFACTS",
                                "LOGICAL",
                                "PHYSICAL",
                                "CREATED"
                            ],
                            rows
                        )
                    );
                    Ok(())
                }
            }
        }
        RepoCommand::Show { name } => {
            let repo: Value = client.get_json(&format!("/api/v1/repos/{name}")).await?;
            match output {
                OutputFormat::Json => print_json(&repo),
                OutputFormat::Table => {
                    println!(
                        "{}",
                        table(
                            &[
                                "NAME",
                                "FORMAT",
                                "IMMUTABLE",
                                "ARTIFACTS",
                                "LOGICAL",
                                "PHYSICAL",
                                "CREATED"
                            ],
                            vec![repo_row(&repo)]
                        )
                    );
                    Ok(())
                }
            }
        }
    }
}

fn repo_row(repo: &Value) -> Vec<String> {
    vec![
        repo["name"].as_str().unwrap_or_default().to_string(),
        repo["format"].as_str().unwrap_or_default().to_string(),
        repo["immutable"].as_bool().unwrap_or_default().to_string(),
        repo["artifacts"].as_u64().unwrap_or_default().to_string(),
        human_bytes(repo["logical_bytes"].as_u64().unwrap_or_default()),
        human_bytes(repo["physical_bytes"].as_u64().unwrap_or_default()),
        repo["created_at"].as_str().unwrap_or_default().to_string(),
    ]
}
