//! `arca user|team|role …`: accounts, teams and role bindings.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::auth::{done, password, print_rows, send};
use crate::client::Client;
use crate::output::OutputFormat;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (password from stdin or a prompt) or, with --service, a service account
    /// (tokens only).
    Create {
        name: String,
        #[arg(long)]
        service: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    Ls,
    /// Delete an account with its tokens and role bindings.
    Rm { name: String },
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn user(
    client: &Client,
    command: UserCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            name,
            service,
            password_stdin,
        } => {
            let mut body =
                json!({ "name": name, "kind": if service { "service" } else { "user" } });
            if !service {
                body["password"] =
                    json!(password(password_stdin, &format!("Password for {name}: "))?);
            }
            let value = send(client.http.post(client.url("/api/v1/users")).json(&body)).await?;
            done(
                output,
                &value,
                format!(
                    "created {} {name}",
                    if service { "service account" } else { "user" }
                ),
            )
        }
        UserCommand::Ls => {
            let value = client.get_json::<Value>("/api/v1/users").await?;
            print_rows(
                output,
                &value,
                "users",
                &[
                    ("NAME", "name"),
                    ("KIND", "kind"),
                    ("CREATED", "created_at"),
                ],
            )
        }
        UserCommand::Rm { name } => {
            let value = send(
                client
                    .http
                    .delete(client.url(&format!("/api/v1/users/{name}"))),
            )
            .await?;
            done(
                output,
                &value,
                format!("deleted {name}, its tokens and its role bindings"),
            )
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let body = json!({ "password": password(password_stdin, &format!("New password for {name}: "))? });
            let value = send(
                client
                    .http
                    .put(client.url(&format!("/api/v1/users/{name}/password")))
                    .json(&body),
            )
            .await?;
            done(output, &value, format!("set the password of {name}"))
        }
    }
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Create or replace a team.
    Set {
        name: String,
        /// A member account (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
    },
    Ls,
    Rm {
        name: String,
    },
}

pub async fn team(
    client: &Client,
    command: TeamCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        TeamCommand::Set { name, members } => {
            let value = send(
                client
                    .http
                    .put(client.url(&format!("/api/v1/teams/{name}")))
                    .json(&json!({ "members": members })),
            )
            .await?;
            done(
                output,
                &value,
                format!("team {name}: {}", members.join(", ")),
            )
        }
        TeamCommand::Ls => {
            let value = client.get_json::<Value>("/api/v1/teams").await?;
            print_rows(
                output,
                &value,
                "teams",
                &[("NAME", "name"), ("MEMBERS", "members")],
            )
        }
        TeamCommand::Rm { name } => {
            let value = send(
                client
                    .http
                    .delete(client.url(&format!("/api/v1/teams/{name}"))),
            )
            .await?;
            done(output, &value, format!("deleted team {name}"))
        }
    }
}

#[derive(clap::Args)]
pub struct Principal {
    #[arg(long, group = "principal")]
    user: Option<String>,
    #[arg(long, group = "principal")]
    service: Option<String>,
    #[arg(long, group = "principal")]
    team: Option<String>,
}

impl Principal {
    fn render(&self) -> anyhow::Result<String> {
        Ok(match (&self.user, &self.service, &self.team) {
            (Some(u), None, None) => format!("user:{u}"),
            (None, Some(s), None) => format!("service:{s}"),
            (None, None, Some(t)) => format!("team:{t}"),
            _ => bail!("name exactly one of --user, --service, --team"),
        })
    }
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Bind ROLE (read, write, delete, admin, cluster-admin) on repositories matching PATTERN.
    Grant {
        role: String,
        pattern: String,
        #[command(flatten)]
        principal: Principal,
    },
    Revoke {
        role: String,
        pattern: String,
        #[command(flatten)]
        principal: Principal,
    },
    Ls,
}

pub async fn role(
    client: &Client,
    command: RoleCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        RoleCommand::Grant {
            role,
            pattern,
            principal,
        } => {
            let principal = principal.render()?;
            let body = json!({ "principal": principal, "pattern": pattern, "role": role });
            let value = send(client.http.post(client.url("/api/v1/roles")).json(&body)).await?;
            done(
                output,
                &value,
                format!("granted {role} on {pattern} to {principal}"),
            )
        }
        RoleCommand::Revoke {
            role,
            pattern,
            principal,
        } => {
            let principal = principal.render()?;
            let request = client.http.delete(client.url("/api/v1/roles")).query(&[
                ("principal", principal.as_str()),
                ("pattern", pattern.as_str()),
                ("role", role.as_str()),
            ]);
            let value = send(request).await?;
            done(
                output,
                &value,
                format!("revoked {role} on {pattern} from {principal}"),
            )
        }
        RoleCommand::Ls => {
            let value = client.get_json::<Value>("/api/v1/roles").await?;
            print_rows(
                output,
                &value,
                "roles",
                &[
                    ("PRINCIPAL", "principal"),
                    ("PATTERN", "pattern"),
                    ("ROLE", "role"),
                ],
            )
        }
    }
}
