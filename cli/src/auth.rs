//! `arca login|logout|whoami`, `arca user|team|token|role …` and `arca audit …`.
//!
//! `arca login` exchanges a password (prompted on a terminal, or read with
//! `--password-stdin`) for a session token, or stores an access token given with `--token`;
//! credentials live in `<config dir>/arca/credentials.json` (mode 0600), one entry per server.
//! `ARCA_TOKEN` (or `--token` on any command) overrides the stored one.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{print_json, table, OutputFormat};

#[derive(Default, Serialize, Deserialize)]
struct Credentials {
    servers: BTreeMap<String, Stored>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    token: String,
    principal: String,
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ARCA_CONFIG_DIR") {
        return Ok(PathBuf::from(dir).join("credentials.json"));
    }
    let dir = dirs::config_dir().context("no configuration directory (set ARCA_CONFIG_DIR)")?;
    Ok(dir.join("arca").join("credentials.json"))
}

fn load() -> anyhow::Result<Credentials> {
    let path = credentials_path()?;
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn save(credentials: &Credentials) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = credentials_path()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn server_key(server: &str) -> String {
    server.trim_end_matches('/').to_string()
}

/// The token stored for `server` by `arca login`, if any.
pub fn stored_token(server: &str) -> Option<String> {
    load()
        .ok()?
        .servers
        .get(&server_key(server))
        .map(|s| s.token.clone())
}

/// Reads a secret from stdin (one line, trailing newline removed).
fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut text)?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

