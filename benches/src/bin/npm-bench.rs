//! Arca's npm registry against verdaccio, side by side in one run on this machine: the
//! abbreviated packument (what `npm install` reads) and the full one of a package with
//! `--versions` versions, and a tarball download, each at `--concurrency` clients; and the
//! publish of a 10 MiB tarball (npm's JSON document with the tarball in base64) to both.
//!
//! ```sh
//! cargo run --release -p arca-benches --bin npm-bench -- --versions 1000 --concurrency 64
//! ```
//!
//! verdaccio 6 (its default storage plugin on the local disk, no uplinks, anonymous publish)
//! comes from `scripts/setup.sh`, under `~/.cache/arca-tools/verdaccio` (`--verdaccio`
//! overrides).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use arca_benches::compare::{scratch, wait_ready, Server};
use arca_benches::load;
use arca_benches::packages::{measure, median_ms, results_table, tools_dir, Case};
use arca_chaos::npm::publish_document;
use clap::Parser;

#[derive(Parser)]
#[command(name = "npm-bench", about = "Arca's npm registry against verdaccio")]
struct Args {
    /// The `arca` binary.
    #[arg(long, default_value = "target/release/arca")]
    arca: PathBuf,
    /// verdaccio's executable.
    #[arg(long)]
    verdaccio: Option<PathBuf>,
    /// Versions of the benchmarked package.
    #[arg(long, default_value_t = 1000)]
    versions: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per measured case.
    #[arg(long, default_value_t = 3000)]
    requests: u64,
    /// 10 MiB publishes per server.
    #[arg(long, default_value_t = 5)]
    publishes: u64,
    /// Scratch directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A gzipped npm tarball of `name@version` around `payload`.
fn tarball(name: &str, version: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let manifest = serde_json::json!({"name": name, "version": version}).to_string();
    for (path, data) in [
        ("package/package.json", manifest.as_bytes()),
        ("package/data.bin", payload),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

struct Peer {
    name: &'static str,
    /// The registry's root (`…/npm/REPO` for Arca).
    registry: String,
    http: reqwest::Client,
}

async fn publish(peer: &Peer, name: &str, version: &str, payload: &[u8]) -> anyhow::Result<()> {
    let data = tarball(name, version, payload)?;
    let response = peer
        .http
        .put(format!("{}/{name}", peer.registry))
        .json(&publish_document(name, version, &data))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{} publish of {name}@{version}: {} {}",
        peer.name,
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Starts verdaccio on a free loopback port with its storage under `dir`.
fn start_verdaccio(
    binary: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<(std::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let storage = dir.join("verdaccio-storage");
    std::fs::create_dir_all(&storage)?;
    let config = dir.join("verdaccio.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {}\nauth:\n  htpasswd:\n    file: {}\nuplinks: {{}}\npackages:\n  '**':\n    \
             access: $all\n    publish: $all\n    unpublish: $all\nmax_body_size: 64mb\n\
             web:\n  enable: false\nlog: {{ type: stdout, format: pretty, level: error }}\n",
            storage.display(),
            dir.join("htpasswd").display()
        ),
    )?;
    let child = std::process::Command::new(binary)
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("start {} (scripts/setup.sh installs it)", binary.display()))?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (dir, _guard) = scratch(args.dir.clone())?;
    let arca = Server::arca(&args.arca, &dir).await?;
    let arca_http = load::client_with_token(args.concurrency, arca.token.as_deref());
    load::create_arca_repo(&arca_http, &arca.url, "js", "npm").await?;

    let verdaccio = args
        .verdaccio
        .clone()
        .unwrap_or_else(|| tools_dir().join("verdaccio/node_modules/.bin/verdaccio"));
    let (mut child, peer_url) = start_verdaccio(&verdaccio, &dir)?;
    let plain = load::client(args.concurrency);
    wait_ready(&plain, &format!("{peer_url}/-/ping")).await?;

    let name = "bench-pkg";
    let peers = [
        Peer {
            name: "arca",
            registry: format!("{}/npm/js", arca.url),
            http: arca_http.clone(),
        },
        Peer {
            name: "verdaccio",
            registry: peer_url.clone(),
            http: plain.clone(),
        },
    ];
    // A compressible 16 KiB payload: the tarball is a few hundred bytes after gzip.
    let payload = vec![7u8; 16 * 1024];
    for peer in &peers {
        let started = Instant::now();
        for v in 0..args.versions {
            publish(peer, name, &format!("1.0.{v}"), &payload).await?;
        }
        eprintln!(
            "{}: {} versions published in {:.1} s",
            peer.name,
            args.versions,
            started.elapsed().as_secs_f64()
        );
    }

    let corgi = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
    let mut rows = Vec::new();
    for (case, path, accept) in [
        ("packument (abbreviated)", name.to_string(), corgi),
        ("packument (full)", name.to_string(), "application/json"),
        (
            "tarball download",
            format!("{name}/-/{name}-1.0.0.tgz"),
            "*/*",
        ),
    ] {
        let mut measured = Vec::new();
        for peer in &peers {
            let url = format!("{}/{path}", peer.registry);
            measured
                .push(measure(&peer.http, &url, accept, args.concurrency, args.requests).await?);
        }
        rows.push(Case {
            name: case.to_string(),
            measured,
        });
    }

    let big = arca_benches::random_bytes(10 << 20, 3);
    let mut publishes = Vec::new();
    for peer in &peers {
        let mut times = Vec::new();
        for i in 0..args.publishes {
            let mut payload = big.clone();
            payload[0] = i as u8;
            let started = Instant::now();
            publish(peer, "bench-big", &format!("2.0.{i}"), &payload).await?;
            times.push(started.elapsed());
        }
        publishes.push(median_ms(&mut times));
    }
    let _ = child.kill();
    let _ = child.wait();

    let table = results_table("verdaccio", &rows, publishes);
    println!(
        "{} versions, {} clients, {} requests per case\n{table}",
        args.versions, args.concurrency, args.requests
    );
    Ok(())
}
