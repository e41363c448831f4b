//! `arca ls` and `arca stat` on package repositories (PyPI, and every package format after
//! it): packages, their versions and files, from `/api/v1/repos/{repo}/packages`.

use anyhow::Context;
use serde_json::{json, Value};

use crate::client::{encode_path, Client};
use crate::output::{human_bytes, print_json, table, OutputFormat};

/// The format of a repository, when the caller may read it.
pub async fn format_of(client: &Client, repo: &str) -> anyhow::Result<String> {
    let info: Value = client
        .get_json(&format!("/api/v1/repos/{}", encode_path(repo)))
        .await?;
    Ok(info["format"].as_str().unwrap_or("generic").to_string())
}

/// Whether repositories of `format` are listed as packages (generic files and OCI images are
/// not).
pub fn holds_packages(format: &str) -> bool {
    !matches!(format, "generic" | "oci")
}

/// `arca ls REPO` (its packages) or `arca ls REPO/PACKAGE` (that package's files).
pub async fn ls(
    client: &Client,
    repo: &str,
    package: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let package = package.trim_end_matches('/');
    if !package.is_empty() {
        let detail = detail(client, repo, package).await?;
        return match output {
            OutputFormat::Json => print_json(&detail),
            OutputFormat::Table => {
                println!("{}", files_table(&detail));
                Ok(())
            }
        };
    }
    let mut packages: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = reqwest::Url::parse(
            &client.url(&format!("/api/v1/repos/{}/packages", encode_path(repo))),
        )?;
        if let Some(after) = &after {
            url.query_pairs_mut().append_pair("after", after);
        }
        let response = client.http.get(url).send().await.context("list packages")?;
        let page: Value = Client::check(response).await?.json().await?;
        if let Some(items) = page["packages"].as_array() {
            packages.extend(items.iter().cloned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    match output {
        OutputFormat::Json => print_json(&json!({ "repo": repo, "packages": packages })),
        OutputFormat::Table => {
            let rows = packages
                .iter()
                .map(|p| {
                    vec![
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["latest"].as_str().unwrap_or("-").to_string(),
                        p["versions"].to_string(),
                        p["updated_at"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["PACKAGE", "LATEST", "VERSIONS", "UPDATED"], rows)
            );
            Ok(())
        }
    }
}

/// `arca stat REPO/PACKAGE` (every version) or `arca stat REPO/PACKAGE/VERSION`.
pub async fn stat(
    client: &Client,
    repo: &str,
    path: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let path = path.trim_end_matches('/');
    let detail = match detail(client, repo, path).await {
        Ok(detail) => detail,
        Err(whole) => {
            // `PACKAGE/VERSION`: the last segment is a version.
            let Some((package, version)) = path.rsplit_once('/') else {
                return Err(whole);
            };
            let mut detail = detail(client, repo, package).await.map_err(|_| whole)?;
            let versions = detail["versions"].as_array().cloned().unwrap_or_default();
            let matching: Vec<Value> = versions
                .into_iter()
                .filter(|v| v["version"].as_str() == Some(version))
                .collect();
            if matching.is_empty() {
                anyhow::bail!("{repo}/{package} has no version {version}");
            }
            detail["versions"] = Value::Array(matching);
            detail
        }
    };
    match output {
        OutputFormat::Json => print_json(&detail),
        OutputFormat::Table => {
            println!("{}", files_table(&detail));
            Ok(())
        }
    }
}

async fn detail(client: &Client, repo: &str, package: &str) -> anyhow::Result<Value> {
    client
        .get_json(&format!(
            "/api/v1/repos/{}/packages/{}",
            encode_path(repo),
            encode_path(package)
        ))
        .await
}

/// One row per file: version, file, size, sha256 prefix, upload time, withdrawal.
fn files_table(detail: &Value) -> comfy_table::Table {
    let mut rows = Vec::new();
    for version in detail["versions"].as_array().into_iter().flatten() {
        for file in version["files"].as_array().into_iter().flatten() {
            rows.push(vec![
                version["version"].as_str().unwrap_or_default().to_string(),
                file["name"].as_str().unwrap_or_default().to_string(),
                human_bytes(file["size"].as_u64().unwrap_or_default()),
                file["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(16)
                    .collect(),
                file["uploaded_at"].as_str().unwrap_or_default().to_string(),
                version["withdrawn"].as_str().unwrap_or("").to_string(),
            ]);
        }
    }
    table(
        &["VERSION", "FILE", "SIZE", "SHA256", "UPLOADED", "NOTE"],
        rows,
    )
}