pub(crate) fn password(from_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    if from_stdin {
        return read_stdin();
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password: pass --password-stdin");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// The account to sign in as.
    #[arg(long, short = 'u', default_value = "admin")]
    user: String,
    /// Read the password from stdin instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// Store this access token instead of signing in with a password (`-` reads it from
    /// stdin).
    #[arg(long = "with-token")]
    with_token: Option<String>,
}

pub async fn login(server: &str, args: LoginArgs, output: OutputFormat) -> anyhow::Result<()> {
    let (token, principal) = match args.with_token {
        Some(token) => {
            let token = if token == "-" { read_stdin()? } else { token };
            let client = Client::new(server, Some(token.clone()))?;
            let me: Value = client.get_json("/api/v1/auth/whoami").await?;
            (
                token,
                me["principal"].as_str().unwrap_or_default().to_string(),
            )
        }
        None => {
            let password = password(
                args.password_stdin,
                &format!("Password for {}: ", args.user),
            )?;
            let client = Client::new(server, None)?;
            let response = client
                .http
                .post(client.url("/api/v1/auth/login"))
                .basic_auth(&args.user, Some(&password))
                .send()
                .await
                .with_context(|| format!("POST {}", client.url("/api/v1/auth/login")))?;
            let answer: Value = Client::check(response).await?.json().await?;
            (
                answer["token"].as_str().unwrap_or_default().to_string(),
                answer["principal"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let mut credentials = load()?;
    credentials.servers.insert(
        server_key(server),
        Stored {
            token,
            principal: principal.clone(),
        },
    );
    save(&credentials)?;
    match output {
        OutputFormat::Json => print_json(&json!({ "server": server, "principal": principal })),
        OutputFormat::Table => {
            println!("signed in to {server} as {principal}");
            Ok(())
        }
    }
}

pub fn logout(server: &str, output: OutputFormat) -> anyhow::Result<()> {
    let mut credentials = load()?;
    let removed = credentials.servers.remove(&server_key(server)).is_some();
    save(&credentials)?;
    match output {
        OutputFormat::Json => print_json(&json!({ "server": server, "signed_out": removed })),
        OutputFormat::Table => {
            if removed {
                println!("signed out of {server}");
            } else {
                println!("not signed in to {server}");
            }
            Ok(())
        }
    }
}

pub async fn whoami(client: &Client, output: OutputFormat) -> anyhow::Result<()> {
    let me: Value = client.get_json("/api/v1/auth/whoami").await?;
    match output {
        OutputFormat::Json => print_json(&me),
        OutputFormat::Table => {
            println!(
                "{} (via {}{})",
                me["principal"].as_str().unwrap_or("?"),
                me["method"].as_str().unwrap_or("?"),
                me["token_id"]
                    .as_str()
                    .map(|id| format!(", token {id}"))
                    .unwrap_or_default()
            );
            let rows = me["roles"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        r["role"].as_str().unwrap_or_default().to_string(),
                        r["pattern"].as_str().unwrap_or_default().to_string(),
                        r["via"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            println!("{}", table(&["ROLE", "PATTERN", "VIA"], rows));
            Ok(())
        }
    }
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.context("send the request")?;
    let response = Client::check(response).await?;
    Ok(response.json().await.unwrap_or(Value::Null))
}

pub(crate) fn print_rows(
    output: OutputFormat,
    value: &Value,
    key: &str,
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(value),
        OutputFormat::Table => {
            let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
            let rows = value[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| {
                    columns
                        .iter()
                        .map(|(_, field)| match &item[*field] {
                            Value::String(s) => s.clone(),
                            Value::Null => "-".to_string(),
                            Value::Array(items) => items
                                .iter()
                                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                .collect::<Vec<_>>()
                                .join(" "),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect();
            println!("{}", table(&header, rows));
            Ok(())
        }
    }
}

pub(crate) fn done(output: OutputFormat, value: &Value, line: String) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(value),
        OutputFormat::Table => {
            println!("{line}");
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an access token (shown once).
    Create {
        /// PATTERN:ROLE, e.g. 'builds/**:write' (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Expiry: `30d`, `12h`… (default: the server's, 30 days unless configured).
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Create it for another account (a service account, by a cluster admin).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List tokens (never their secrets).
    Ls {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a token everywhere (within the replication lag).
    Revoke { id: String },
    /// Sign registry and session tokens with a new key from now on (the previous key still
    /// verifies what it signed; the one before it is dropped).
    RotateSigningKey,
}

/// `30d`, `2w`, `720h` → days (rounded up).
fn parse_days(text: &str) -> anyhow::Result<u64> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("invalid expiry {text:?}"))?;
    Ok(match unit {
        "" | "d" => n,
        "w" => n * 7,
        "h" => n.div_ceil(24),
        "y" => n * 365,
        _ => {
            bail!("invalid expiry {text:?}: use a number of days (30d), weeks (2w), hours or years")
        }
    })
}

pub async fn token(
    client: &Client,
    command: TokenCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scopes,
            expires,
            description,
            owner,
        } => {
            let mut body = json!({ "scopes": scopes });
            if let Some(expires) = expires {
                body["expires_in_days"] = json!(parse_days(&expires)?);
            }
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            if let Some(owner) = owner {
                body["owner"] = json!(owner);
            }
            let value = send(client.http.post(client.url("/api/v1/tokens")).json(&body)).await?;
            match output {
                OutputFormat::Json => print_json(&value),
                OutputFormat::Table => {
                    eprintln!(
                        "created token {} for {} (expires {}); it is shown only now:",
                        value["id"].as_str().unwrap_or("?"),
                        value["owner"].as_str().unwrap_or("?"),
                        value["expires_at"].as_str().unwrap_or("?"),
                    );
                    println!("{}", value["token"].as_str().unwrap_or_default());
                    Ok(())
                }
            }
        }
        TokenCommand::Ls { owner } => {
            let path = match owner {
                Some(owner) => format!("/api/v1/tokens?owner={owner}"),
                None => "/api/v1/tokens".to_string(),
            };
            let value = client.get_json::<Value>(&path).await?;
            print_rows(
                output,
                &value,
                "tokens",
                &[
                    ("ID", "id"),
                    ("OWNER", "owner"),
                    ("SCOPES", "scopes"),
                    ("EXPIRES", "expires_at"),
                    ("LAST USED", "last_used"),
                    ("REVOKED", "revoked_at"),
                ],
            )
        }
        TokenCommand::RotateSigningKey => {
            let value = send(client.http.post(client.url("/api/v1/auth/signing-keys"))).await?;
            let line = format!("signing with key {}", value["kid"].as_str().unwrap_or("?"));
            done(output, &value, line)
        }
        TokenCommand::Revoke { id } => {
            let value = send(
                client
                    .http
                    .delete(client.url(&format!("/api/v1/tokens/{id}"))),
            )
            .await?;
            done(output, &value, format!("revoked token {id}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_parse_to_days() {
        assert_eq!(parse_days("30d").expect("days"), 30);
        assert_eq!(parse_days("2w").expect("weeks"), 14);
        assert_eq!(parse_days("25h").expect("hours"), 2);
        assert_eq!(parse_days("7").expect("bare"), 7);
        assert!(parse_days("soon").is_err());
    }
}
