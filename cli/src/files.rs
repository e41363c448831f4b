//! `arca push`, `pull`, `ls`, `stat`, `rm`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::client::{encode_path, split_target, Client};
use crate::output::{byte_progress, human_bytes, print_json, table, OutputFormat};

const READ_BUFFER: usize = 256 * 1024;

/// sha256 of a file, computed off the async runtime.
async fn hash_file(path: &Path, size: u64) -> anyhow::Result<String> {
    let path = path.to_path_buf();
    let bar = byte_progress(size, "hashing");
    let digest = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::Read;
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        Ok(hex::encode(hasher.finalize()))
    })
    .await??;
    Ok(digest)
}

pub async fn push(
    client: &Client,
    file: &Path,
    target: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let (repo, path) = split_target(target, false)?;
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("read {}", file.display()))?
        .len();
    let sha256 = hash_file(file, size).await?;
    // A mirror region answers writes with a redirect to its primary: follow it (the body is a
    // stream, so it is sent again from the file).
    let mut url = client.file_url(&repo, &path);
    let mut redirects = 0;
    let response = loop {
        let reader = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("open {}", file.display()))?;
        let bar = byte_progress(size, "uploading");
        let progress = bar.clone();
        let stream = ReaderStream::with_capacity(reader, READ_BUFFER)
            .inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
        let response = client
            .http
            .put(&url)
            .header("X-Checksum-Sha256", &sha256)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("upload to {url}"))?;
        bar.finish_and_clear();
        let redirect = matches!(response.status().as_u16(), 307 | 308);
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        match location {
            Some(location) if redirect && redirects < 3 => {
                eprintln!("redirected to {location}");
                url = location;
                redirects += 1;
            }
            _ => break response,
        }
    };
    let result: Value = Client::check(response).await?.json().await?;
    match output {
        OutputFormat::Json => print_json(&result),
        OutputFormat::Table => {
            println!(
                "pushed {repo}/{path}: {} sha256:{} ({} chunks, {} new)",
                human_bytes(result["size"].as_u64().unwrap_or_default()),
                result["sha256"].as_str().unwrap_or_default(),
                result["chunks"].as_u64().unwrap_or_default(),
                result["new_chunks"].as_u64().unwrap_or_default(),
            );
            Ok(())
        }
    }
}

pub async fn pull(
    client: &Client,
    target: &str,
    out: Option<PathBuf>,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let (repo, path) = split_target(target, false)?;
    let out = match out {
        Some(out) => out,
        None => PathBuf::from(path.rsplit('/').next().unwrap_or(&path)),
    };
    let response = client
        .http
        .get(client.file_url(&repo, &path))
        .send()
        .await
        .with_context(|| format!("download {}", client.file_url(&repo, &path)))?;
    let response = Client::check(response).await?;
    let expected = response
        .headers()
        .get("x-checksum-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the server sent no X-Checksum-Sha256 header"))?;
    let total = response.content_length().unwrap_or_default();
    let file_name = out
        .file_name()
        .ok_or_else(|| anyhow!("invalid output path {}", out.display()))?
        .to_string_lossy()
        .to_string();
    let partial = out.with_file_name(format!(".{file_name}.arca-partial"));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("create {}", partial.display()))?;
    let bar = byte_progress(total, "downloading");
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut stream = response.bytes_stream();
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = stream.try_next().await.context("download interrupted")? {
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .with_context(|| format!("write {}", partial.display()))?;
            received += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!("sha256 mismatch for {repo}/{path}: expected {expected}, received {actual}; nothing was written");
    }
    tokio::fs::rename(&partial, &out)
        .await
        .with_context(|| format!("move download into place at {}", out.display()))?;
    match output {
        OutputFormat::Json => print_json(&json!({
            "repo": repo, "path": path, "file": out, "size": received, "sha256": actual, "verified": true
        })),
        OutputFormat::Table => {
            println!(
                "pulled {repo}/{path} -> {} ({}, sha256 verified)",
                out.display(),
                human_bytes(received)
            );
            Ok(())
        }
    }
}

pub async fn ls(client: &Client, target: &str, output: OutputFormat) -> anyhow::Result<()> {
    let (repo, prefix) = split_target(target, true)?;
    if crate::packages::holds_packages(&crate::packages::format_of(client, &repo).await?) {
        return crate::packages::ls(client, &repo, &prefix, output).await;
    }
    let mut files: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = reqwest::Url::parse(&client.url(&format!("/api/v1/repos/{repo}/files")))?;
        url.query_pairs_mut().append_pair("prefix", &prefix);
        if let Some(after) = &after {
            url.query_pairs_mut().append_pair("after", after);
        }
        let response = client.http.get(url).send().await.context("list files")?;
        let page: Value = Client::check(response).await?.json().await?;
        if let Some(items) = page["files"].as_array() {
            files.extend(items.iter().cloned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    match output {
        OutputFormat::Json => {
            print_json(&json!({ "repo": repo, "prefix": prefix, "files": files }))
        }
        OutputFormat::Table => {
            let rows = files
                .iter()
                .map(|f| {
                    vec![
                        f["path"].as_str().unwrap_or_default().to_string(),
                        human_bytes(f["size"].as_u64().unwrap_or_default()),
                        f["sha256"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(16)
                            .collect(),
                        f["updated_at"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            println!("{}", table(&["PATH", "SIZE", "SHA256", "UPDATED"], rows));
            Ok(())
        }
    }
}

pub async fn stat(client: &Client, target: &str, output: OutputFormat) -> anyhow::Result<()> {
    let (repo, path) = split_target(target, false)?;
    if crate::packages::holds_packages(&crate::packages::format_of(client, &repo).await?) {
        return crate::packages::stat(client, &repo, &path, output).await;
    }
    let info: Value = client
        .get_json(&format!(
            "/api/v1/repos/{repo}/files/{}",
            encode_path(&path)
        ))
        .await?;
    match output {
        OutputFormat::Json => print_json(&info),
        OutputFormat::Table => {
            let rows = [
                "path",
                "size",
                "sha256",
                "blake3",
                "created_at",
                "updated_at",
            ]
            .iter()
            .map(|key| {
                let value = match &info[*key] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                vec![key.to_string(), value]
            })
            .collect();
            println!("{}", table(&["FIELD", "VALUE"], rows));
            Ok(())
        }
    }
}

pub async fn rm(client: &Client, target: &str, output: OutputFormat) -> anyhow::Result<()> {
    let (repo, path) = split_target(target, false)?;
    let response = client
        .http
        .delete(client.file_url(&repo, &path))
        .send()
        .await
        .context("delete")?;
    Client::check(response).await?;
    match output {
        OutputFormat::Json => print_json(&json!({ "repo": repo, "path": path, "deleted": true })),
        OutputFormat::Table => {
            println!("deleted {repo}/{path}");
            Ok(())
        }
    }
}
