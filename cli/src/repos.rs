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
        /// Make it a remote (pull-through) repository of this upstream URL: a miss is fetched
        /// from the upstream, stored, and served from the cache from then on (formats:
        /// generic, where the URL is a directory; oci, where it is a registry's base URL).
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
        /// The user name Arca signs in to the upstream with.
        #[arg(long, requires = "remote")]
        upstream_username: Option<String>,
        /// A file holding the upstream password or token (never passed on the command line).
        #[arg(long, requires = "upstream_username")]
        upstream_password_file: Option<std::path::PathBuf>,
        /// How long cached metadata (OCI tags; generic files of a mutable repository) is served
        /// before it is revalidated with the upstream, in seconds.
        #[arg(long, requires = "remote")]
        metadata_ttl: Option<u64>,
        /// How long "the upstream does not have it" is remembered, in seconds.
        #[arg(long, requires = "remote")]
        negative_ttl: Option<u64>,
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
            remote,
            upstream_username,
            upstream_password_file,
            metadata_ttl,
            negative_ttl,
        } => {
            let replication = if sync_replication { "sync" } else { "async" };
            let mut body = json!({ "name": name, "format": format, "immutable": immutable, "replication": replication, "anonymous_read": anonymous_read });
            if let Some(url) = &remote {
                body["remote"] = json!(url);
                body["upstream_username"] = json!(upstream_username);
                if let Some(file) = &upstream_password_file {
                    let password = std::fs::read_to_string(file).map_err(|e| {
                        anyhow::anyhow!("read the upstream password from {}: {e}", file.display())
                    })?;
                    body["upstream_password"] = json!(password.trim_end_matches(['\r', '\n']));
                }
                if let Some(ttl) = metadata_ttl {
                    body["metadata_ttl_secs"] = json!(ttl);
                }
                if let Some(ttl) = negative_ttl {
                    body["negative_ttl_secs"] = json!(ttl);
                }
            }
            let response = client
                .http
                .post(client.url("/api/v1/repos"))
                .json(&body)
                .send()
                .await?;
            let repo: Value = Client::check(response).await?.json().await?;
            match output {
                OutputFormat::Json => print_json(&repo),
                OutputFormat::Table => {
                    println!(
                        "created repository {name} ({format}{}{})",
                        if immutable { ", immutable" } else { "" },
                        remote
                            .as_deref()
                            .map(|url| format!(", remote of {url}"))
                            .unwrap_or_default()
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
                                "KIND",
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
                                "KIND",
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
        match repo["remote"]["url"].as_str() {
            Some(url) => format!("remote of {url}"),
            None => repo["kind"].as_str().unwrap_or("local").to_string(),
        },
        repo["immutable"].as_bool().unwrap_or_default().to_string(),
        repo["artifacts"].as_u64().unwrap_or_default().to_string(),
        human_bytes(repo["logical_bytes"].as_u64().unwrap_or_default()),
        human_bytes(repo["physical_bytes"].as_u64().unwrap_or_default()),
        repo["created_at"].as_str().unwrap_or_default().to_string(),
    ]
}
